"""The spread of the default run's headline figures over training seeds.

    python bench/seeds.py                                   # seeds 1337, 1, 2: `python train_ppo.py --seed=S` each
    python bench/seeds.py --seeds=1337,1,2,3 -- --rounds=3  # options after -- go to every train_ppo.py run
    python bench/seeds.py --preset=tiny --seeds=1,2         # a smoke test at the tiny preset (tests/test_bench.py)

A win rate's 95 % interval in the report is a bootstrap over the held-out prompts: it covers evaluation noise
only, the luck of which prompts and samples were drawn, for one trained pipeline. Another training seed gives
another SFT model, other comparisons, another RM and another PPO run. Each seed here runs the whole pipeline
from nothing (`train_ppo.py --seed=S` in a folder of its own: pretraining, SFT, comparisons, RM, PPO, report),
and the script prints each headline figure for every seed with its mean, standard deviation (n - 1) and range.
Results go to --work_dir/results.json, and what each run printed to --work_dir/seed_S/train_ppo.log.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (label, where, key): the figures of a run, read from its eval.json files and PPO's log
FIGURES = [
    ("gold win rate of PPO over SFT", "ppo", "win_rate_vs_sft"),
    ("... over SFT at its best temperature", "ppo", "win_rate_vs_sft_best_t"),
    ("... over the prompted base model", "ppo", "win_rate_vs_base"),
    ("gold score, SFT", "ppo", "gold_score_sft"),
    ("gold score, SFT at its best temperature", "ppo", "gold_score_sft_best_t"),
    ("gold score, PPO", "ppo", "gold_score_ppo"),
    ("SFT's best temperature", "ppo", "sft_best_temperature"),
    ("KL(PPO || SFT), nats", "ppo", "kl_from_sft"),
    ("RM accuracy vs gold (validation)", "rm", "accuracy_vs_gold"),
    ("rollouts' gold, last iterations - first", "log", "gold_rise"),
    ("corpus loss, SFT / base", "sft", "corpus_loss_ratio"),
    ("wall time of the pipeline, s", "ppo", "wall_time_s"),
]


def gold_rise(log_path: Path) -> float | None:
    """Mean gold score of the rollouts of the last k iterations minus that of the first k (k = 5, or half the
    iterations if there are fewer than 10)."""
    gold = [row["gold_score"] for row in map(json.loads, log_path.read_text().splitlines()) if "gold_score" in row]
    k = min(5, len(gold) // 2)
    return float(np.mean(gold[-k:]) - np.mean(gold[:k])) if k else None


def figures(run: Path) -> dict:
    """The headline figures of one finished run in folder `run`."""
    ev = {stage: json.loads((run / stage / "eval.json").read_text()) for stage in ("sft", "rm", "ppo")}
    sft = ev["sft"]
    ev["sft"] = {"corpus_loss_ratio": sft["corpus_val_loss"] / sft["base_corpus_val_loss"]
                 if "base_corpus_val_loss" in sft else None}
    ev["log"] = {"gold_rise": gold_rise(run / "ppo" / "log.jsonl")}
    return {key: ev[where].get(key) for _, where, key in FIGURES}


def spread(values: list[float | None]) -> dict:
    """Mean, standard deviation (n - 1) and range of the values that are there."""
    x = np.array([v for v in values if v is not None], dtype=float)
    if not len(x):
        return {}
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max())}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1337,1,2", help="comma-separated training seeds")
    p.add_argument("--preset", default="laptop", help="train_ppo.py preset")
    p.add_argument("--work_dir", default="/tmp/seeds", help="one folder per seed, and results.json")
    p.add_argument("ppo_args", nargs="*", help="more train_ppo.py options, after --")
    return p.parse_args(argv)


def main(args) -> dict:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = Path(args.work_dir)
    runs = {}
    for seed in seeds:
        run = work / f"seed_{seed}"
        cmd = [sys.executable, "train_ppo.py", f"--preset={args.preset}", f"--seed={seed}", f"--out_dir={run}",
               *args.ppo_args]
        print("+ " + " ".join(cmd[1:]), flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        run.mkdir(parents=True, exist_ok=True)
        (run / "train_ppo.log").write_text(proc.stdout)  # what the run printed (its report last)
        if proc.returncode != 0:
            raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
        runs[seed] = figures(run)
        print(f"seed {seed}: {time.time() - t0:.0f}s, win rate over SFT {runs[seed]['win_rate_vs_sft']:.3f}",
              flush=True)
    results = {"seeds": seeds, "preset": args.preset, "ppo_args": args.ppo_args,
               "runs": {str(s): runs[s] for s in seeds},
               "spread": {key: spread([runs[s][key] for s in seeds]) for _, _, key in FIGURES}}
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))

    def cell(v):
        return "" if v is None else f"{v:.3f}"

    print(f"\n| figure | {' | '.join(f'seed {s}' for s in seeds)} | mean | std | range |")
    print("|---|" + "---:|" * (len(seeds) + 3))
    for label, _, key in FIGURES:
        sp = results["spread"][key]
        rng = f"{cell(sp.get('min'))}-{cell(sp.get('max'))}" if sp else ""
        print(f"| {label} | {' | '.join(cell(runs[s][key]) for s in seeds)} | {cell(sp.get('mean'))} | "
              f"{cell(sp.get('std'))} | {rng} |")
    return results


if __name__ == "__main__":
    main(parse_args())
