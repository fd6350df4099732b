"""Step 2 of InstructGPT: collect ranked comparisons and train the reward model (RM).

    python train_rm.py                              # after train_sft.py: collect, label, train, evaluate
    python train_rm.py --relabel=True               # sample and rank new comparisons
    python train_rm.py --comparisons=my.jsonl       # your own comparisons: K-wise, or TRL's prompt/chosen/rejected
    python train_rm.py --data_dir=my_data --labeler=my_labeler.py:score   # collect, ranked by your score function
    torchrun --nproc_per_node=2 train_rm.py

1. For each RM prompt, sample K responses (K uniform in 4..9, as in the paper) from the SFT model.
2. A simulated labeler ranks them: the labeler's score (the world's gold score, or --labeler=module:function)
   + Gumbel noise (a Plackett-Luce draw) at a temperature calibrated so that two independent labelers agree
   on 72.6% of pairs, InstructGPT's inter-labeler agreement. Saved to out/rm/comparisons.jsonl and reused
   unless --relabel=True.
3. The RM is the SFT model with its unembedding swapped for a scalar head; loss for a prompt with K
   ranked responses: -1/C(K,2) sum_{w above l} log sigmoid(r_w - r_l), ONE forward pass over its K
   responses, whole prompts per batch. The paper trains 1 epoch (its 6B RM overfit with more, on 33k
   prompts); our ~1M-parameter RM on ~1000 prompts is in the opposite regime, so it trains up to `epochs`
   and keeps the weights after the epoch with the lowest held-out ranking loss (early stopping, on the
   labels: never on gold).
4. Normalise: a bias so the SFT demonstrations (a random sample of them, all task families) get mean
   reward 0 (the paper), and a gain so SFT samples have unit reward std (lm-human-preferences), folded
   into the head.

Responses that did not emit EOS within max_new_tokens are ranked as they are (the labeler sees them cut
off), and the RM sees them as they are too: without an EOS, its reward read at their last token. In PPO
such responses get a fixed penalty instead of an RM score.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf.checkpoint import model_from_checkpoint, save_checkpoint
from minigpt_rlhf.common import (
    JSONLLogger,
    check_finite,
    clip_and_step,
    compute_init,
    cosine_lr,
    make_scaler,
    maybe_compile,
    print0,
    run_script,
    set_lr,
    write_json,
)
from minigpt_rlhf.comparisons import (
    CollectSettings,
    check_comparisons_fit,
    collect_comparisons,
    comparisons_path,
    held_out_rows,
    labeler_path,
    train_and_held_out,
    write_comparisons,
)
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.evaluate import format_rm_report, rm_report
from minigpt_rlhf.inputs import read_rm_inputs
from minigpt_rlhf.iterated import round_record
from minigpt_rlhf.judge import resolve_judge, resolve_labeler
from minigpt_rlhf.model import configure_optimizer, swap_unembedding
from minigpt_rlhf.resume import Stopper, remove_resume, restore_training, resume_path
from minigpt_rlhf.reward import (
    encode_responses,
    gain_samples,
    heldout_loss,
    normalization_demos,
    normalize,
    prompt_batches,
    rm_rewards,
    rm_step_loss,
)


@dataclass
class Config:
    out_dir: str = "out"  # output root: reads sft/model.pt, writes rm/
    data_dir: str = "data"  # folder of the files below, by their default names (README: Your own data)
    rm_prompts: str = ""  # prompts {"prompt"} to collect comparisons for (default {data_dir}/rm_prompts.jsonl)
    sft_train: str = ""  # demonstrations that set the reward's mean 0 (default {data_dir}/sft_train.jsonl)
    labeler: str = "auto"  # auto (the world's gold labeler) | module:function: ranks collected comparisons (judge.py)
    judge: str = "auto"  # auto | none | module:function: scores held-out responses, for evaluation only (judge.py)
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
    epochs: int = 6  # most passes over the comparisons (paper: 1, for a 6B RM on 33k prompts; see early_stopping)
    early_stopping: bool = True  # after each epoch, keep the weights with the lowest held-out ranking loss
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
                 val_fraction=0.34, warmup_steps=1, epochs=1),
}


def load_comparisons(config: Config, inputs, sft, tok, rt, rng) -> tuple[list[dict], list[dict], float | None]:
    """(train, held-out) comparisons and the labeler temperature they were ranked at (None if unknown). They are
    --comparisons, else out/rm/comparisons.jsonl if it exists (unless --relabel=True), as read_rm_inputs read
    them, else collected now from the SFT model and saved there; held out: --val_comparisons, else a seeded
    random share of the prompts."""
    comparisons, temperature = inputs.comparisons, inputs.temperature
    if comparisons is not None:
        print0(f"using {len(comparisons)} comparisons from {comparisons_path(config)} (--relabel=True to collect "
               "anew)")
    else:
        rows = inputs.rm_prompts
        labeler = resolve_labeler(config.labeler, [r["prompt"] for r in rows])
        if config.max_prompts:  # a random subset: the file is ordered by task family
            rows = [rows[i] for i in sorted(rng.permutation(len(rows))[: config.max_prompts])]
        comparisons, temperature = collect_comparisons(sft, tok, rows, config, rt, rng, labeler)
        if rt.master:
            write_comparisons(comparisons_path(config), comparisons)
            write_json(labeler_path(config.out_dir), {"temperature": temperature,
                                                      "target_agreement": config.target_agreement})
    return *train_and_held_out(comparisons, inputs.val_comparisons, config), temperature


def rounds_record(config: Config, n_comparisons: int, temperature: float | None, demos: list[dict]) -> dict:
    """What later RLHF rounds of train_ppo.py need to go on training this RM as it was trained (iterated.py)."""
    held_out = None if config.val_comparisons else held_out_rows(n_comparisons, config.val_fraction, config.seed)
    return round_record(comparisons_path(config), n_comparisons, held_out, config.val_comparisons,
                        "" if config.comparisons else config.labeler, temperature, demos, config.normalize_gain,
                        CollectSettings.of(config), config.weight_decay, config.prompts_per_batch, config.grad_clip)


def resume_rm(config: Config, state: dict, rt, rm, optimizer, scaler) -> tuple[int, dict | None]:
    """Load out/rm/resume.pt (read by read_rm_inputs) into the RM, optimizer and random streams; returns the step
    to continue from and the early-stopping state (the best epoch so far)."""
    rm.load_state_dict(state["model"])
    start = restore_training(state, rt, optimizer, scaler)
    print0(f"resuming RM training at step {start} from {resume_path(config.out_dir, 'rm')}")
    return start, state.get("early_stopping")


def epoch_batches(n_prompts: int, config: Config, rt) -> tuple[list[list[int]], list[int]]:
    """The batches of whole prompts of every epoch, and the step at which each epoch ends. Seeded on their own, so
    the batches are the same however the comparisons were collected."""
    batch_rng = np.random.default_rng([config.seed, 2])
    batches, epoch_ends = [], []
    for _ in range(config.epochs):
        # under DDP every rank needs at least one whole prompt per step: drop a too-small last batch
        epoch = prompt_batches(n_prompts, config.prompts_per_batch, batch_rng)
        batches += [b for b in epoch if len(b) >= rt.world_size]
        epoch_ends.append(len(batches))
    return batches, epoch_ends


def end_of_epoch(rm, tok, val, rt, best: dict, epoch: int, log, step: int) -> tuple[dict, bool]:
    """Early stopping: the held-out ranking loss after this epoch; returns the best epoch so far (its loss and a
    copy of its weights) and whether this epoch was worse (then training stops)."""
    rm.eval()
    val_loss = heldout_loss(rm, tok, val, rt)
    rm.train()
    log.log(step=step, epoch=epoch, val_loss=val_loss)
    print0(f"epoch {epoch}: validation ranking loss {val_loss:.4f}")
    if not val_loss < best["loss"]:
        return best, True
    weights = {k: v.detach().clone() for k, v in rm.state_dict().items()}
    return {"loss": val_loss, "epoch": epoch, "model": weights}, False


def report(config: Config, rm, tok, rt, train, val, judge, temperature, t0: float, **extra) -> dict:
    """The RM on its validation prompts (held out of training; early stopping chose the epoch on them, so they are
    not an untouched test set): accuracy vs the labels, and vs the judge if there is one; printed, and
    written to out/rm/eval.json with `extra` (normalisation, timings)."""
    result = rm_report(val, rm_rewards(rm, tok, val, rt), judge, temperature, config.target_agreement,
                       np.random.default_rng(config.seed + 1))
    result.update(n_train_prompts=len(train),
                  n_train_pairs=sum(len(c["responses"]) * (len(c["responses"]) - 1) // 2 for c in train),
                  **extra, wall_time_s=time.time() - t0, config=asdict(config))
    if rt.master:
        print(format_rm_report(result))
        print(f"{len(train)} train / {len(val)} validation prompts (they chose the epoch); "
              f"wall time {result['wall_time_s']:.0f}s")
        write_json(os.path.join(config.out_dir, "rm", "eval.json"), result)
    return result


def main(config: Config) -> dict:
    t0 = time.time()
    inputs = read_rm_inputs(config)  # every file this run reads (sft_train.jsonl only at the end), before any work
    tok = inputs.tok
    rt = compute_init(config.device, config.dtype, config.seed)
    # no dropout: the RM is evaluated as it is trained
    sft = model_from_checkpoint(inputs.sft_ckpt, tok, where=inputs.sft_path, dropout=0.0).to(rt.device).eval()
    rng = np.random.default_rng(config.seed)
    train, val, temperature = load_comparisons(config, inputs, sft, tok, rt, rng)
    n_comparisons = len(train) + (0 if config.val_comparisons else len(val))  # the rows of the comparisons file
    t_collect = time.time() - t0
    judge = resolve_judge(config.judge, [c["prompt"] for c in train + val])

    # the reward model: the SFT model with its unembedding swapped for a scalar head
    rm = swap_unembedding(sft).to(rt.device)
    optimizer = configure_optimizer(rm, config.lr, config.weight_decay, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    start, best = resume_rm(config, inputs.state, rt, rm, optimizer, scaler) if config.resume else (0, None)
    # early stopping: the weights after the epoch with the lowest held-out loss; stop once an epoch is worse
    best = best or {"loss": float("inf"), "epoch": 0, "model": None}
    train_rm = maybe_compile(rm, config.compile, rt)
    if rt.ddp:
        train_rm = torch.nn.parallel.DistributedDataParallel(train_rm)
    encoded = [encode_responses(tok, c["prompt"], c["responses"], c.get("ended")) for c in train]
    check_comparisons_fit(tok, train, rm.config.block_size)
    rankings = [c["ranking"] for c in train]
    batches, epoch_ends = epoch_batches(len(train), config, rt)

    log = JSONLLogger(os.path.join(config.out_dir, "rm", "log.jsonl"), rt.master, resume_step=start or None)
    rm.train()
    bar = tqdm(range(start, len(batches)), desc="rm", disable=not rt.master, initial=start, total=len(batches))
    with Stopper(config, rt, "rm", tok) as stopper:
        for step in bar:
            set_lr(optimizer, cosine_lr(step, len(batches), config.lr, config.warmup_steps))
            loss, accuracy = rm_step_loss(train_rm, encoded, rankings, batches[step], tok.pad_id, rt, scaler)
            check_finite(loss, "rm", f"at step {step}")
            clip_and_step(optimizer, scaler, rm.parameters(), config.grad_clip)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")
            log.log(step=step, loss=loss, accuracy=accuracy)
            if config.early_stopping and step + 1 in epoch_ends:
                best, worse = end_of_epoch(rm, tok, val, rt, best, epoch_ends.index(step + 1) + 1, log, step)
                if worse:
                    break
            if stopper.after_step(step + 1, len(batches), rm, optimizer, scaler, early_stopping=best):
                print0(f"stopped after RM step {step + 1}: resume with --resume=True")
                return {"interrupted": True, "steps_done": step + 1}
    if best["model"] is not None:
        rm.load_state_dict(best["model"])
        print0(f"early stopping: keeping the weights after epoch {best['epoch']} of {config.epochs}")
    rm.eval()

    # normalisation: demonstrations get mean reward 0; SFT samples (a seeded random share) unit std
    demos = normalization_demos(inputs.demos, config.n_norm_demos, config.seed)
    gain, shift, raw_std = normalize(rm, tok, demos, gain_samples(train, config.seed) if config.normalize_gain
                                     else None, rt)
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "rm", "model.pt"), rm, tok, config, stage="rm",
                        step=len(batches), reward_gain=gain, reward_shift=shift, reward_raw_std=raw_std,
                        rounds=rounds_record(config, n_comparisons, temperature, demos))
    remove_resume(config.out_dir, "rm", rt)
    return report(config, rm, tok, rt, train, val, judge, temperature, t0, reward_gain=gain, reward_shift=shift,
                  reward_raw_std=raw_std, collection_time_s=t_collect)


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
