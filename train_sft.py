"""Step 1 of InstructGPT: supervised fine-tuning (SFT) on labeler demonstrations.

    python train_sft.py                                   # laptop default: pretrain a base LM, then SFT
    python train_sft.py --init_from=out/base/model.pt     # SFT from a saved base checkpoint
    python train_sft.py --init_from=gpt2:/path/to/gpt2 --tokenizer=gpt2:/path/to/gpt2 --preset=gpu
    python train_sft.py --data_dir=my_data --tokenizer=my.bpe --judge=my_judge.py:score   # your own data (README)
    torchrun --nproc_per_node=2 train_sft.py              # data-parallel (gloo on CPU, NCCL on GPU)

InstructGPT starts from GPT-3. Our stand-in is a tiny GPT pretrained here on the world's corpus
(data/corpus_train.txt), which is where the facts the knowledge questions ask about live. SFT then trains
on prompt + demonstration with the next-token loss on the response tokens and EOS only.

Departures from the paper (Ouyang et al. 2022, appendix C.1): the paper trains 16 epochs with residual
dropout 0.2 and picks the final SFT model by reward-model score on a validation set; we train a fixed
number of steps (a few epochs of our small data) and keep the last model, since the RM does not exist yet;
and each SFT step also takes a next-token loss on a few corpus windows (--corpus_mix, weight 0.25), without
which this small model forgets its corpus (docs/defaults_archive.md, "SFT: keeping the language model", measures it).
Writes out/base/model.pt, out/sft/model.pt, out/sft/log.jsonl and out/sft/eval.json (validation loss and
sample responses; with a judge, minigpt_rlhf/judge.py, their judge scores).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf.checkpoint import (
    base_checkpoint_path,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
    unwrap,
)
from minigpt_rlhf.common import (
    JSONLLogger,
    all_reduce_mean,
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
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import SFTData, TokenStream, length_grouped_order
from minigpt_rlhf.evaluate import corpus_loss, format_sft_report, sample_responses, sft_report
from minigpt_rlhf.inputs import read_sft_inputs
from minigpt_rlhf.losses import lm_loss, sft_loss
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer, from_pretrained
from minigpt_rlhf.resume import Stopper, remove_resume, restore_training, resume_path


@dataclass
class Config:
    out_dir: str = "out"  # output root: base/ and sft/ are written here
    data_dir: str = "data"  # folder of the files below, by their default names (README: Your own data)
    corpus: str = ""  # pretraining corpus, plain text (default {data_dir}/corpus_train.txt; to pretrain or corpus_mix)
    corpus_val: str = ""  # held-out corpus for the corpus loss (default {data_dir}/corpus_val.txt, if it exists)
    sft_train: str = ""  # demonstrations {"prompt", "response"} (default {data_dir}/sft_train.jsonl)
    sft_val: str = ""  # held-out demonstrations (default {data_dir}/sft_val.jsonl)
    eval_prompts: str = ""  # held-out prompts {"prompt"} sampled at the end (default {data_dir}/eval_prompts.jsonl)
    judge: str = "auto"  # auto | none | module:function: scores the samples, for evaluation only (judge.py)
    tokenizer: str = "default"  # "default" (data/tokenizer.bpe), a .bpe file, "gpt2" or "gpt2:/folder"
    init_from: str = ""  # "" pretrains a base LM; else a base checkpoint .pt or "gpt2:/hf/folder"
    # model (used when pretraining from scratch)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads
    n_embd: int = 128  # model width
    block_size: int = 128  # context length in tokens
    # pretraining the base model
    pretrain_steps: int = 600  # optimizer steps of next-token prediction on the corpus
    pretrain_batch_size: int = 16  # sequences of block_size tokens per step
    pretrain_lr: float = 2e-3  # peak learning rate for pretraining
    # supervised fine-tuning
    sft_steps: int = 1200  # optimizer steps of SFT (~10 epochs; docs/defaults_archive.md has the sweep)
    batch_size: int = 32  # demonstrations per optimizer step (over all ranks and micro-steps)
    group_by_length: bool = True  # batch demonstrations of similar length: less padding, same epochs
    corpus_mix: float = 0.25  # weight of a next-token loss on corpus windows added to each SFT step (0 = paper)
    corpus_mix_batch: int = 2  # corpus windows of block_size tokens per SFT step (over all ranks)
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-3  # peak SFT learning rate
    warmup_steps: int = 30  # linear warmup steps (both phases)
    weight_decay: float = 0.1  # AdamW weight decay on 2-D weights only
    dropout: float = 0.1  # residual dropout during SFT (the paper used 0.2)
    grad_clip: float = 1.0  # clip the global gradient norm
    eval_interval: int = 250  # steps between validation-loss evaluations
    # evaluation at the end
    eval_temperature: float = 0.7  # sampling temperature of the held-out evaluation
    max_new_tokens: int = 48  # response length limit
    max_eval_prompts: int = 0  # evaluate on at most this many held-out prompts (0 = all)
    # system
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    compile: str = "auto"  # torch.compile the training forward: auto (on for CUDA) | True | False
    seed: int = 1337  # random seed (rank r uses seed + r)
    # interruption and exact resume (minigpt_rlhf/resume.py)
    resume: bool = False  # continue from {out_dir}/sft/resume.pt (weights, optimizer, schedule, RNG, data position)
    save_interval: int = 100  # also save the resume state every this many steps (0 = only when stopping)
    stop_at: int = 0  # save the resume state and exit after this many steps, pretraining + SFT (0 = never)


PRESETS = {
    "laptop": {},
    "gpu": dict(n_layer=12, n_head=12, n_embd=768, block_size=256, pretrain_steps=3000,
                pretrain_batch_size=64, pretrain_lr=6e-4, sft_steps=1000, batch_size=64, lr=1e-4,
                dropout=0.2),
    "tiny": dict(n_layer=1, n_head=2, n_embd=32, pretrain_steps=20, pretrain_batch_size=8, sft_steps=20,
                 batch_size=8, warmup_steps=5, eval_interval=10, max_eval_prompts=16, max_new_tokens=16),
}


def build_base_model(config: Config, tok, init_ckpt: dict | None) -> GPT:
    """The pretrained LM SFT starts from: a saved checkpoint (init_ckpt, read from --init_from), GPT-2 weights,
    or a fresh model to pretrain."""
    if config.init_from.startswith("gpt2:"):
        vocab = ((tok.n_vocab + 63) // 64) * 64  # pad to a multiple of 64 (nanoGPT: ~25% faster on GPU)
        model = from_pretrained(config.init_from[len("gpt2:"):], vocab_size=vocab)
        if tok.n_vocab > model.config.vocab_size or tok.name != "gpt2":
            raise SystemExit(f"--init_from={config.init_from} needs the GPT-2 tokenizer: pass --tokenizer=gpt2 "
                             f"or --tokenizer=gpt2:/folder (got {tok.name!r})")
        return model
    if config.init_from:
        return model_from_checkpoint(init_ckpt, tok, where=config.init_from)
    vocab = ((tok.n_vocab + 63) // 64) * 64
    return GPT(GPTConfig(block_size=config.block_size, vocab_size=vocab, n_layer=config.n_layer,
                         n_head=config.n_head, n_embd=config.n_embd, dropout=0.0))


def pretrain(model, config: Config, tok, rt, corpus: TokenStream, val: TokenStream | None, stopper, state=None) -> bool:
    """Next-token prediction on the corpus: the "GPT-3" of our world. Returns False if it stopped early."""
    optimizer = configure_optimizer(model, config.pretrain_lr, config.weight_decay, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    train_model = maybe_compile(model, config.compile, rt)
    if rt.ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model)
    rng = np.random.default_rng(config.seed + rt.rank)  # each rank draws its own windows
    start = 0
    if state is not None:
        start = restore_training(state, rt, optimizer, scaler, rng)
    B, T = config.pretrain_batch_size // rt.world_size, model.config.block_size
    log = JSONLLogger(os.path.join(config.out_dir, "base", "log.jsonl"), rt.master, resume_step=start or None)
    bar = tqdm(range(start, config.pretrain_steps), desc="pretrain", disable=not rt.master,
               initial=start, total=config.pretrain_steps)
    for step in bar:
        set_lr(optimizer, cosine_lr(step, config.pretrain_steps, config.pretrain_lr, config.warmup_steps))
        x, y = corpus.batch(B, T, rng)
        x, y = x.to(rt.device), y.to(rt.device)
        with rt.autocast():
            loss = lm_loss(train_model(x).float(), y)
        check_finite(loss, "pretrain", f"at step {step}", rt)  # a rank's own loss: every rank stops together
        scaler.scale(loss).backward()
        clip_and_step(optimizer, scaler, model.parameters(), config.grad_clip)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        log.log(step=step, loss=loss.item())
        if stopper.after_step(step + 1, config.pretrain_steps, model, optimizer, scaler, rng, phase="pretrain"):
            print0(f"stopped after pretraining step {step + 1}: resume with --resume=True")
            return False
    val_loss = corpus_loss(model, val, T, autocast=rt.autocast) if val is not None else float("nan")
    print0(f"base model: corpus validation loss {val_loss:.3f}" if val is not None else
           "base model: pretrained (no corpus_val file: its validation loss is not measured)")
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "base", "model.pt"), model, tok, config,
                        stage="base", step=config.pretrain_steps, val_loss=val_loss)
    return True


@torch.no_grad()
def sft_val_loss(model, data: SFTData, rt, batch_size=64) -> float:
    was = model.training
    model.eval()
    total, count = 0.0, 0.0
    for b in range(0, len(data), batch_size):
        x, y, m = data.batch(range(b, min(b + batch_size, len(data))))
        x, y, m = x.to(rt.device), y.to(rt.device), m.to(rt.device)
        with rt.autocast():
            logits = model(x)
        total += float(sft_loss(logits.float(), y, m)) * float(m.sum())
        count += float(m.sum())
    model.train(was)
    return total / count


def sft_step_loss(train_model, data: SFTData, rows, rt, grad_accum: int = 1, scaler=None,
                  corpus_batch=None, corpus_mix: float = 0.0) -> float:
    """Forward and backward of one SFT optimizer step over `rows` (the demonstrations of the WHOLE step,
    all ranks and micro-steps). Rank r takes rows r, r + W, ... of each of the grad_accum micro-batches.
    Every token's loss is divided by the token count of the whole step, and by nothing else (times W,
    which DDP's gradient averaging divides out): the gradient is exactly that of one batch of all the
    rows (tests/test_distributed.py).

    corpus_batch (x, y), this rank's corpus windows, adds corpus_mix * lm_loss on them (the mean over
    ranks, after DDP's averaging). Returns the step's mean SFT loss over all ranks (the corpus term is
    not included)."""
    n_tokens = data.n_loss_tokens(rows)
    per_micro = len(rows) // grad_accum
    if corpus_batch is not None and corpus_mix > 0:
        x, y = (t.to(rt.device) for t in corpus_batch)
        if rt.ddp:  # gradients are all-reduced once, on the last SFT micro-step
            train_model.require_backward_grad_sync = False
        with rt.autocast():
            loss = corpus_mix * lm_loss(train_model(x).float(), y)
        (scaler.scale(loss) if scaler is not None else loss).backward()
    total = 0.0
    for k in range(grad_accum):
        mine = rows[k * per_micro: (k + 1) * per_micro][rt.rank:: rt.world_size]
        x, y, m = (t.to(rt.device) for t in data.batch(mine))
        if rt.ddp:  # all-reduce gradients only on the last micro-step
            train_model.require_backward_grad_sync = k == grad_accum - 1
        with rt.autocast():
            loss = sft_loss(train_model(x).float(), y, m, n_tokens=n_tokens) * rt.world_size
        (scaler.scale(loss) if scaler is not None else loss).backward()  # fp16: scaled (common.make_scaler)
        total += loss.item() / rt.world_size
    return all_reduce_mean(total, rt) * rt.world_size


def sft(model, config: Config, tok, rt, train: SFTData, val: SFTData, stopper, state=None, corpus=None):
    """Supervised fine-tuning on the demonstrations (tokenised by read_sft_inputs). Returns (val loss before,
    val loss after), or None if it stopped early (the resume state is saved)."""
    model.set_dropout(config.dropout)  # residual dropout for SFT (Ouyang et al. 2022, appendix C.1)
    if train.skipped:
        print0(f"skipped {train.skipped} demonstrations longer than the context ({model.config.block_size})")
    optimizer = configure_optimizer(model, config.lr, config.weight_decay, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    train_model = maybe_compile(model, config.compile, rt)
    if rt.ddp:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model)
    rng = np.random.default_rng(config.seed)  # the same permutation on every rank; each takes its shard

    lengths = train.lengths()

    def epoch_order():  # a right-padded batch of similar lengths wastes less compute on padding
        if config.group_by_length:
            return length_grouped_order(lengths, config.batch_size, rng)
        return rng.permutation(len(train))

    order, pos, start = epoch_order(), 0, 0
    model.train()
    if state is not None:
        start = restore_training(state, rt, optimizer, scaler, rng)
        order, pos, val_loss0 = state["order"].numpy(), state["pos"], state["val_loss0"]
    else:
        val_loss0 = sft_val_loss(model, val, rt)
    log = JSONLLogger(os.path.join(config.out_dir, "sft", "log.jsonl"), rt.master, resume_step=start or None)
    print0(f"SFT: {len(train)} demonstrations, {config.sft_steps} steps of {config.batch_size} "
           f"({config.sft_steps * config.batch_size / len(train):.1f} epochs); val loss before {val_loss0:.3f}")
    bar = tqdm(range(start, config.sft_steps), desc="sft", disable=not rt.master, initial=start,
               total=config.sft_steps)
    val_loss = val_loss0
    offset = 0 if config.init_from else config.pretrain_steps  # stop_at counts pretraining steps too
    for step in bar:
        set_lr(optimizer, cosine_lr(step, config.sft_steps, config.lr, config.warmup_steps))
        if pos + config.batch_size > len(order):  # a new epoch: reshuffle
            order, pos = epoch_order(), 0
        rows = order[pos: pos + config.batch_size]
        pos += len(rows)
        corpus_batch = None
        if config.corpus_mix > 0:  # the same draw on every rank (one shared rng); each rank takes its share
            x, y = corpus.batch(config.corpus_mix_batch, model.config.block_size, rng)
            corpus_batch = (x[rt.rank:: rt.world_size], y[rt.rank:: rt.world_size])
        loss = sft_step_loss(train_model, train, rows, rt, config.grad_accum, scaler, corpus_batch, config.corpus_mix)
        check_finite(loss, "sft", f"at step {step}")
        clip_and_step(optimizer, scaler, model.parameters(), config.grad_clip)
        metrics = {"step": step, "loss": loss}
        if (step + 1) % config.eval_interval == 0 or step == config.sft_steps - 1:
            val_loss = sft_val_loss(model, val, rt)
            metrics["val_loss"] = val_loss
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}")
        log.log(**metrics)
        if stopper.after_step(step + 1, config.sft_steps, model, optimizer, scaler, rng, offset=offset, phase="sft",
                              order=torch.from_numpy(order), pos=pos, val_loss0=val_loss0):
            print0(f"stopped after SFT step {step + 1}: resume with --resume=True")
            return None
    model.eval()
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "sft", "model.pt"), model, tok, config,
                        stage="sft", step=config.sft_steps, val_loss=val_loss)
    return val_loss0, val_loss


def check_batch_split(config: Config, rt):
    """A step's demonstrations and corpus windows must split evenly over micro-steps and processes."""
    if config.batch_size % (config.grad_accum * rt.world_size):
        raise SystemExit(f"--batch_size={config.batch_size} must be a multiple of grad_accum x processes "
                         f"({config.grad_accum} x {rt.world_size})")
    if config.corpus_mix > 0 and config.corpus_mix_batch % rt.world_size:
        raise SystemExit(f"--corpus_mix_batch={config.corpus_mix_batch} must be a multiple of the number of "
                         f"processes ({rt.world_size})")


