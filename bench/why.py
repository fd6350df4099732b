"""Why three of PPO's choices: the run without each, beside the run with it (the tutorial's "Why these choices,
measured").

    python bench/why.py                         # from out/sft and out/rm, 100 iterations of plain RLHF each
    python bench/why.py --iterations=60 --only=no_kl,value_from_sft

Each variant runs `train_ppo.py --rounds=1` (one RM, no later rounds) from the same SFT model and RM, changing one
thing:
- as_is: the code as it is (β = 0.1, value model started from the RM, advantages whitened);
- no_kl: `--kl_coef=0`, no KL penalty: nothing holds the policy near SFT, so it can over-optimise the RM;
- value_from_sft: the value model started from the SFT model with a fresh scalar head (as a reward model is made,
  tutorial §1.6) instead of from the RM;
- no_whitening: the GAE advantages used as they are, not whitened (minigpt_rlhf.rollout.compute_advantages).
It prints, per run, the rollouts' RM and gold scores and KL, averaged over the first and last 10 iterations, and
the value model's explained variance over the first 5 and last 10 (out/ppo/log.jsonl's keys). Gold is the
world's hidden labeler: never trained on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from break_it import ppo_run  # noqa: E402

import train_ppo  # noqa: E402
from minigpt_rlhf import rollout  # noqa: E402
from minigpt_rlhf.model import swap_unembedding  # noqa: E402

VARIANTS = ("as_is", "no_kl", "value_from_sft", "no_whitening")


def run(variant: str, out: str, work: str, iterations: int) -> list[dict]:
    """One variant's run (break_it.ppo_run: plain RLHF from out/sft and out/rm in `work`); the log's rows."""
    original_load, original_whiten = train_ppo.load_model, rollout.ppo.masked_whiten
    sft_ckpt_path = os.path.join(work, "sft", "model.pt")
    if variant == "value_from_sft":
        def load(ckpt, tok, where, device, trainable=False):
            model = original_load(ckpt, tok, where, device, trainable)
            if trainable and model.config.head == "scalar":  # the value model: SFT with a fresh scalar head
                from minigpt_rlhf.checkpoint import load_checkpoint
                sft = original_load(load_checkpoint(sft_ckpt_path), tok, sft_ckpt_path, device, trainable=True)
                model = swap_unembedding(sft).to(device).eval()
            return model
        train_ppo.load_model = load
    if variant == "no_whitening":
        rollout.ppo.masked_whiten = lambda x, mask, **kw: x.masked_fill(mask == 0, 0)
    try:
        return ppo_run(out, work, iterations, *(["--kl_coef=0"] if variant == "no_kl" else []))
    finally:
        train_ppo.load_model, rollout.ppo.masked_whiten = original_load, original_whiten


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/ and rm/ are")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    work = tempfile.mkdtemp()
    print("| run | RM score first 10 → last 10 | gold first 10 → last 10 | KL last 10 | explained variance "
          "first 5 → last 10 |\n|---|---|---|---|---|")
    for name in names:
        rows = run(name, args.out_dir, os.path.join(work, "run"), args.iterations)

        def mean(key, part):
            return float(np.mean([r[key] for r in part]))

        first, last = rows[:10], rows[-10:]
        print(f"| {name} | {mean('rm_score', first):.2f} → {mean('rm_score', last):.2f} | "
              f"{mean('gold_score', first):.3f} → {mean('gold_score', last):.3f} | {mean('kl', last):.2f} | "
              f"{mean('explained_variance', rows[:5]):.2f} → {mean('explained_variance', last):.2f} |", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
