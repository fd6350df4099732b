"""Data-parallel throughput of the SFT step: run under torchrun with 1 and with 2 processes (bench_ddp.sh).

    torchrun --nproc_per_node=2 bench/bench_ddp.py --threads=1

Each process builds the laptop model, wraps it in DDP (gloo on CPU, NCCL on CUDA) and runs --steps optimizer
steps of train_sft.sft_step_loss on the real demonstrations, --batch_size demonstrations per step over ALL
processes (so more processes = the same work split, not more work). Rank 0 prints the median ms/step and
tokens/s (input positions, padding included) over --repeats rounds after --warmup steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_sft  # noqa: E402
from minigpt_rlhf.common import barrier, compute_cleanup, compute_init, print0  # noqa: E402
from minigpt_rlhf.data import SFTData, read_sft  # noqa: E402
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=32, help="demonstrations per step, over all processes")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rt = compute_init("auto", "auto", 0)
    tok = get_tokenizer()
    c = train_sft.Config()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=c.block_size, vocab_size=((tok.n_vocab + 63) // 64) * 64, n_layer=c.n_layer,
                          n_head=c.n_head, n_embd=c.n_embd, dropout=0.0)).to(rt.device)
    train_model = torch.nn.parallel.DistributedDataParallel(model) if rt.ddp else model
    optimizer = configure_optimizer(model, 1e-4, 0.1, fused=rt.device.type == "cuda")
    data = SFTData(tok, read_sft(ROOT / "data" / "sft_train.jsonl"), c.block_size)
    rng = np.random.default_rng(0)  # the same batches on every rank; each takes its shard

    def step():
        rows = rng.choice(len(data), args.batch_size, replace=False)
        train_sft.sft_step_loss(train_model, data, list(rows), rt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return data.batch(rows)[0].numel()

    for _ in range(args.warmup):
        step()
    times, tokens = [], 0
    for _ in range(args.repeats):
        barrier()
        t0 = time.perf_counter()
        tokens = sum(step() for _ in range(args.steps))
        barrier()
        times.append((time.perf_counter() - t0) / args.steps)
    ms = statistics.median(times) * 1000
    print0(f"processes {rt.world_size}, threads/process {args.threads}, batch {args.batch_size}: "
           f"{ms:.1f} ms/step (rounds: {', '.join(f'{t * 1000:.1f}' for t in times)}), "
           f"{tokens / args.steps / (ms / 1000):.0f} tokens/s")
    compute_cleanup()


if __name__ == "__main__":
    main()
