"""How far could re-ranking the SFT model's own samples go? Best-of-n by the reward model against best-of-n
by the gold labeler: what a policy that re-ranks SFT's samples reaches with this RM (no training involved).

    python bench/best_of_n.py                   # checkpoints in out/, n up to 8
    python bench/best_of_n.py --out_dir=out --n=16

For each held-out evaluation prompt, the SFT model samples n responses at the evaluation temperature. The
"policy" best-of-k answers with the one of the first k samples that the RM scores highest (a response without
EOS gets train_ppo's no-EOS penalty), or, as an upper bound, the one the gold labeler scores highest. Each
is judged against one SFT sample of its prompt (seed 1; one sample per prompt, where train_ppo.py's report takes
four), with the same win rate (ties count 1/2). Best-of-n is the policy that the KL-regularised RL objective
approximates, at a KL of at most log n - (n - 1) / n nats (Stiennon et al. 2020, appendix; Beirami et al. 2024:
a bound, reached only when no response repeats; lab.py measures it), so if the RM's best-of-n stalls, PPO
against that RM stalls too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_ppo  # noqa: E402
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from minigpt_rlhf.data import encode_prompts, read_prompts  # noqa: E402
from minigpt_rlhf.evaluate import judge_scores, sample_responses, win_outcomes, win_rate  # noqa: E402
from minigpt_rlhf.frontier import best_of_n_kl  # noqa: E402
from minigpt_rlhf.judge import world_scorer  # noqa: E402
from minigpt_rlhf.plot import plot_overoptimization  # noqa: E402
from minigpt_rlhf.reward import encode_responses, score_comparisons  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402


@torch.no_grad()
def rm_scores(rm, tok, samples, no_eos_penalty: float) -> np.ndarray:
    """The RM's score at EOS of each sample, or the no-EOS penalty for a response cut off without EOS. (P,)"""
    enc = [encode_responses(tok, s["prompt"], [s["response"]], [s["ended"]]) for s in samples]
    scores = torch.cat([score_comparisons(rm, enc[i: i + 64], tok.pad_id, "cpu") for i in range(0, len(enc), 64)])
    ended = torch.tensor([s["ended"] for s in samples])
    return torch.where(ended, scores.float(), torch.tensor(no_eos_penalty)).numpy()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/model.pt and rm/model.pt are")
    p.add_argument("--data_dir", default=str(ROOT / "data"))
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = train_ppo.Config()
    tok = get_tokenizer()
    sft = model_from_checkpoint(load_checkpoint(os.path.join(args.out_dir, "sft", "model.pt")), tok).eval()
    rm = model_from_checkpoint(load_checkpoint(os.path.join(args.out_dir, "rm", "model.pt")), tok).eval()
    rows, _ = encode_prompts(tok, read_prompts(os.path.join(args.data_dir, "eval_prompts.jsonl")),
                             cfg.max_prompt_len, "eval_prompts.jsonl")
    T, N = cfg.eval_temperature, cfg.max_new_tokens
    gold_labeler = world_scorer()
    reference = np.array(judge_scores(gold_labeler, sample_responses(sft, tok, rows, N, T, seed=1)))  # PPO's opponent
    samples = [sample_responses(sft, tok, rows, N, T, seed=100 + j) for j in range(args.n)]
    gold = np.array([judge_scores(gold_labeler, s) for s in samples]).T  # (P, n)
    rm_score = np.array([rm_scores(rm, tok, s, cfg.no_eos_penalty) for s in samples]).T  # (P, n)
    print(f"{len(rows)} held-out prompts, {args.n} SFT samples each at T={T}; SFT sample gold {reference.mean():.3f}")
    print("\n| k | KL bound (nats) | best-of-k by RM: win rate | its gold | best-of-k by gold: win rate | its gold |")
    print("|---:|---:|---:|---:|---:|---:|")
    k = 1
    curve = {"k": [], "sqrt_kl": [], "gold_by_rm": [], "gold_by_gold": []}
    while k <= args.n:
        by_rm = gold[np.arange(len(gold)), rm_score[:, :k].argmax(1)]  # (P,) gold of the RM's pick
        by_gold = gold[:, :k].max(1)  # (P,)
        kl = best_of_n_kl(k)  # an upper bound on KL(best-of-k || SFT) (Beirami et al. 2024)
        print(f"| {k} | {kl:.2f} | {win_rate(win_outcomes(by_rm, reference))[0]:.3f} | {by_rm.mean():.3f} | "
              f"{win_rate(win_outcomes(by_gold, reference))[0]:.3f} | {by_gold.mean():.3f} |")
        for key, v in (("k", k), ("sqrt_kl", float(np.sqrt(kl))), ("gold_by_rm", float(by_rm.mean())),
                       ("gold_by_gold", float(by_gold.mean()))):
            curve[key].append(v)
        k *= 2
    ppo_curve = os.path.join(args.out_dir, "ppo", "overoptimization.json")
    if os.path.exists(ppo_curve):  # PPO's rollouts and best-of-n on the same axes
        with open(ppo_curve) as f:
            data = json.load(f)
        path = plot_overoptimization(data, os.path.join(args.out_dir, "ppo", "overoptimization_best_of_n.png"), curve)
        print(f"wrote {path}" if path else "matplotlib is not installed: no picture")


if __name__ == "__main__":
    main()
