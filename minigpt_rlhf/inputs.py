"""Every input of a stage, opened and checked before the stage does any work or writes anything.

A bad file found after pretraining or PPO has run costs the run, and a checkpoint written before the error
has already replaced a good one. So each script's main starts with check_<stage>_inputs(config): the data
files it will read (also those read only at the end, for evaluation or normalisation), the tokenizer, the
checkpoints and the resume state it will load, the sizes that must fit the model's context, and the output
folder. Each problem is a data.DataError (or FileNotFoundError) naming the file and line, or the key or
option, and saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from .checkpoint import check_checkpoint, checkpoint_config, load_checkpoint
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
)
from .resume import read_resume_state, resume_path
from .reward import check_comparisons_fit, encode_responses, normalization_demos, read_comparisons
from .tokenizer import get_tokenizer

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


def check_labeler_file(path: str):
    """out/rm/labeler.json: the simulated labeler's calibrated temperature, written by train_rm.py."""
    obj = parse_json(read_text(path, "labeler file"), path)
    t = obj.get("temperature") if isinstance(obj, dict) else None
    if type(t) not in (int, float) or not math.isfinite(t) or t < 0:
        raise DataError(f"{path}: 'temperature' should be a number >= 0, got {t!r}. Delete the file and run "
                        "train_rm.py with --relabel=True to collect and calibrate anew")


def gpt2_block_size(folder: str) -> int:
    """The context of a Hugging Face GPT-2 folder (model.from_pretrained checks the rest when it loads)."""
    path = os.path.join(folder, "config.json")
    hf = parse_json(read_text(path, "GPT-2 config.json"), path)
    n = hf.get("n_positions", hf.get("n_ctx", 1024)) if isinstance(hf, dict) else None
    if type(n) is not int or n <= 0:
        raise DataError(f"{path}: n_positions should be a positive integer, got {n!r}: not a GPT-2 config.json")
    return n


def check_sft_inputs(config):
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
    state = None
    if config.resume:
        path = resume_path(config.out_dir, "sft")
        hint = (f"There is nothing to resume: SFT either finished or never saved a resume state. {RESUME_HINT}")
        state = read_resume_state(path, "sft", world_size(), hint)
        block_size = check_checkpoint(state, tok, path, head="lm").block_size
    elif config.init_from.startswith("gpt2:"):
        block_size = gpt2_block_size(config.init_from[len("gpt2:"):])
    elif config.init_from:
        ckpt = load_checkpoint(config.init_from, "base checkpoint", "Omit --init_from to pretrain one.", mmap=True)
        block_size = check_checkpoint(ckpt, tok, config.init_from, head="lm").block_size
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
    SFTData(tok, val_rows, block_size)
    order = state["order"] if state is not None and state["phase"] == "sft" else None
    if order is not None and len(order) and (int(order.min()) < 0 or int(order.max()) >= len(train)):
        raise DataError(f"{state['_where']}: key 'order' does not index the {len(train)} demonstrations of "
                        f"sft_train.jsonl that fit: the data changed since the run stopped. {RESUME_HINT}")
    check_prompts_fit(tok, eval_rows, config.max_new_tokens, block_size)
    check_output_dir(config.out_dir, ["base", "sft"])


