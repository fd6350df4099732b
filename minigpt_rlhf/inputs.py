"""Every input of a stage, read and checked once, before the stage does any work or writes anything.

A bad file found after pretraining or PPO has run costs the run, and a checkpoint written before the error
has already replaced a good one. So each script's main starts with read_<stage>_inputs(config): the data
files it will read (also those read only at the end, for evaluation or normalisation), the tokenizer, the
checkpoints and the resume state it will load, the sizes that must fit the model's context, and the output
folder. Each problem is a data.DataError (or FileNotFoundError) naming the file and line, or the key or
option, and saying how to fix it. What was read is returned, parsed and tokenised, and is what the run uses:
there is no second reader that could disagree with the check.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import check_checkpoint, load_checkpoint
from .common import print0
from .comparisons import (
    CollectSettings,
    check_comparisons_fit,
    read_comparisons,
    read_saved_comparisons,
    split_rows,
)
from .data import (
    DataError,
    SFTData,
    TokenStream,
    data_file,
    encode_prompt,
    encode_prompts,
    few_shot_demos,
    parse_json,
    read_prompts,
    read_sft,
    read_text,
    spread_subset,
)
from .iterated import RECORD_VERSION, RoundInputs
from .judge import Scorer, is_world_prompt, load_scorer, resolve_judge, world_scorer
from .resume import read_resume_state, resume_path, warn_config_changes
from .reward import encode_responses, normalization_demos
from .tokenizer import Tokenizer, get_tokenizer

RESUME_HINT = "Run without --resume=True to start over."


def world_size() -> int:
    """The number of processes of this run, as common.compute_init will find it (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def check_output_dir(out_dir: str, stages: list[str]):
    """The output root and its stage folders must be folders this process can write (or not exist yet)."""
    for sub in ["", *stages]:
        path = Path(out_dir, sub)
        if path.exists() and not path.is_dir():
            raise DataError(f"--out_dir={out_dir}: {path} is a file, not a folder. Move it or pass another --out_dir")
    existing = Path(os.path.abspath(out_dir))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--out_dir={out_dir}: {existing} is not a folder this user can write. Pass another --out_dir")


def check_positive(config, names: tuple[str, ...]):
    """Sizes and counts that must be at least 1 (0 or less would fail deep inside torch, or loop on nothing)."""
    for name in names:
        value = getattr(config, name)
        if type(value) is not int or value < 1:
            raise DataError(f"--{name}={value!r}: must be a positive integer")


def parse_iterations(text: str, option: str, last: int) -> set[int]:
    """A comma-separated list of iteration counts, each in 1..last ("" is none)."""
    out = set()
    for part in filter(None, (x.strip() for x in text.split(","))):
        if not part.isdigit() or not 1 <= int(part) <= last:
            raise DataError(f"--{option}={text}: {part!r} is not an iteration count in 1..{last} (--iterations); "
                            f"pass e.g. --{option}=20,40")
        out.add(int(part))
    return out


def check_estimator(config):
    """--estimator and --group_size: a critic-free estimator needs groups of at least 2 samples per prompt that
    split each rank's rollout batch evenly."""
    from .ppo import ESTIMATORS
    if config.estimator not in ESTIMATORS:
        raise DataError(f"--estimator={config.estimator!r}: expected one of {', '.join(ESTIMATORS)}")
    if config.estimator == "gae":
        return
    local = config.rollout_batch_size // world_size()
    if type(config.group_size) is not int or config.group_size < 2 or local % config.group_size:
        raise DataError(f"--group_size={config.group_size!r}: --estimator={config.estimator} needs at least 2 "
                        f"samples per prompt, and a divisor of the {local} rollouts each process samples "
                        "(--rollout_batch_size over the processes), e.g. --group_size=4")


def parse_temperatures(text: str, option: str) -> list[float]:
    """A comma-separated list of sampling temperatures, each > 0 ("" is none)."""
    temperatures = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        try:
            t = float(part)
        except ValueError:
            t = float("nan")
        if not t > 0 or t == float("inf"):
            raise DataError(f"--{option}={text}: {part!r} is not a temperature (a number > 0); pass e.g. "
                            f"--{option}=0.1,0.3,0.5,0.7, or --{option}= for none")
        temperatures.append(t)
    return temperatures


def same_shape(a, b) -> bool:
    """Two GPTConfigs describe the same trunk (the head and the dropout rate aside)."""
    return dataclasses.replace(a, head="lm", dropout=0.0) == dataclasses.replace(b, head="lm", dropout=0.0)


def check_prompts_fit(tok, rows: list[dict], max_new_tokens: int, block_size: int, max_len: int | None = None):
    """Each prompt (of at most max_len tokens, if given: longer ones are skipped) plus max_new_tokens sampled
    tokens must fit the model's context."""
    for row in rows:
        n = len(encode_prompt(tok, row["prompt"]))
        if (max_len is None or n <= max_len) and n + max_new_tokens > block_size:
            raise DataError(f"{row['_where']}: the prompt has {n} tokens (with the template); with "
                            f"--max_new_tokens={max_new_tokens} it exceeds the context (block_size={block_size}). "
                            "Shorten the prompt or lower --max_new_tokens")


def gpt2_block_size(folder: str) -> int:
    """The context of a Hugging Face GPT-2 folder (model.from_pretrained checks the rest when it loads)."""
    path = os.path.join(folder, "config.json")
    hf = parse_json(read_text(path, "GPT-2 config.json"), path)
    n = hf.get("n_positions", hf.get("n_ctx", 1024)) if isinstance(hf, dict) else None
    if type(n) is not int or n <= 0:
        raise DataError(f"{path}: n_positions should be a positive integer, got {n!r}: not a GPT-2 config.json")
    return n


def read_resume(config, stage: str) -> dict:
    """The stage's resume state, checked key by key, with a warning naming the settings of `config` that differ
    from the stopped run's; a clear error if there is none."""
    hint = (f"There is nothing to resume: {stage} either finished (its result is "
            f"{os.path.join(config.out_dir, stage)}/model.pt) or never saved a resume state. {RESUME_HINT}")
    state = read_resume_state(resume_path(config.out_dir, stage), stage, world_size(), hint)
    warn_config_changes(state, config, print0)
    return state


@dataclass
class SFTInputs:
    """What train_sft.py reads. corpus: to pretrain on or mix into SFT (None if neither); corpus_val: the
    held-out corpus (None if there is none); train / val: the demonstrations, tokenised for the model's
    context; val_rows: the held-out demonstrations as read (the report judges them); eval_rows: the held-out
    prompts sampled at the end; init_ckpt: the --init_from checkpoint (None to pretrain, or from GPT-2 weights);
    state: the resume state (None unless --resume=True)."""
    tok: Tokenizer
    corpus: TokenStream | None
    corpus_val: TokenStream | None
    train: SFTData
    val: SFTData
    val_rows: list[dict]
    eval_rows: list[dict]
    judge: Scorer | None
    init_ckpt: dict | None
    state: dict | None


def read_sft_inputs(config) -> SFTInputs:
    """train_sft.py: tokenizer, both corpora, sft_train/sft_val/eval_prompts, --init_from or the resume state."""
    check_positive(config, ("n_layer", "n_head", "n_embd", "block_size", "pretrain_batch_size", "batch_size",
                            "grad_accum", "eval_interval", "max_new_tokens", "corpus_mix_batch"))
    tok = get_tokenizer(config.tokenizer)
    needs_corpus = "pretraining (no --init_from)" if not config.init_from else (
        f"--corpus_mix={config.corpus_mix}, which --corpus_mix=0 turns off," if config.corpus_mix > 0 else "")
    corpus_path = data_file(config, "corpus", "corpus_train.txt", needs_corpus)
    corpus = TokenStream(tok, corpus_path) if needs_corpus else None
    corpus_val_path = data_file(config, "corpus_val", "corpus_val.txt")  # optional: the corpus loss, if there
    corpus_val = TokenStream(tok, corpus_val_path) if corpus_val_path else None
    train_rows = read_sft(data_file(config, "sft_train", "sft_train.jsonl", "SFT"))
    val_rows = read_sft(data_file(config, "sft_val", "sft_val.jsonl", "SFT's validation loss"))
    eval_rows = read_prompts(data_file(config, "eval_prompts", "eval_prompts.jsonl", "the held-out evaluation"))
    state = init_ckpt = None
    if config.resume:
        state = read_resume(config, "sft")
        block_size = check_checkpoint(state, tok, state["_where"], head="lm").block_size
    elif config.init_from.startswith("gpt2:"):
        block_size = gpt2_block_size(config.init_from[len("gpt2:"):])
    elif config.init_from:
        init_ckpt = load_checkpoint(config.init_from, "base checkpoint", "Omit --init_from to pretrain one.")
        block_size = check_checkpoint(init_ckpt, tok, config.init_from, head="lm").block_size
    else:
        if config.n_embd % config.n_head:
            raise DataError(f"--n_embd={config.n_embd} must be a multiple of --n_head={config.n_head}")
        block_size = config.block_size
    if corpus is not None and (not config.init_from and (state is None or state["phase"] == "pretrain")
                               or config.corpus_mix > 0):
        corpus.require_windows(block_size)
    if corpus_val is not None:
        corpus_val.require_windows(block_size)  # the corpus loss reported at the end
    train = SFTData(tok, train_rows, block_size)
    val = SFTData(tok, val_rows, block_size)
    order = state["order"] if state is not None and state["phase"] == "sft" else None
    if order is not None and len(order) and (int(order.min()) < 0 or int(order.max()) >= len(train)):
        raise DataError(f"{state['_where']}: key 'order' does not index the {len(train)} demonstrations of "
                        f"sft_train.jsonl that fit: the data changed since the run stopped. {RESUME_HINT}")
    check_prompts_fit(tok, eval_rows, config.max_new_tokens, block_size)
    check_output_dir(config.out_dir, ["base", "sft"])
    eval_rows = spread_subset(eval_rows, config.max_eval_prompts)
    judge = resolve_judge(config.judge, [r["prompt"] for r in eval_rows + val_rows])
    return SFTInputs(tok, corpus, corpus_val, train, val, val_rows, eval_rows, judge, init_ckpt, state)


@dataclass
class RMInputs:
    """What train_rm.py reads. comparisons: the comparisons to train on (None: they are collected from
    rm_prompts); val_comparisons: a fixed held-out set (None: a share of the comparisons is held out);
    temperature: the labelers' calibrated temperature of comparisons collected earlier (None if unknown);
    rm_prompts: the prompts to collect for (None unless collecting); demos: the demonstrations that set the
    reward's mean 0; state: the resume state (None unless --resume=True)."""
    tok: Tokenizer
    sft_path: str
    sft_ckpt: dict
    comparisons: list[dict] | None
    val_comparisons: list[dict] | None
    temperature: float | None
    rm_prompts: list[dict] | None
    demos: list[dict]
    state: dict | None


def read_rm_inputs(config) -> RMInputs:
    """train_rm.py: tokenizer, SFT checkpoint, comparisons (or the prompts to collect them for), held-out
    comparisons, the labeler file, sft_train.jsonl (read at the end to normalise) and the resume state."""
    check_positive(config, ("k_min", "k_max", "max_new_tokens", "epochs", "prompts_per_batch", "n_norm_demos"))
    if config.k_min < 2 or config.k_max < config.k_min:
        raise DataError(f"--k_min={config.k_min} --k_max={config.k_max}: a comparison ranks at least 2 responses, "
                        "so 2 <= k_min <= k_max")
    if config.resume and config.relabel:
        raise DataError("--resume=True continues training on the saved comparisons; it cannot --relabel=True")
    tok = get_tokenizer(config.tokenizer)
    sft_path = config.sft_checkpoint or os.path.join(config.out_dir, "sft", "model.pt")
    sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py` first.")
    sft_config = check_checkpoint(sft_ckpt, tok, sft_path, head="lm")
    block_size = sft_config.block_size
    comparisons, val_comparisons, temperature = read_saved_comparisons(config)
    if val_comparisons is not None:
        check_comparisons_fit(tok, val_comparisons, block_size)
    rows = None
    if comparisons is not None:
        check_comparisons_fit(tok, comparisons, block_size)
    else:
        rows = read_prompts(data_file(config, "rm_prompts", "rm_prompts.jsonl", "collecting comparisons"))
        check_prompts_fit(tok, rows, config.max_new_tokens, block_size)
    # the normalisation after training scores a random sample of n_norm_demos demonstrations: those
    demos = read_sft(data_file(config, "sft_train", "sft_train.jsonl", "the reward's normalisation"))
    for demo in normalization_demos(demos, config.n_norm_demos, config.seed):
        n = len(encode_responses(tok, demo["prompt"], [demo["response"]])[0])
        if n > block_size:
            raise DataError(f"{demo['_where']}: this demonstration has {n} tokens with its prompt and EOS, more than "
                            f"the context (block_size={block_size}); the reward model's normalisation scores a "
                            f"sample of --n_norm_demos={config.n_norm_demos}. Shorten it or lower --n_norm_demos")
    state = None
    if config.resume:
        state = read_resume(config, "rm")
        if not same_shape(check_checkpoint(state, tok, state["_where"], head="scalar"), sft_config):
            raise DataError(f"{state['_where']}: its model does not have the shape of a reward model made from "
                            f"{sft_path}: it belongs to another run. {RESUME_HINT}")
    check_output_dir(config.out_dir, ["rm"])
    return RMInputs(tok, sft_path, sft_ckpt, comparisons, val_comparisons, temperature, rows, demos, state)


ROUNDS_HINT = "Run train_rm.py again (its checkpoint records what later rounds need), or pass --rounds=1"


def rounds_record(rm_ckpt: dict, rm_path: str) -> dict:
    """The RM checkpoint's record of how it was trained (iterated.round_record), checked key by key."""
    record = rm_ckpt.get("rounds")
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise DataError(f"{rm_path}: key 'rounds' {'missing' if record is None else 'of another version'}: it "
                        "says where the RM's comparisons are and how they were collected, which later RLHF rounds "
                        f"(--rounds > 1) need. {ROUNDS_HINT}")
    kinds = {"comparisons": str, "n_comparisons": int, "held_out_rows": (list, type(None)), "val_comparisons": str,
             "labeler": str, "labeler_temperature": (float, int, type(None)), "normalization_demos": list,
             "normalize_gain": bool, "collect": dict, "optimizer": dict}
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind):
            raise DataError(f"{rm_path}: key 'rounds.{key}' missing or of the wrong type. {ROUNDS_HINT}")
    return record


def round_labeler(config, record: dict | None) -> Scorer | None:
    """The labeler that ranks the policy's samples in later rounds: --labeler, else (auto) the one that ranked the
    RM's comparisons, else the world's gold labeler if all their prompts are world prompts; None if there is
    none (then the run does one round, and says so). record None: the RM is still to be made by train_rm.py,
    which collects its comparisons with its own --labeler=auto, the world's gold labeler."""
    if config.labeler == "none":
        return None
    if config.labeler != "auto":
        labeler = load_scorer(config.labeler, "labeler")
        print0(f"labeler: {config.labeler} ranks the policy's samples in rounds 2..{config.rounds}")
        return labeler
    spec = "auto" if record is None else record["labeler"]
    if not spec and all(is_world_prompt(c["prompt"]) for c in read_comparisons(record["comparisons"])):
        spec = "auto"  # the world's comparisons, brought as a file
    if not spec:
        return None
    labeler = world_scorer() if spec == "auto" else load_scorer(spec, "labeler")
    name = "the world's gold labeler" if spec == "auto" else spec
    print0(f"labeler: {name} (the RM's) ranks the policy's samples in rounds 2..{config.rounds}")
    return labeler


def one_round_note(config, record: dict) -> str:
    """What a run with --rounds > 1 and no labeler says before any work."""
    why = ("--labeler=none" if config.labeler == "none" else
           f"the RM's comparisons came from {record['comparisons']}, and their prompts are not world prompts")
    return (f"--rounds={config.rounds}: later rounds rank the policy's own samples, and there is no labeler to rank "
            f"them ({why}). This run does one round: {config.iterations} iterations against the RM as trained. "
            f"Pass --labeler=module:function (e.g. --labeler=my_judge.py:score) for {config.rounds} rounds, or "
            "--rounds=1 to ask for one")


def read_round_inputs(config, rm_ckpt: dict, rm_path: str, labeler: Scorer, tok) -> RoundInputs:
    """The later rounds' inputs, from the RM checkpoint's record: its comparisons (the file it trained on, which
    must still have the rows it had) split into training and held-out rows as the RM split them, the labeler
    temperature (kept only for the labeler that ranked them), the normalisation's demonstrations and settings."""
    record = rounds_record(rm_ckpt, rm_path)
    for key in ("comparisons", "val_comparisons"):
        if record[key] and not os.path.exists(record[key]):
            raise DataError(f"{record[key]}: not found; the RM {rm_path} was trained on it, and --rounds="
                            f"{config.rounds} goes on training the RM on those comparisons. Put it back, run "
                            "train_rm.py again, or pass --rounds=1")
    comparisons = read_comparisons(record["comparisons"])
    if len(comparisons) != record["n_comparisons"]:
        raise DataError(f"{record['comparisons']}: {len(comparisons)} comparisons, but the RM {rm_path} was trained "
                        f"on {record['n_comparisons']} read from it: the file changed since. {ROUNDS_HINT}")
    held = record["held_out_rows"]
    if held is None:
        train, val = comparisons, read_comparisons(record["val_comparisons"])
    else:
        if any(type(i) is not int or not 0 <= i < len(comparisons) for i in held):
            raise DataError(f"{rm_path}: key 'rounds.held_out_rows' does not index the {len(comparisons)} rows of "
                            f"{record['comparisons']}. {ROUNDS_HINT}")
        train, val = split_rows(comparisons, held)
    block_size = check_checkpoint(rm_ckpt, tok, rm_path, "scalar").block_size
    for part in (train, val):
        check_comparisons_fit(tok, part, block_size)
    same_labeler = bool(record["labeler"]) and config.labeler in ("auto", record["labeler"])
    try:
        collect = CollectSettings(**record["collect"])
        opt = record["optimizer"]
        weight_decay, prompts_per_batch, grad_clip = opt["weight_decay"], opt["prompts_per_batch"], opt["grad_clip"]
    except (TypeError, KeyError) as e:
        raise DataError(f"{rm_path}: key 'rounds.collect' or 'rounds.optimizer' does not hold the settings of this "
                        f"version ({e}). {ROUNDS_HINT}") from None
    return RoundInputs(train, val, labeler, record["labeler_temperature"] if same_labeler else None,
                       record["normalization_demos"], record["normalize_gain"], collect, weight_decay,
                       prompts_per_batch, grad_clip)


@dataclass
class PPOInputs:
    """What train_ppo.py reads. prompts: the PPO prompts, encoded ({"prompt", "ids"}; longer ones skipped);
    eval_rows: the held-out prompts of the final comparison; control_rows: the PPO prompts on which the
    sharpening control's temperature is chosen, among control_temperatures (none of them held out); corpus:
    PPO-ptx's corpus (None if ptx_coef is 0); corpus_val: the held-out corpus (None if there is none);
    demos: the SFT demonstrations, sft_train.jsonl (None without the file); base_demos: those of the base
    model's few-shot prompt (None with --few_shot=0 or without demonstrations); sft_ckpt / rm_ckpt: the
    checkpoints, if they exist (None: their stage is run first); state: PPO's resume state (None unless there
    is one to resume); snapshots: the iterations after which the policy is also saved; rounds: the RLHF rounds
    this run does (--rounds, or 1 if there is no labeler for later rounds); round_labeler: the labeler of the
    later rounds; round_inputs: what they read (None until the RM exists: train_ppo.py then reads it after
    train_rm.py has run)."""
    tok: Tokenizer
    prompts: list[dict]
    eval_rows: list[dict]
    control_rows: list[dict]
    control_temperatures: list[float]
    corpus: TokenStream | None
    corpus_val: TokenStream | None
    judge: Scorer | None
    demos: list[dict] | None
    base_demos: list[dict] | None
    sft_ckpt: dict | None
    rm_ckpt: dict | None
    state: dict | None
    snapshots: set[int] = dataclasses.field(default_factory=set)
    rounds: int = 1
    round_labeler: Scorer | None = None
    round_inputs: RoundInputs | None = None


def read_ppo_inputs(config) -> PPOInputs:
    """train_ppo.py: tokenizer, PPO and evaluation prompts, both corpora, the SFT and RM checkpoints that
    exist (a missing one is made by its own script, which reads and checks its own inputs), and the resume
    state."""
    check_positive(config, ("rollout_batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "max_prompt_len",
                            "ptx_batch_size", "control_prompts"))
    control_temperatures = parse_temperatures(config.control_temperatures, "control_temperatures")
    check_estimator(config)
    snapshots = parse_iterations(config.snapshots, "snapshots", config.iterations)
    tok = get_tokenizer(config.tokenizer)
    ppo_path = data_file(config, "ppo_prompts", "ppo_prompts.jsonl", "PPO's rollouts")
    ppo_rows = read_prompts(ppo_path)
    prompts, skipped = encode_prompts(tok, ppo_rows, config.max_prompt_len, ppo_path)
    if skipped:
        print0(f"skipped {skipped} PPO prompts longer than max_prompt_len={config.max_prompt_len} tokens")
    eval_path = data_file(config, "eval_prompts", "eval_prompts.jsonl", "the final evaluation")
    eval_rows, _ = encode_prompts(tok, read_prompts(eval_path), config.max_prompt_len, eval_path)
    corpus_path = data_file(config, "corpus", "corpus_train.txt", "--ptx_coef > 0" if config.ptx_coef > 0 else "")
    corpus = TokenStream(tok, corpus_path) if config.ptx_coef > 0 else None
    corpus_val_path = data_file(config, "corpus_val", "corpus_val.txt")
    corpus_val = TokenStream(tok, corpus_val_path) if corpus_val_path else None
    # the demonstrations: the report judges them (what SFT imitates) and prompts the base model with a few. They
    # are needed if the base model exists now; it may also be pretrained by the SFT stage this run starts, so
    # they are read whenever their file is there
    needed = config.few_shot and os.path.exists(os.path.join(config.out_dir, "base", "model.pt"))
    demos_path = data_file(config, "sft_train", "sft_train.jsonl",
                           "the base model's few-shot prompt (--few_shot=0 turns it off)" if needed else "")
    demos = read_sft(demos_path) if demos_path else None
    base_demos = few_shot_demos(demos, config.few_shot, config.seed) if config.few_shot and demos else None
    sft_path = os.path.join(config.out_dir, "sft", "model.pt")
    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    sft_ckpt = rm_ckpt = sft_config = rm_config = None
    if os.path.exists(sft_path):
        sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint")
        sft_config = check_checkpoint(sft_ckpt, tok, sft_path, "lm")
        check_prompts_fit(tok, prompts + eval_rows, config.max_new_tokens, sft_config.block_size)
        if corpus_val is not None:
            corpus_val.require_windows(sft_config.block_size)  # the pretraining loss reported at the end
        if corpus is not None:
            corpus.require_windows(sft_config.block_size)
    if os.path.exists(rm_path):
        rm_ckpt = load_checkpoint(rm_path, "reward model checkpoint")
        rm_config = check_checkpoint(rm_ckpt, tok, rm_path, "scalar")
    path = resume_path(config.out_dir, "ppo")
    state = None
    if config.resume and os.path.exists(path):
        state = read_resume(config, "ppo")
        policy_config = check_checkpoint(state, tok, path, head="lm")
        if sft_config is not None and not same_shape(policy_config, sft_config):
            raise DataError(f"{path}: its policy does not have the shape of {sft_path}: it belongs to another run. "
                            f"{RESUME_HINT}")
        has_value = "value_model" in state
        if (config.estimator == "gae") != has_value:
            raise DataError(f"{path}: it holds {'a' if has_value else 'no'} value model, and --estimator="
                            f"{config.estimator} {'trains none' if has_value else 'needs one'}: it belongs to "
                            f"another run. {RESUME_HINT}")
        if rm_config is not None and "value_model" in state:
            check_checkpoint({"model": state["value_model"], "model_config": rm_ckpt["model_config"]},
                             where=f"{path} (key 'value_model')")
    rounds, labeler, round_inputs = config.rounds, None, None
    if config.rounds > 1:
        record = rounds_record(rm_ckpt, rm_path) if rm_ckpt is not None else None
        labeler = round_labeler(config, record)
        if labeler is None:
            print0(one_round_note(config, record))
            rounds = 1
        elif rm_ckpt is not None:
            round_inputs = read_round_inputs(config, rm_ckpt, rm_path, labeler, tok)
    check_output_dir(config.out_dir, ["ppo"])
    eval_rows = spread_subset(eval_rows, config.max_eval_prompts)
    held_out = {r["prompt"] for r in eval_rows}
    control_rows = spread_subset([r for r in prompts if r["prompt"] not in held_out], config.control_prompts)
    judge = resolve_judge(config.judge, [r["prompt"] for r in ppo_rows + eval_rows])
    return PPOInputs(tok, prompts, eval_rows, control_rows, control_temperatures, corpus, corpus_val, judge,
                     demos, base_demos, sft_ckpt, rm_ckpt, state, snapshots, rounds, labeler, round_inputs)


@dataclass
class DPOInputs:
    """What train_dpo.py reads. comparisons: those to train on (a seeded share of the prompts is held out, as
    train_rm.py holds them out, unless val_comparisons is given); eval_rows: the held-out prompts of the final
    comparison; corpus_val: the held-out corpus (None if there is none); rm_ckpt: {out_dir}/rm/model.pt if it
    exists (the report's RM score), else None."""
    tok: Tokenizer
    sft_path: str
    sft_ckpt: dict
    comparisons: list[dict]
    val_comparisons: list[dict] | None
    eval_rows: list[dict]
    corpus_val: TokenStream | None
    judge: Scorer | None
    snapshots: set[int]
    rm_path: str
    rm_ckpt: dict | None
    state: dict | None = None  # the resume state (None unless --resume=True)


def read_dpo_inputs(config) -> DPOInputs:
    """train_dpo.py: tokenizer, SFT checkpoint, comparisons (train_rm.py's, by default) and held-out
    comparisons, evaluation prompts and the held-out corpus."""
    check_positive(config, ("epochs", "prompts_per_batch", "max_new_tokens", "max_prompt_len", "samples_per_prompt"))
    if not config.beta > 0:
        raise DataError(f"--beta={config.beta!r}: DPO's KL coefficient must be > 0")
    if not config.temperature > 0:
        raise DataError(f"--temperature={config.temperature!r}: must be > 0")
    tok = get_tokenizer(config.tokenizer)
    sft_path = config.sft_checkpoint or os.path.join(config.out_dir, "sft", "model.pt")
    sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py` first.")
    sft_config = check_checkpoint(sft_ckpt, tok, sft_path, head="lm")
    block_size = sft_config.block_size
    state = None
    if config.resume:
        state = read_resume(config, "dpo")
        where = resume_path(config.out_dir, "dpo")
        if not same_shape(check_checkpoint(state, tok, where, head="lm"), sft_config):
            raise DataError(f"{where}: its policy does not have the shape of {sft_path}: it belongs to another run. "
                            f"{RESUME_HINT}")
    path = config.comparisons or os.path.join(config.out_dir, "rm", "comparisons.jsonl")
    if not os.path.exists(path):
        raise DataError(f"{path}: no comparisons to train on. Run `python train_rm.py` first (it collects and saves "
                        "them), or pass --comparisons=FILE")
    comparisons = read_comparisons(path)
    check_comparisons_fit(tok, comparisons, block_size)
    val = read_comparisons(config.val_comparisons) if config.val_comparisons else None
    if val is not None:
        check_comparisons_fit(tok, val, block_size)
    eval_path = data_file(config, "eval_prompts", "eval_prompts.jsonl", "the final evaluation")
    eval_rows, _ = encode_prompts(tok, read_prompts(eval_path), config.max_prompt_len, eval_path)
    check_prompts_fit(tok, eval_rows, config.max_new_tokens, block_size)
    corpus_val_path = data_file(config, "corpus_val", "corpus_val.txt")
    corpus_val = TokenStream(tok, corpus_val_path) if corpus_val_path else None
    if corpus_val is not None:
        corpus_val.require_windows(block_size)
    n_steps = config.epochs * -(-len(comparisons) // config.prompts_per_batch)  # an upper bound (none held out)
    snapshots = parse_iterations(config.snapshots, "snapshots", n_steps)
    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    rm_ckpt = None
    if config.report and os.path.exists(rm_path):
        rm_ckpt = load_checkpoint(rm_path, "reward model checkpoint")
        check_checkpoint(rm_ckpt, tok, rm_path, "scalar")
    check_output_dir(config.out_dir, ["dpo"])
    eval_rows = spread_subset(eval_rows, config.max_eval_prompts)
    judge = resolve_judge(config.judge, [r["prompt"] for r in eval_rows])
    return DPOInputs(tok, sft_path, sft_ckpt, comparisons, val, eval_rows, corpus_val, judge, snapshots, rm_path,
                     rm_ckpt, state)
