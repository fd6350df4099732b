"""DPO (Rafailov et al. 2023): the SFT model trained on the reward model's comparisons directly, offline, with no
reward model, no sampling and no value model. Beside train_ppo.py, not part of InstructGPT.

    python train_dpo.py                        # after train_rm.py: its comparisons, the same held-out prompts
    python train_dpo.py --beta=0.3 --epochs=2
    python train_dpo.py --comparisons=my.jsonl # your own comparisons (K-wise, or prompt/chosen/rejected)
    torchrun --nproc_per_node=2 train_dpo.py

Policy and frozen reference both start from SFT. For a prompt x with responses ranked y_1 > ... > y_K, each of
the C(K,2) pairs (w above l) gives

    -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

with log-probs summed over the response tokens; a prompt's pairs are averaged and each prompt weighs the same,
as in the reward model's loss (minigpt_rlhf/dpo.py). The log-probs are those of the tempered distribution
(--temperature, 0.7 as PPO's rollouts), the one that is sampled and evaluated, so that DPO and PPO optimise and
are judged on the same distribution. The comparisons held out are those train_rm.py holds out (same
val_fraction and seed); after each epoch the held-out DPO loss and implicit-reward accuracy are logged.
Writes out/dpo/model.pt, out/dpo/log.jsonl and out/dpo/eval.json (DPO against SFT on the held-out prompts, by
the judge, the RM if out/rm/model.pt exists, and KL, as train_ppo.py reports PPO).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf.checkpoint import load_model, save_checkpoint
from minigpt_rlhf.common import (
    JSONLLogger,
    all_reduce_grads,
    all_reduce_mean,
    check_finite,
    clip_and_step,
    compute_init,
    cosine_lr,
    make_scaler,
    print0,
    run_script,
    set_lr,
    write_json,
)
from minigpt_rlhf.comparisons import train_and_held_out
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.dpo import dpo_batch, encode_comparison, sequence_logprobs
from minigpt_rlhf.evaluate import compare_models, format_comparison
from minigpt_rlhf.inputs import read_dpo_inputs
from minigpt_rlhf.model import configure_optimizer
from minigpt_rlhf.resume import Stopper, remove_resume, restore_training, resume_path
from minigpt_rlhf.reward import prompt_batches
from minigpt_rlhf.sampling import banned_token_ids


@dataclass
class Config:
    out_dir: str = "out"  # output root: reads sft/model.pt and rm/comparisons.jsonl, writes dpo/
    data_dir: str = "data"  # folder of eval_prompts.jsonl and corpus_val.txt (README: Your own data)
    comparisons: str = ""  # comparisons to train on (default {out_dir}/rm/comparisons.jsonl, train_rm.py's)
    val_comparisons: str = ""  # a held-out comparisons JSONL (then all of `comparisons` train)
    eval_prompts: str = ""  # held-out prompts of the final comparison (default {data_dir}/eval_prompts.jsonl)
    corpus_val: str = ""  # held-out corpus for the pretraining loss (default {data_dir}/corpus_val.txt, if it exists)
    sft_checkpoint: str = ""  # default: {out_dir}/sft/model.pt
    judge: str = "auto"  # auto | none | module:function: scores held-out responses, for evaluation only (judge.py)
    tokenizer: str = "default"  # must match the SFT checkpoint's tokenizer
    val_fraction: float = 0.15  # share of prompts held out (as train_rm.py's, so both hold out the same ones)
    beta: float = 0.1  # the KL coefficient of the implicit reward beta * log(pi / pi_ref) (Rafailov et al.: 0.1)
    temperature: float = 0.7  # the tempered distribution whose log-probs are trained (PPO's rollout temperature)
    epochs: int = 2  # passes over the comparisons
    prompts_per_batch: int = 4  # whole prompts per optimizer step (all their pairs)
    lr: float = 2e-5  # peak learning rate (cosine to a tenth, after warmup)
    warmup_steps: int = 10  # linear warmup steps
    grad_clip: float = 1.0  # clip the global gradient norm
    snapshots: str = ""  # e.g. "100,200": also save the policy after these steps, as out/dpo/model_<step>.pt
    report: bool = True  # evaluate at the end (False: lab.py evaluates the saved policies itself)
    max_new_tokens: int = 48  # response length limit of the evaluation samples
    max_prompt_len: int = 64  # longer evaluation prompts are skipped
    eval_temperature: float = 0.7  # temperature of the final comparison
    samples_per_prompt: int = 4  # samples of each model per held-out prompt
    no_eos_penalty: float = -2.0  # the RM win rate's score of an unfinished response (train_ppo.py's reward for it)
    max_eval_prompts: int = 0  # evaluate on at most this many held-out prompts (0 = all)
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    seed: int = 1337  # random seed (the held-out split is train_rm.py's with the same seed)
    # stopping and resuming (README: Ctrl-C, then --resume=True)
    resume: bool = False  # continue from {out_dir}/dpo/resume.pt (policy, optimizer, step)
    save_interval: int = 100  # also save the resume state every this many steps (0 = only when stopping)
    stop_at: int = 0  # save the resume state and exit after this many steps (0 = run to the end)


PRESETS = {
    "laptop": {},
    "gpu": dict(prompts_per_batch=16),
    "tiny": dict(epochs=1, max_new_tokens=12, max_eval_prompts=8, val_fraction=0.34, warmup_steps=1),
}


def step_batches(n_train: int, config: Config, world_size: int = 1) -> list[list[int]]:
    """The whole prompts of every optimizer step, epoch after epoch, seeded on their own. Under DDP every rank takes
    whole prompts of each step, so a step needs at least one prompt per rank (a smaller last batch is dropped)."""
    batch_rng = np.random.default_rng([config.seed, 3])
    return [b for _ in range(config.epochs) for b in prompt_batches(n_train, config.prompts_per_batch, batch_rng)
            if len(b) >= world_size]


@torch.no_grad()
def reference_logprobs(ref, encoded, config, pad_id, banned, rt, batch: int = 8) -> list[torch.Tensor]:
    """The frozen reference's summed log-probs of every response of every comparison, computed once: (K,) each."""
    out = []
    for i in range(0, len(encoded), batch):
        chunk = encoded[i: i + batch]
        with rt.autocast():
            logps = sequence_logprobs(ref, [p for p, rs in chunk for _ in rs], [r for _, rs in chunk for r in rs],
                                      pad_id, config.temperature, banned, rt.device)
        out += [x.cpu() for x in torch.split(logps, [len(rs) for _, rs in chunk])]
    return out