def check_rm_inputs(config):
    """train_rm.py: tokenizer, SFT checkpoint, comparisons (or the prompts to collect them for), held-out
    comparisons, the labeler file, sft_train.jsonl (read at the end to normalise) and the resume state."""
    check_positive(config, ("k_min", "k_max", "max_new_tokens", "epochs", "prompts_per_batch", "n_norm_demos"))
    if config.k_min < 2 or config.k_max < config.k_min:
        raise DataError(f"--k_min={config.k_min} --k_max={config.k_max}: a comparison ranks at least 2 responses, "
                        "so 2 <= k_min <= k_max")
    tok = get_tokenizer(config.tokenizer)
    sft_path = config.sft_checkpoint or os.path.join(config.out_dir, "sft", "model.pt")
    sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py` first.", mmap=True)
    sft_config = check_checkpoint(sft_ckpt, tok, sft_path, head="lm")
    block_size = sft_config.block_size
    if config.val_comparisons:
        check_comparisons_fit(tok, read_comparisons(config.val_comparisons), block_size)
    cmp_path = config.comparisons or os.path.join(config.out_dir, "rm", "comparisons.jsonl")
    temp_path = os.path.join(config.out_dir, "rm", "labeler.json")
    if config.comparisons or (os.path.exists(cmp_path) and not config.relabel):
        check_comparisons_fit(tok, read_comparisons(cmp_path), block_size)
        if os.path.exists(temp_path) and not config.comparisons:
            check_labeler_file(temp_path)
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
    if config.resume and not config.relabel:  # both at once: train_rm.py says they exclude each other
        path = resume_path(config.out_dir, "rm")
        hint = f"There is nothing to resume: the RM either finished or never saved a resume state. {RESUME_HINT}"
        state = read_resume_state(path, "rm", world_size(), hint)
        if not same_shape(check_checkpoint(state, tok, path, head="scalar"), sft_config):
            raise DataError(f"{path}: its model does not have the shape of a reward model made from {sft_path}: it "
                            f"belongs to another run. {RESUME_HINT}")
    check_output_dir(config.out_dir, ["rm"])


def check_ppo_inputs(config):
    """train_ppo.py: tokenizer, PPO and evaluation prompts, both corpora, the SFT and RM checkpoints that
    exist (a missing one is made by its own script, which checks its inputs), and the resume state."""
    check_positive(config, ("rollout_batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens", "max_prompt_len",
                            "ptx_batch_size"))
    tok = get_tokenizer(config.tokenizer)
    ppo_path = data_file(config, "ppo_prompts", "ppo_prompts.jsonl", "PPO's rollouts")
    prompts, _ = encode_prompts(tok, read_prompts(ppo_path), config.max_prompt_len, ppo_path)
    eval_path = data_file(config, "eval_prompts", "eval_prompts.jsonl", "the final evaluation")
    eval_rows, _ = encode_prompts(tok, read_prompts(eval_path), config.max_prompt_len, eval_path)
    corpus_path = data_file(config, "corpus", "corpus_train.txt", "--ptx_coef > 0" if config.ptx_coef > 0 else "")
    corpus = TokenStream(tok, corpus_path) if config.ptx_coef > 0 else None
    corpus_val_path = data_file(config, "corpus_val", "corpus_val.txt")
    corpus_val = TokenStream(tok, corpus_val_path) if corpus_val_path else None
    if config.few_shot and os.path.exists(os.path.join(config.out_dir, "base", "model.pt")):  # the report's base model
        few_shot_demos(read_sft(data_file(config, "sft_train", "sft_train.jsonl", "the base model's few-shot prompt "
                                          "(--few_shot=0 turns it off)")), config.few_shot, config.seed)
    sft_path = os.path.join(config.out_dir, "sft", "model.pt")
    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    sft_config = rm_config = None
    if os.path.exists(sft_path):
        sft_config = check_checkpoint(load_checkpoint(sft_path, "SFT checkpoint", mmap=True), tok, sft_path, "lm")
        check_prompts_fit(tok, prompts + eval_rows, config.max_new_tokens, sft_config.block_size)
        if corpus_val is not None:
            corpus_val.require_windows(sft_config.block_size)  # the pretraining loss reported at the end
        if corpus is not None:
            corpus.require_windows(sft_config.block_size)
    if os.path.exists(rm_path):
        rm_ckpt = load_checkpoint(rm_path, "reward model checkpoint", mmap=True)
        rm_config = check_checkpoint(rm_ckpt, tok, rm_path, "scalar")
    path = resume_path(config.out_dir, "ppo")
    if config.resume and os.path.exists(path):
        state = read_resume_state(path, "ppo", world_size())
        policy_config = check_checkpoint(state, tok, path, head="lm")
        if sft_config is not None and not same_shape(policy_config, sft_config):
            raise DataError(f"{path}: its policy does not have the shape of {sft_path}: it belongs to another run. "
                            f"{RESUME_HINT}")
        if rm_config is not None:
            checkpoint_config({"model": state["value_model"], "model_config": rm_ckpt["model_config"]},
                              f"{path} (key 'value_model')")
    check_output_dir(config.out_dir, ["ppo"])

