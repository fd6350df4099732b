"""PPO against the gold labeler itself: what the default PPO reaches when its reward model is perfect.

    python bench/ppo_gold_reward.py                               # checkpoints of the default run in out/
    python bench/ppo_gold_reward.py --work_dir=/tmp/gold -- --lr=1e-4 --kl_coef=0.02   # options for train_ppo.py

`train_ppo.main` runs with every default, on the SFT model and RM of --out_dir (copied into --work_dir, so
out/ppo is left alone), with one change: the score of each rollout that emitted EOS is the world's gold score
instead of the RM's, normalised as the RM is (train_rm.py): minus the mean gold score of a seeded sample of the
SFT demonstrations, divided by the standard deviation of the gold scores of SFT samples on PPO prompts. The
value model still starts from the RM, the KL penalty, the no-EOS penalty and the final evaluation are
train_ppo.py's. If the held-out win rate over SFT is no higher than with the RM, the RM is not what bounds it.

Diagnostic only: the gold labeler is the hidden judge of the world and training never reads it otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_ppo  # noqa: E402
from minigpt_rlhf.checkpoint import load_checkpoint, load_model  # noqa: E402
from minigpt_rlhf.config import parse_config  # noqa: E402
from minigpt_rlhf.data import encode_prompts, read_prompts, read_sft  # noqa: E402
from minigpt_rlhf.evaluate import sample_responses  # noqa: E402
from minigpt_rlhf.reward import normalization_demos  # noqa: E402
from minigpt_rlhf.rollout import decode_responses  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402
from minigpt_rlhf.world.gold import gold_score  # noqa: E402


def gold_normalisation(out_dir: str, data_dir: str, cfg, tok, n: int = 512) -> tuple[float, float]:
    """(shift, scale): the mean gold score of n seeded demonstrations (train_rm's n_norm_demos sample), and the
    std of the gold scores of n SFT samples of PPO prompts at the rollout temperature."""
    demos = normalization_demos(read_sft(os.path.join(data_dir, "sft_train.jsonl")), n, cfg.seed)
    shift = float(np.mean([gold_score(d["prompt"], d["response"]) for d in demos]))
    sft_path = os.path.join(out_dir, "sft", "model.pt")
    sft = load_model(load_checkpoint(sft_path), tok, sft_path, "cpu")
    rows = read_prompts(os.path.join(data_dir, "ppo_prompts.jsonl"))
    rows = [rows[i] for i in np.random.default_rng(cfg.seed).permutation(len(rows))[:n]]
    samples = sample_responses(sft, tok, rows, cfg.max_new_tokens, cfg.temperature, seed=cfg.seed)
    scale = float(np.std([gold_score(s["prompt"], s["response"], s["ended"]) for s in samples]))
    return shift, scale


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/model.pt and rm/model.pt are")
    p.add_argument("--data_dir", default=str(ROOT / "data"))
    p.add_argument("--work_dir", default="/tmp/ppo_gold_reward", help="written: sft/ and rm/ (copies), ppo/")
    p.add_argument("ppo_args", nargs="*", help="train_ppo.py options, after --")
    args = p.parse_args()
    work = Path(args.work_dir)
    for stage in ("sft", "rm"):
        shutil.rmtree(work / stage, ignore_errors=True)
        shutil.copytree(Path(args.out_dir) / stage, work / stage)
    config = parse_config(train_ppo.Config, presets=train_ppo.PRESETS,
                          argv=[f"--out_dir={work}", f"--data_dir={args.data_dir}", *args.ppo_args])
    tok = get_tokenizer(config.tokenizer)
    shift, scale = gold_normalisation(args.out_dir, args.data_dir, config, tok)
    print(f"gold reward = (gold - {shift:.3f}) / {scale:.3f}")

    rows, _ = encode_prompts(tok, read_prompts(os.path.join(args.data_dir, "ppo_prompts.jsonl")),
                             config.max_prompt_len)
    prompt_of = {tuple(r["ids"]): r["prompt"] for r in rows}
    rollout = train_ppo.make_rollout

    def gold_rollout(policy, ref, rm, value_model, prompts, tok, *a, **k):
        r = rollout(policy, ref, rm, value_model, prompts, tok, *a, **k)
        texts = decode_responses(r, tok)
        gold = torch.tensor([gold_score(prompt_of[tuple(ids)], t, bool(e))
                             for ids, t, e in zip(prompts, texts, r.ended)])
        r.scores = torch.where(r.ended, (gold - shift) / scale, r.scores)
        return r

    train_ppo.make_rollout = gold_rollout
    train_ppo.main(config)


if __name__ == "__main__":
    main()