def report(config: Config, model, tok, rt, eval_rows, val_rows, judge, corpus_val, val_loss0: float,
           val_loss: float, t0: float) -> dict:
    """SFT on held-out prompts: validation loss, samples and their judge scores (if there is a judge), and the
    corpus loss of the base model and of SFT (how much of its language model SFT kept); printed, and written
    to out/sft/eval.json."""
    samples = sample_responses(unwrap(model), tok, eval_rows, config.max_new_tokens, config.eval_temperature,
                               seed=config.seed, runtime=rt)
    result = {
        **sft_report(samples, val_rows, judge),
        "sft_val_loss_before": val_loss0,
        "sft_val_loss": val_loss,
        "n_eval_prompts": len(samples),
        "judge": judge.name if judge is not None else "none",
        "wall_time_s": time.time() - t0,
        "config": asdict(config),
    }
    if corpus_val is not None:
        result["corpus_val_loss"] = corpus_loss(model, corpus_val, model.config.block_size, autocast=rt.autocast)
        base_path = base_checkpoint_path(config.init_from, config.out_dir)
        if os.path.exists(base_path):
            base = load_model(load_checkpoint(base_path, "base model checkpoint"), tok, base_path, rt.device)
            result["base_corpus_val_loss"] = corpus_loss(base, corpus_val, base.config.block_size,
                                                         autocast=rt.autocast)
    if rt.master:
        print(format_sft_report(result, samples))
        write_json(os.path.join(config.out_dir, "sft", "eval.json"), result)
    return result