def heldout(policy, encoded, rankings, ref_logps, config, pad_id, banned, rt) -> dict:
    """Held-out DPO loss and implicit-reward pair accuracy (the DPO counterpart of the RM's held-out accuracy)."""
    losses, accs = [], []
    with torch.no_grad():
        for i in range(0, len(encoded), 8):
            with rt.autocast():
                loss, stats = dpo_batch(policy, encoded[i: i + 8], rankings[i: i + 8], ref_logps[i: i + 8],
                                        config.beta, pad_id, config.temperature, banned, rt.device)
            losses.append(float(loss)), accs.append(float(stats["accuracy"]))
    return {"val_loss": float(np.mean(losses)), "val_accuracy": float(np.mean(accs))}


def report(config: Config, inputs, rt, policy, ref, rm, t0: float, train_time: float, extra: dict) -> dict:
    """DPO against SFT on the held-out prompts, as train_ppo.py reports PPO: printed and written to
    out/dpo/eval.json."""
    tok, judge = inputs.tok, inputs.judge
    result, samples = compare_models({"sft": ref, "dpo": policy}, tok, inputs.eval_rows, reference="sft",
                                     candidate="dpo", judge=judge, rm=rm, max_new_tokens=config.max_new_tokens,
                                     temperature=config.eval_temperature, samples_per_prompt=config.samples_per_prompt,
                                     seed=1, no_eos_score=config.no_eos_penalty, corpus_val=inputs.corpus_val,
                                     runtime=rt, ideal=judge.ideal_of if judge is not None else None)
    result.update(**extra, train_time_s=train_time, wall_time_s=time.time() - t0, config=asdict(config))
    if rt.master:
        print(format_comparison(result, samples, reference="sft", candidate="dpo"))
        print(f"wall time {result['wall_time_s']:.0f}s")
        write_json(os.path.join(config.out_dir, "dpo", "eval.json"), result)
    return result


