"""What a run shows with each "break it" exercise applied (docs/exercises.md): the figures of that page.

    python bench/break_it.py                       # every exercise, on the checkpoints in out/ (sft/, rm/)
    python bench/break_it.py --only=late_score,unclipped_ratio --iterations=8

Each PPO exercise runs `train_ppo.py` for a few iterations of plain RLHF (one RM) from out/sft and out/rm, once
as the code is and once with the one line broken (tests/exercises.py applies it in this process), and prints the
log keys that show it: the first minibatch's ratio and approx-KL, the KL to SFT, the rollouts' RM and gold scores.
The pairwise-reader exercise trains an RM for one epoch on pairwise comparisons (each K-wise comparison's best
against its worst response) and prints its held-out accuracy against the labels and against the gold order.
The PAD == EOS exercise exports the RM and prints how far the transformers model's scores are from ours (needs
transformers and safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from exercises import BY_NAME, EXERCISES, apply  # noqa: E402

import train_ppo  # noqa: E402
import train_rm  # noqa: E402
from minigpt_rlhf.config import parse_config  # noqa: E402

PPO_KEYS = ("first_ratio_mean", "first_approx_kl", "clipfrac", "kl", "rm_score", "gold_score")


def ppo_run(out: str, work: str, iterations: int, *options: str) -> list[dict]:
    """Plain RLHF (one RM, no report) for a few iterations from out/sft and out/rm, in a scratch output folder
    `work`, with train_ppo.py's `options` added; the log's iteration rows. bench/why.py runs its variants so too."""
    shutil.rmtree(work, ignore_errors=True)
    for stage in ("sft", "rm"):
        os.makedirs(os.path.join(work, stage))
        shutil.copy2(os.path.join(out, stage, "model.pt"), os.path.join(work, stage, "model.pt"))
    cfg = parse_config(train_ppo.Config, [f"--out_dir={work}", "--rounds=1", f"--iterations={iterations}",
                                          "--report=False", "--few_shot=0", "--control_temperatures=",
                                          "--sample_every=0", *options], train_ppo.PRESETS)
    train_ppo.main(cfg)
    return [json.loads(line) for line in open(os.path.join(work, "ppo", "log.jsonl")) if "first_ratio_mean" in line]


def summary(rows: list[dict]) -> str:
    first, last = rows[0], rows[-1]
    return (f"iteration 1: ratio {first['first_ratio_mean']:.4f}, approx_kl {first['first_approx_kl']:.2e}, "
            f"clipfrac {first['clipfrac']:.3f}; iteration {len(rows)}: KL {last['kl']:.2f}, RM score "
            f"{rows[0]['rm_score']:.2f} -> {last['rm_score']:.2f}, gold {rows[0]['gold_score']:.3f} -> "
            f"{last['gold_score']:.3f}")


def rm_run(out: str, work: str) -> dict:
    """One RM epoch on pairwise comparisons (best vs worst of each of out/rm's); held-out accuracy against the
    labels (read by the same reader, so a swap there flips them too) and against the gold order."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rows = [json.loads(line) for line in open(os.path.join(out, "rm", "comparisons.jsonl"))]
    pairs = os.path.join(work, "pairs.jsonl")
    with open(pairs, "w") as f:
        for r in rows:
            best, worst = r["ranking"][0], r["ranking"][-1]
            f.write(json.dumps({"prompt": r["prompt"], "chosen": r["responses"][best],
                                "rejected": r["responses"][worst]}) + "\n")
    cfg = parse_config(train_rm.Config, [f"--out_dir={work}", f"--sft_checkpoint={out}/sft/model.pt",
                                         f"--comparisons={pairs}", "--epochs=1"], train_rm.PRESETS)
    return train_rm.main(cfg)


def export_gap(out: str, work: str) -> float:
    """Largest |transformers score - our score| of the exported RM on four right-padded responses."""
    import transformers

    from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint
    from minigpt_rlhf.export import export_model
    from minigpt_rlhf.reward import collate_sequences, encode_responses, reward_at_eos
    from minigpt_rlhf.tokenizer import get_tokenizer

    tok = get_tokenizer()
    rm = model_from_checkpoint(load_checkpoint(os.path.join(out, "rm", "model.pt")), tok).eval()
    shutil.rmtree(work, ignore_errors=True)
    export_model(rm, tok, work)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(work).eval()
    seqs = encode_responses(tok, "What is the capital of Zorvia?", ["Mellow.", "The capital of Zorvia is Mellow.",
                                                                    "No.", "Sure! Mellow. I hope this helps."])
    tokens, mask = collate_sequences(seqs, tok.pad_id)
    with torch.no_grad():
        return float((hf(input_ids=tokens, attention_mask=mask).logits.squeeze(-1)
                      - reward_at_eos(rm, tokens, mask)).abs().max())


def measure(name: str, out: str, work: str, iterations: int) -> str:
    if name == "swapped_pair":
        ev = rm_run(out, work)
        return (f"held-out accuracy vs the labels {ev['accuracy_vs_labels']:.3f}, vs the gold order "
                f"{ev['accuracy_vs_gold']:.3f}")
    if name == "pad_is_eos":
        return f"largest |transformers - ours| RM score {export_gap(out, work):.3f}"
    return summary(ppo_run(out, work, iterations))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/ and rm/ are")
    p.add_argument("--only", default="", help="comma-separated exercise names (default: all)")
    p.add_argument("--iterations", type=int, default=8, help="PPO iterations per run")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or [e.name for e in EXERCISES]
    work = tempfile.mkdtemp()
    results = {}
    baselines = {}
    for name in names:
        kind = "rm" if name == "swapped_pair" else "export" if name == "pad_is_eos" else "ppo"
        if kind not in baselines:
            baselines[kind] = measure(name, args.out_dir, os.path.join(work, "run"), args.iterations)
            print(f"as the code is ({kind}): {baselines[kind]}", flush=True)
        undo = apply(name)
        try:
            results[name] = measure(name, args.out_dir, os.path.join(work, "run"), args.iterations)
        finally:
            undo()
        print(f"{name} ({BY_NAME[name].title}): {results[name]}", flush=True)
    print("\n| exercise | as the code is | broken |\n|---|---|---|")
    for name in names:
        kind = "rm" if name == "swapped_pair" else "export" if name == "pad_is_eos" else "ppo"
        print(f"| {name} | {baselines[kind]} | {results[name]} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
