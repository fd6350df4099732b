"""Samples/s of the sampling the pipeline does most: many short responses to real prompts, as train_rm.py's
comparison collection, train_sft.py's and train_ppo.py's evaluations do (sample_responses), with batches of
64 or 256 prompts, and with finished rows kept in the batch to the last step or dropped from it.

    python bench/bench_collect.py                         # checkpoints in out/ (run train_sft.py first)
    python bench/bench_collect.py --out_dir=out --prompts=600 --repeats=5

Responses end at EOS after very different numbers of tokens (a one-word answer, a list with filler), and a
batch runs until its longest response ends: without dropping, most rows of a late step are finished rows
that are computed and thrown away. Every variant samples the same prompts (the RM prompts, each twice, as K
samples of one prompt are) at the same temperature; in each round every variant runs once, so drift of the
machine affects all alike; the median over rounds is reported. Samples differ between variants (fewer rows
draw fewer random numbers), so mean tokens per response is printed to show the work is the same.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from minigpt_rlhf.data import read_prompts  # noqa: E402
from minigpt_rlhf.evaluate import sample_responses  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402

VARIANTS = [(64, False), (64, True), (256, False), (256, True)]  # (batch_size, drop_finished)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/model.pt is")
    p.add_argument("--data_dir", default=str(ROOT / "data"))
    p.add_argument("--prompts", type=int, default=600, help="RM prompts to sample (each twice)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok = get_tokenizer()
    path = os.path.join(args.out_dir, "sft", "model.pt")
    sft = model_from_checkpoint(load_checkpoint(path, "SFT checkpoint", "Run `python train_sft.py` first."),
                                tok, where=path).eval()
    rows = read_prompts(os.path.join(args.data_dir, "rm_prompts.jsonl"))  # ordered by task family
    rows = rows[:: max(1, len(rows) // args.prompts)][: args.prompts]  # an even spread over the families
    rows = [r for r in rows for _ in range(2)]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"{len(rows)} samples per variant, T = {args.temperature}, max {args.max_new_tokens} new tokens")

    def run(batch, drop, seed):
        t0 = time.perf_counter()
        out = sample_responses(sft, tok, rows, args.max_new_tokens, args.temperature, batch_size=batch,
                               seed=seed, drop_finished=drop)
        return time.perf_counter() - t0, sum(o["n_tokens"] for o in out) / len(out)

    for v in VARIANTS:  # warm-up
        run(*v, seed=0)
    times = {v: [] for v in VARIANTS}
    tokens = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in VARIANTS:
            dt, n = run(*v, seed=r + 1)
            times[v].append(dt)
            tokens[v].append(n)
    base = statistics.median(times[VARIANTS[0]])
    print(f"{'batch':>5}  {'finished rows':<13}  {'median s':>8}  {'samples/s':>9}  {'tokens/response':>15}  speedup")
    for v in VARIANTS:
        med = statistics.median(times[v])
        print(f"{v[0]:>5}  {'dropped' if v[1] else 'kept':<13}  {med:8.2f}  {len(rows) / med:9.0f}  "
              f"{statistics.fmean(tokens[v]):15.2f}  {base / med:6.2f}x")


if __name__ == "__main__":
    main()