def main(config: Config) -> dict:
    t0 = time.time()
    inputs = read_dpo_inputs(config)  # every file this run reads, before any work
    tok = inputs.tok
    rt = compute_init(config.device, config.dtype, config.seed)
    policy = load_model(inputs.sft_ckpt, tok, inputs.sft_path, rt.device, trainable=True)
    ref = load_model(inputs.sft_ckpt, tok, inputs.sft_path, rt.device)
    banned = banned_token_ids(policy.config.vocab_size, tok.n_vocab, tok.pad_id, rt.device)
    train, val = train_and_held_out(inputs.comparisons, inputs.val_comparisons, config)
    enc_train = [encode_comparison(tok, c) for c in train]
    enc_val = [encode_comparison(tok, c) for c in val]
    rank_train, rank_val = [c["ranking"] for c in train], [c["ranking"] for c in val]
    t_ref = time.time()
    ref_train = reference_logprobs(ref, enc_train, config, tok.pad_id, banned, rt)
    reference_s = time.time() - t_ref  # training compute, as PPO's reference forwards are (lab.py counts it)
    ref_val = reference_logprobs(ref, enc_val, config, tok.pad_id, banned, rt)
    optimizer = configure_optimizer(policy, config.lr, 0.0, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    start = 0
    if inputs.state is not None:  # --resume=True: the batches are seeded on their own, so only this is needed
        policy.load_state_dict(inputs.state["model"])
        start = restore_training(inputs.state, rt, optimizer, scaler)
        print0(f"resuming DPO at step {start} from {resume_path(config.out_dir, 'dpo')}")
    batches = step_batches(len(train), config, rt.world_size)
    steps_per_epoch = len(batches) // config.epochs
    log = JSONLLogger(os.path.join(config.out_dir, "dpo", "log.jsonl"), rt.master, resume_step=start or None)
    print0(f"DPO: {len(train)} prompts ({sum(len(r) * (len(r) - 1) // 2 for r in rank_train)} pairs), {len(val)} "
           f"held out; beta {config.beta}, {len(batches)} steps")
    params = list(policy.parameters())
    bar = tqdm(range(start, len(batches)), desc="dpo", disable=not rt.master, initial=start, total=len(batches))
    with Stopper(config, rt, "dpo", tok) as stopper:
        for step in bar:
            t_step = time.time()
            set_lr(optimizer, cosine_lr(step, len(batches), config.lr, config.warmup_steps))
            mine = batches[step][rt.rank:: rt.world_size]
            with rt.autocast():
                loss, stats = dpo_batch(policy, [enc_train[i] for i in mine], [rank_train[i] for i in mine],
                                        [ref_train[i] for i in mine], config.beta, tok.pad_id, config.temperature,
                                        banned, rt.device, n_prompts=len(batches[step]))
            check_finite(loss, "dpo", f"at step {step}", rt)
            scaler.scale(loss * rt.world_size).backward()  # the summed weights over ranks are 1: the mean is restored
            all_reduce_grads(params, rt)
            clip_and_step(optimizer, scaler, params, config.grad_clip)
            row = {"loss": all_reduce_mean(loss.item(), rt) * rt.world_size,
                   **{k: all_reduce_mean(float(v), rt) for k, v in stats.items()},
                   "step_s": time.time() - t_step}  # the step alone: not the held-out evaluation or the log
            if step == 0:
                row["reference_s"] = reference_s
            if (step + 1) % steps_per_epoch == 0 and val:
                row.update(epoch=(step + 1) // steps_per_epoch,
                           **heldout(policy, enc_val, rank_val, ref_val, config, tok.pad_id, banned, rt))
                print0(f"epoch {row['epoch']}: held-out DPO loss {row['val_loss']:.4f}, implicit-reward accuracy "
                       f"{row['val_accuracy']:.3f}")
            if rt.device.type == "cuda":
                row["cuda_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            log.log(step=step, lr=optimizer.param_groups[0]["lr"], elapsed_s=time.time() - t0, **row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}")
            if step + 1 in inputs.snapshots and rt.master:  # lab.py's settings of "steps"
                save_checkpoint(os.path.join(config.out_dir, "dpo", f"model_{step + 1}.pt"), policy, tok, config,
                                stage="dpo", step=step + 1)
            if stopper.after_step(step + 1, len(batches), policy, optimizer, scaler):
                print0(f"stopped after DPO step {step + 1}: resume with --resume=True")
                return {"interrupted": True, "steps_done": step + 1}
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "dpo", "model.pt"), policy, tok, config, stage="dpo",
                        step=len(batches))
    remove_resume(config.out_dir, "dpo", rt)
    train_time = time.time() - t0
    final = heldout(policy, enc_val, rank_val, ref_val, config, tok.pad_id, banned, rt) if val else {}
    if not config.report:
        return {"train_time_s": train_time, **final}
    rm = load_model(inputs.rm_ckpt, tok, inputs.rm_path, rt.device) if inputs.rm_ckpt is not None else None
    return report(config, inputs, rt, policy, ref, rm, t0, train_time, {"n_train_prompts": len(train), **final})


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
