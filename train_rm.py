"""Step 2 of InstructGPT: collect ranked comparisons and train the reward model (RM).

    python train_rm.py                              # after train_sft.py: collect, label, train, evaluate
    python train_rm.py --relabel=True               # sample and rank new comparisons
    python train_rm.py --comparisons=my.jsonl       # your own K-wise or pairwise comparisons
    torchrun --nproc_per_node=2 train_rm.py

1. For each RM prompt, sample K responses (K uniform in 4..9, as in the paper) from the SFT model.
2. A simulated labeler ranks them: gold score + Gumbel noise (a Plackett-Luce draw) at a temperature
   calibrated so that two independent labelers agree on 72.6% of pairs, InstructGPT's inter-labeler
   agreement. Saved to out/rm/comparisons.jsonl and reused unless --relabel=True.
3. The RM is the SFT model with its unembedding swapped for a scalar head; loss for a prompt with K
   ranked responses: -1/C(K,2) sum_{w above l} log sigmoid(r_w - r_l), ONE forward pass over its K
   responses, whole prompts per batch; 1 epoch (more overfits, per the paper).
4. Normalise: a bias so the SFT demonstrations get mean reward 0 (the paper), and a gain so SFT samples
   have unit reward std (lm-human-preferences), folded into the head.

Responses that did not emit EOS within max_new_tokens are ranked as they are (the labeler sees them cut
off); the RM input always ends with EOS. In PPO such responses get a fixed penalty instead of an RM score.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf import world
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from minigpt_rlhf.common import (
    JSONLLogger,
    all_reduce_mean,
    clip_and_step,
    compute_init,
    cosine_lr,
    gather_shards,
    make_scaler,
    maybe_compile,
    print0,
    run_script,
    set_lr,
    write_json,
)
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import read_prompts, read_sft
from minigpt_rlhf.evaluate import format_table, sample_responses, spearman
from minigpt_rlhf.inputs import check_rm_inputs
from minigpt_rlhf.labeler import (
    calibrate_temperature,
    expected_agreement,
    measure_agreement,
    rank_responses,
    within_group_gaps,
)
from minigpt_rlhf.losses import batched_kwise_ranking_loss
from minigpt_rlhf.model import swap_unembedding
from minigpt_rlhf.resume import (
    Stopper,
    load_resume,
    remove_resume,
    restore_training,
    resume_path,
    save_resume,
    warn_config_changes,
)
from minigpt_rlhf.reward import (
    check_comparisons_fit,
    encode_responses,
    normalize_head,
    prompt_batches,
    read_comparisons,
    score_comparisons,
    write_jsonl,
)
from minigpt_rlhf.tokenizer import get_tokenizer


@dataclass
class Config:
    out_dir: str = "out"  # output root: reads sft/model.pt, writes rm/
    data_dir: str = "data"  # rm_prompts.jsonl and sft_train.jsonl (for normalisation)
    tokenizer: str = "default"  # must match the SFT checkpoint's tokenizer
    sft_checkpoint: str = ""  # default: {out_dir}/sft/model.pt
    comparisons: str = ""  # a comparisons JSONL to train on; default: {out_dir}/rm/comparisons.jsonl
    val_comparisons: str = ""  # a held-out comparisons JSONL to evaluate on (then all of `comparisons` train)
    relabel: bool = False  # sample and rank new comparisons even if the file exists
    max_prompts: int = 0  # RM prompts to collect comparisons for (0 = all)
    k_min: int = 4  # fewest responses ranked per prompt (paper: 4)
    k_max: int = 9  # most responses ranked per prompt (paper: 9)
    sample_temperature: float = 0.7  # temperature of the SFT samples that get ranked
    max_new_tokens: int = 48  # response length limit when sampling
    distinct_tries: int = 2  # extra sampling rounds that replace repeated or empty responses (0 = none)
    target_agreement: float = 0.726  # inter-labeler agreement the labeler noise is calibrated to
    val_fraction: float = 0.15  # share of prompts held out for evaluation (unless val_comparisons is given)
    epochs: int = 1  # passes over the comparisons (paper: 1; more overfits)
    prompts_per_batch: int = 4  # whole prompts per optimizer step
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 10  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay on 2-D weights
    grad_clip: float = 1.0  # clip the global gradient norm
    normalize_gain: bool = True  # also scale rewards to unit std on SFT samples (lm-human-preferences)
    n_norm_demos: int = 512  # demonstrations used to set the mean-0 bias
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    compile: str = "auto"  # torch.compile the training forward: auto (on for CUDA) | True | False
    seed: int = 1337  # random seed
    # interruption and exact resume (minigpt_rlhf/resume.py); comparisons are reused from their file
    resume: bool = False  # continue training from {out_dir}/rm/resume.pt (weights, optimizer, schedule, RNG)
    save_interval: int = 100  # also save the resume state every this many steps (0 = only when stopping)
    stop_at: int = 0  # save the resume state and exit after this many training steps (0 = run to the end)


PRESETS = {
    "laptop": {},
    "gpu": dict(max_prompts=0, prompts_per_batch=16, lr=3e-5),
    "tiny": dict(max_prompts=12, k_min=2, k_max=4, prompts_per_batch=4, max_new_tokens=12, n_norm_demos=16,
                 val_fraction=0.34, warmup_steps=1),
}


def collect_comparisons(sft, tok, rows, config, rt, rng) -> tuple[list[dict], float]:
    """Sample K responses per prompt from the SFT model and have the simulated labeler rank them.

    A labeler ranks K *different* outputs: an empty response, or a repeat of one already in the group (a pair
    of identical texts has no right order, and no RM can separate them), is dropped and, for up to
    config.distinct_tries more rounds, replaced by a new sample of the same prompt."""
    ks = rng.integers(config.k_min, config.k_max + 1, size=len(rows))
    distinct = [[] for _ in rows]  # distinct samples of each prompt
    seen = [set() for _ in rows]
    todo = [(i, int(k)) for i, k in enumerate(ks)]  # (prompt index, samples still wanted)
    n_sampled = 0
    for attempt in range(1 + config.distinct_tries):
        expanded = [rows[i] for i, need in todo for _ in range(need)]
        if not expanded:
            break
        samples = sample_responses(sft, tok, expanded, config.max_new_tokens, config.sample_temperature,
                                   seed=config.seed + 7919 * attempt, runtime=rt)  # sharded, gathered on all
        n_sampled += len(samples)
        start, still_short = 0, []
        for i, need in todo:
            # responses cut off without EOS stay in (the labeler sees them cut off)
            for s in samples[start: start + need]:
                if s["response"].strip() and (s["response"], s["ended"]) not in seen[i]:
                    seen[i].add((s["response"], s["ended"]))
                    distinct[i].append(s)
            start += need
            if len(distinct[i]) < ks[i]:
                still_short.append((i, int(ks[i]) - len(distinct[i])))
        todo = still_short
    groups = [(row, group, [world.gold_score(row["prompt"], s["response"], eos=s["ended"]) for s in group])
              for row, group in zip(rows, distinct) if len(group) >= 2]
    if not groups:
        raise SystemExit("the SFT model produced fewer than 2 non-empty responses for every RM prompt; "
                         "train SFT longer or raise max_new_tokens")
    # the labeler's noise is set so that two independent labelers agree on target_agreement of the pairs
    temperature = calibrate_temperature([g for _, _, g in groups], config.target_agreement)
    comparisons = []
    for row, group, gold in groups:
        ranking = rank_responses(gold, temperature, rng)
        comparisons.append({"prompt": row["prompt"], "family": row.get("family", ""),
                            "responses": [s["response"] for s in group], "ended": [s["ended"] for s in group],
                            "ranking": [int(i) for i in ranking]})
    n_kept = sum(len(c["responses"]) for c in comparisons)
    print0(f"collected {len(comparisons)} prompts with {n_kept} distinct responses out of {n_sampled} samples "
           f"({len(todo)} prompts still short of K after {config.distinct_tries} extra rounds); "
           f"{sum(not e for c in comparisons for e in c['ended'])} without EOS; labeler temperature {temperature:.4f}")
    return comparisons, temperature


def pair_accuracy(rewards: list[float], order: list[int]) -> tuple[float, int]:
    """Pairs (w above l in `order`) the rewards order the same way, out of all pairs. A tie in reward counts
    1/2: the RM states no preference, which agrees with a label as often as a coin flip (the same convention
    as the win rate's ties)."""
    correct, total = 0.0, 0
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            total += 1
            rw, rl = rewards[order[a]], rewards[order[b]]
            correct += 1.0 if rw > rl else 0.5 if rw == rl else 0.0
    return correct, total


def gold_order(gold: list[float]) -> list[int]:
    return rank_responses(gold, 0.0, np.random.default_rng(0))


@torch.no_grad()
def rm_rewards(rm, tok, comparisons, rt, batch=16) -> list[list[float]]:
    """The RM's reward of every response of every comparison; sharded over ranks, gathered on all."""
    mine = comparisons[rt.rank:: rt.world_size]  # this rank's shard (all of them in one process)
    out = []
    for i in range(0, len(mine), batch):
        chunk = mine[i: i + batch]
        enc = [encode_responses(tok, c["prompt"], c["responses"]) for c in chunk]
        flat = score_comparisons(rm, enc, tok.pad_id, rt.device).float().cpu().tolist()
        for c in chunk:
            out.append(flat[: len(c["responses"])])
            flat = flat[len(c["responses"]):]
    return gather_shards(out, rt)


def gold_of(c: dict) -> list[float]:
    """Gold scores of a comparison's responses (for evaluation only; training never reads them)."""
    ended = c.get("ended") or [True] * len(c["responses"])
    return [world.gold_score(c["prompt"], r, eos=e) for r, e in zip(c["responses"], ended)]


def evaluate(rm, tok, val, temperature, rt, rng) -> dict:
    """Held-out pairwise accuracy vs the noisy labels and vs the noiseless gold order, the measured
    agreement of two simulated labelers (the ceiling), Spearman of RM reward vs gold, per family."""
    rewards = rm_rewards(rm, tok, val, rt)
    golds = [gold_of(c) for c in val]
    lab = [0, 0]
    gold_acc = [0, 0]
    fam = defaultdict(lambda: [0, 0])
    for c, r, g in zip(val, rewards, golds):
        ok, n = pair_accuracy(r, c["ranking"])
        lab[0] += ok
        lab[1] += n
        fam[c.get("family") or world.family_of(c["prompt"])][0] += ok
        fam[c.get("family") or world.family_of(c["prompt"])][1] += n
        order = gold_order(g)
        for a in range(len(order)):  # pairs whose gold scores tie have no gold order
            for b in range(a + 1, len(order)):
                if g[order[a]] != g[order[b]]:
                    ok, _ = pair_accuracy([r[order[a]], r[order[b]]], [0, 1])
                    gold_acc[0] += ok
                    gold_acc[1] += 1
    agreement = measure_agreement(golds, temperature, rng, n_repeats=20)
    return {
        "accuracy_vs_labels": lab[0] / max(lab[1], 1),
        "accuracy_vs_gold": gold_acc[0] / max(gold_acc[1], 1),
        "labeler_agreement": agreement,
        "labeler_agreement_expected": expected_agreement(within_group_gaps(golds), temperature),
        "spearman_vs_gold": spearman([x for r in rewards for x in r], [x for g in golds for x in g]),
        "accuracy_by_family": {f: v[0] / max(v[1], 1) for f, v in sorted(fam.items())},
        "n_val_prompts": len(val),
        "n_val_pairs": lab[1],
    }


def rm_step_loss(train_rm, encoded, rankings, batch, pad_id, rt, scaler=None) -> tuple[float, float]:
    """Forward and backward of one RM optimizer step over the whole prompts in `batch` (indices into
    encoded / rankings). Rank r takes prompts r, r + W, ...: a prompt's K responses go through ONE forward
    pass on one rank, so its pairs are never split. The summed per-prompt losses are divided by the number
    of prompts in the whole step (times W, which DDP's gradient averaging divides out), so the gradient
    equals that of one process over the whole batch (tests/test_distributed.py).
    Returns the step's mean loss and pair accuracy over all ranks."""
    mine = batch[rt.rank:: rt.world_size]
    with rt.autocast():
        rewards = score_comparisons(train_rm, [encoded[i] for i in mine], pad_id, rt.device)
    loss, stats = batched_kwise_ranking_loss(rewards.float(), [rankings[i] for i in mine], n_prompts=len(batch))
    loss_w = loss * rt.world_size
    (scaler.scale(loss_w) if scaler is not None else loss_w).backward()  # fp16: scaled (common.make_scaler)
    n_correct = all_reduce_mean(float(stats["n_correct_pairs"]), rt)
    n_pairs = all_reduce_mean(float(stats["n_pairs"]), rt)
    return all_reduce_mean(loss.item(), rt) * rt.world_size, n_correct / n_pairs


def main(config: Config) -> dict:
    t0 = time.time()
    check_rm_inputs(config)  # every file this run reads (sft_train.jsonl only at the end), before any work
    rt = compute_init(config.device, config.dtype, config.seed)
    tok = get_tokenizer(config.tokenizer)
    sft_path = config.sft_checkpoint or os.path.join(config.out_dir, "sft", "model.pt")
    sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py` first.")
    sft = model_from_checkpoint(sft_ckpt, tok, where=sft_path).to(rt.device).eval()
    rng = np.random.default_rng(config.seed)

    # ---- comparisons ----
    if config.resume and config.relabel:
        raise SystemExit("--resume=True continues training on the saved comparisons; it cannot --relabel=True")
    # a held-out file is read first, so that a bad one stops the run before any sampling
    val_given = read_comparisons(config.val_comparisons) if config.val_comparisons else None
    cmp_path = config.comparisons or os.path.join(config.out_dir, "rm", "comparisons.jsonl")
    temp_path = os.path.join(config.out_dir, "rm", "labeler.json")
    if config.comparisons or (os.path.exists(cmp_path) and not config.relabel):
        comparisons = read_comparisons(cmp_path)
        temperature = None
        if os.path.exists(temp_path) and not config.comparisons:
            with open(temp_path) as f:
                temperature = json.load(f)["temperature"]
        print0(f"using {len(comparisons)} comparisons from {cmp_path} (--relabel=True to collect anew)")
    else:
        rows = read_prompts(os.path.join(config.data_dir, "rm_prompts.jsonl"))
        if config.max_prompts:  # a random subset: the file is ordered by task family
            rows = [rows[i] for i in sorted(rng.permutation(len(rows))[: config.max_prompts])]
        comparisons, temperature = collect_comparisons(sft, tok, rows, config, rt, rng)
        if rt.master:
            write_jsonl(cmp_path, comparisons)
            write_json(temp_path, {"temperature": temperature, "target_agreement": config.target_agreement})
    t_collect = time.time() - t0

    split_rng = np.random.default_rng([config.seed, 1])  # the same split and batches however they were collected
    if val_given is not None:  # a fixed held-out set (e.g. to compare RMs trained on different data)
        train, val = comparisons, val_given
        shared = {c["prompt"] for c in train} & {c["prompt"] for c in val}
        if shared:
            raise SystemExit(f"--val_comparisons={config.val_comparisons}: {len(shared)} of its prompts are also in "
                             f"the training comparisons (e.g. {sorted(shared)[0]!r}); a held-out set must not be "
                             "trained on")
    else:
        perm = split_rng.permutation(len(comparisons))
        n_val = max(1, int(len(comparisons) * config.val_fraction))
        val = [comparisons[i] for i in perm[:n_val]]
        train = [comparisons[i] for i in perm[n_val:]]

    # ---- the reward model: the SFT model with its unembedding swapped for a scalar head ----
    rm = swap_unembedding(sft).to(rt.device)
    for m in rm.modules():  # no dropout: the RM is evaluated as it is trained
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rm.config.dropout = 0.0
    for blk in rm.transformer.h:
        blk.attn.dropout = 0.0
    optimizer = rm.configure_optimizer(config.lr, config.weight_decay, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    start = 0
    if config.resume:
        state = load_resume(config.out_dir, "rm", rt)
        rm.load_state_dict(state["model"])
        start = restore_training(state, rt, optimizer, scaler)
        print0(f"resuming RM training at step {start} from {resume_path(config.out_dir, 'rm')}")
        warn_config_changes(state, config, print0)
    train_rm = maybe_compile(rm, config.compile, rt)
    if rt.ddp:
        train_rm = torch.nn.parallel.DistributedDataParallel(train_rm)
    encoded = [encode_responses(tok, c["prompt"], c["responses"]) for c in train]
    check_comparisons_fit(tok, train, rm.config.block_size)
    batches = []
    for _ in range(config.epochs):
        batches += prompt_batches(len(train), config.prompts_per_batch, split_rng)
    # under DDP every rank needs at least one whole prompt per step: drop a too-small last batch
    batches = [b for b in batches if len(b) >= rt.world_size]
    rankings = [c["ranking"] for c in train]
    log = JSONLLogger(os.path.join(config.out_dir, "rm", "log.jsonl"), rt.master, resume_step=start or None)
    rm.train()
    bar = tqdm(range(start, len(batches)), desc="rm", disable=not rt.master, initial=start, total=len(batches))
    with Stopper(config.stop_at, rt) as stopper:
        for step in bar:
            set_lr(optimizer, cosine_lr(step, len(batches), config.lr, config.warmup_steps))
            loss, accuracy = rm_step_loss(train_rm, encoded, rankings, batches[step], tok.pad_id, rt, scaler)
            if not np.isfinite(loss):
                raise SystemExit(f"rm: loss became {loss} at step {step}; stopping (the last saved checkpoint "
                                 "is left as it was). Try a lower learning rate.")
            clip_and_step(optimizer, scaler, rm.parameters(), config.grad_clip)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")
            log.log(step=step, loss=loss, accuracy=accuracy)
            save, stop = stopper.after_step(step + 1, len(batches), config.save_interval)
            if save:
                save_resume(config.out_dir, "rm", rt, rm, tok, config, optimizer, scaler, step + 1)
            if stop:
                print0(f"stopped after RM step {step + 1}: resume with --resume=True")
                return {"interrupted": True, "steps_done": step + 1}
    rm.eval()

    # ---- normalisation: demonstrations get mean reward 0; SFT samples unit std ----
    demos = read_sft(os.path.join(config.data_dir, "sft_train.jsonl"))[: config.n_norm_demos]
    with torch.no_grad():
        demo_rewards = torch.tensor([r for rs in rm_rewards(rm, tok, [
            {"prompt": d["prompt"], "responses": [d["response"]]} for d in demos], rt) for r in rs])
        sample_rewards = torch.tensor([r for rs in rm_rewards(rm, tok, train[:200], rt) for r in rs])
    gain, shift, raw_std = normalize_head(rm, demo_rewards, sample_rewards if config.normalize_gain else None)
    print0(f"normalised: demonstrations' mean reward {shift:.3f} -> 0, gain {gain:.3f} (raw std {raw_std:.3f})")

    # ---- evaluation on held-out prompts ----
    if temperature is None:  # user-supplied comparisons: measure what the simulated labeler would give
        temperature = calibrate_temperature([gold_of(c) for c in val], config.target_agreement)
    result = evaluate(rm, tok, val, temperature, rt, np.random.default_rng(config.seed + 1))
    result.update(labeler_temperature=temperature, n_train_prompts=len(train),
                  n_train_pairs=sum(len(c["responses"]) * (len(c["responses"]) - 1) // 2 for c in train),
                  reward_gain=gain, reward_shift=shift, reward_raw_std=raw_std,
                  collection_time_s=t_collect, wall_time_s=time.time() - t0, config=asdict(config))
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "rm", "model.pt"), rm, tok, config, stage="rm",
                        step=len(batches), reward_gain=gain, reward_shift=shift, reward_raw_std=raw_std)
        rows = [[f"accuracy: {f}", v] for f, v in result["accuracy_by_family"].items()]
        rows += [["accuracy vs noisy labels", result["accuracy_vs_labels"]],
                 ["accuracy vs gold order", result["accuracy_vs_gold"]],
                 ["two-labeler agreement (ceiling)", result["labeler_agreement"]],
                 ["Spearman(RM reward, gold)", result["spearman_vs_gold"]]]
        print(format_table(["held-out metric", "value"], rows))
        print(f"{len(train)} train / {len(val)} held-out prompts; wall time {result['wall_time_s']:.0f}s")
        write_json(os.path.join(config.out_dir, "rm", "eval.json"), result)
    remove_resume(config.out_dir, "rm", rt)
    return result


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