def main(config: Config) -> dict:
    t0 = time.time()
    inputs = read_sft_inputs(config)  # every file this run reads, before pretraining can replace out/base/model.pt
    tok, corpus, corpus_val, state = inputs.tok, inputs.corpus, inputs.corpus_val, inputs.state
    rt = compute_init(config.device, config.dtype, config.seed)
    check_batch_split(config, rt)
    if state is not None:  # the model as it was saved; the rest of the config comes from this command line
        model = model_from_checkpoint(state, tok, where=resume_path(config.out_dir, "sft")).to(rt.device)
        print0(f"resuming {state['phase']} at step {state['step']} from {resume_path(config.out_dir, 'sft')}")
    else:
        model = build_base_model(config, tok, inputs.init_ckpt).to(rt.device)
    print0(f"model: {model.num_params() / 1e6:.2f}M parameters, vocab {model.config.vocab_size}, "
           f"context {model.config.block_size}; device {rt.device}, {rt.world_size} process(es)")

    with Stopper(config, rt, "sft", tok) as stopper:
        if not config.init_from and (state is None or state["phase"] == "pretrain"):
            if not pretrain(model, config, tok, rt, corpus, corpus_val, stopper, state):
                return {"interrupted": True, "phase": "pretrain"}
            state = None
        losses = sft(model, config, tok, rt, inputs.train, inputs.val, stopper, state, corpus)
        if losses is None:
            return {"interrupted": True, "phase": "sft"}
    val_loss0, val_loss = losses
    remove_resume(config.out_dir, "sft", rt)
    return report(config, model, tok, rt, inputs.eval_rows, inputs.val_rows, inputs.judge, corpus_val, val_loss0,
                  val_loss, t0)


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
