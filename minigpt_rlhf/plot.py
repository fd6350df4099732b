"""Learning curves of a run, drawn from the JSONL logs the three scripts write. Needs the optional
matplotlib (`pip install -e ".[plot]"`); nothing else in the package imports this module.

    python -m minigpt_rlhf.plot                          # reads out/, writes out/curves.png
    python -m minigpt_rlhf.plot --out_dir=out --smooth=9

Panels, for the stages whose log exists:
- base LM pretraining and SFT: training loss per step (smoothed), SFT validation loss;
- the RM: ranking loss and training pair accuracy per step;
- PPO: the RM score of each batch of rollouts next to the gold score of the same rollouts. A gap that
  opens while the RM score climbs is reward over-optimisation (Gao et al. 2022); training never sees gold;
- PPO: KL(policy || SFT) per response (k1) and the KL coefficient beta;
- PPO: the update's diagnostics, clipfrac and approx_kl (old vs new policy), and the policy's entropy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .data import iter_jsonl


def read_log(path) -> dict[str, np.ndarray]:
    """The numeric columns of a JSONL log: key -> (n_lines,) float array, nan where a line lacks the key
    (SFT logs its validation loss only every eval_interval steps)."""
    rows = [obj for _, obj in iter_jsonl(path)]
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {k: np.array([float(r[k]) if isinstance(r.get(k), (int, float)) else np.nan for r in rows]) for k in keys}


def moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last min(k, i + 1) values at each i: a trailing window, so early points are not shifted
    and the curve ends at the latest value's window. PPO's per-iteration scores are means over only one
    batch of rollouts, noisy enough to need it."""
    if k <= 1:
        return x.astype(float)
    c = np.cumsum(np.insert(x.astype(float), 0, 0.0))
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - k, 0)
    return (c[i] - c[lo]) / (i - lo)


@dataclass
class Config:
    out_dir: str = "out"  # a run's output root: base/, sft/, rm/, ppo/ each with its log.jsonl
    output: str = ""  # the image to write (.png, .pdf, .svg); default {out_dir}/curves.png
    smooth: int = 9  # trailing moving-average window over steps / iterations (1 = raw)


def plot_run(config: Config) -> str:
    """Draw the panels of the stages that have a log; returns the path written."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit('plotting needs matplotlib: pip install -e ".[plot]" (or pip install matplotlib)') from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    logs = {}
    for stage in ("base", "sft", "rm", "ppo"):
        path = os.path.join(config.out_dir, stage, "log.jsonl")
        if os.path.exists(path):
            logs[stage] = read_log(path)
    if not logs:
        raise SystemExit(f"{config.out_dir}: no base/, sft/, rm/ or ppo/ log.jsonl here; run a train_*.py first "
                         "or pass --out_dir")
    k = config.smooth
    panels = []
    if "base" in logs or "sft" in logs:
        panels.append("lm")
    if "rm" in logs:
        panels.append("rm")
    if "ppo" in logs:
        panels += ["reward", "kl", "update"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "lm":
            offset = 0
            for stage, label in (("base", "pretraining loss"), ("sft", "SFT loss")):
                if stage in logs and "loss" in logs[stage]:
                    log = logs[stage]
                    x = offset + np.arange(len(log["loss"]))
                    ax.plot(x, moving_average(log["loss"], k), label=label)
                    if "val_loss" in log:
                        has = ~np.isnan(log["val_loss"])
                        ax.plot(x[has], log["val_loss"][has], "o-", ms=3, label="SFT validation loss")
                    offset += len(log["loss"])
            ax.set(xlabel="optimizer step", ylabel="next-token loss (nats)", title="base LM, then SFT")
        elif panel == "rm":
            log = logs["rm"]
            steps = ~np.isnan(log["loss"])  # the training steps' lines (an epoch's held-out line has none)
            ax.plot(log["step"][steps], moving_average(log["loss"][steps], k), label="K-wise ranking loss")
            ax.plot(log["step"][steps], moving_average(log["accuracy"][steps], k), label="training pair accuracy")
            if "val_loss" in log:
                epochs = ~np.isnan(log["val_loss"])
                ax.plot(log["step"][epochs], log["val_loss"][epochs], "o-", ms=3, label="validation loss (per epoch)")
            ax.set(xlabel="optimizer step", title="reward model")
        elif panel == "reward":
            log = logs["ppo"]
            ax.plot(moving_average(log["rm_score"], k), label="RM score (trained on)")
            ax.plot(moving_average(log["gold_score"], k), label="gold score (never seen)")
            ax.set(xlabel="PPO iteration", title="rollouts: RM vs gold")
        elif panel == "kl":
            log = logs["ppo"]
            ax.plot(moving_average(log["kl"], k), label="KL(policy || SFT), nats")
            ax.plot(log["kl_coef"], label="beta (KL coefficient)")
            ax.set(xlabel="PPO iteration", title="KL penalty")
        else:
            log = logs["ppo"]
            for key in ("clipfrac", "approx_kl", "entropy"):
                if key in log:
                    ax.plot(moving_average(log[key], k), label=key)
            ax.set(xlabel="PPO iteration", title="PPO update")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = config.output or os.path.join(config.out_dir, "curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overoptimization_data(ppo_log, smooth: int = 5) -> dict:
    """The over-optimisation picture of a PPO run (Gao et al. 2022): the rollouts' gold score (with a judge) and
    RM score against d = sqrt(KL(policy || SFT)), one point per iteration, each a trailing mean over `smooth`
    iterations (one batch of rollouts is noisy). KL is the batch mean of the per-response sum of k1."""
    log = read_log(ppo_log)
    kl = np.maximum(moving_average(log["kl"], smooth), 0.0)  # k1 can dip below 0 by noise near d = 0
    out = {"sqrt_kl": np.sqrt(kl).tolist()}
    for key in ("gold_score", "rm_score"):  # gold only with a judge
        if key in log:
            out[key] = moving_average(log[key], smooth).tolist()
    return out


def plot_overoptimization(data: dict, output: str, best_of_n: dict | None = None) -> str | None:
    """Draw `overoptimization_data` (and, if given, best-of-n by RM and by gold: {"sqrt_kl", "gold_by_rm",
    "gold_by_gold"} from bench/best_of_n.py) on one pair of axes. Returns the path, or None without matplotlib
    (the data is written either way)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    if "gold_score" in data:
        ax.plot(data["sqrt_kl"], data["gold_score"], "o-", ms=3, label="PPO rollouts: gold score")
    ax.plot(data["sqrt_kl"], data["rm_score"], "o-", ms=3, alpha=0.6, label="PPO rollouts: RM score")
    if best_of_n:
        ax.plot(best_of_n["sqrt_kl"], best_of_n["gold_by_rm"], "s--", ms=4, label="best-of-n by RM: gold")
        ax.plot(best_of_n["sqrt_kl"], best_of_n["gold_by_gold"], "^:", ms=4, label="best-of-n by gold: gold")
    ax.set(xlabel="sqrt(KL to SFT) (sqrt nats)", ylabel="score", title="over-optimisation (Gao et al. 2022)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


if __name__ == "__main__":
    from .common import run_script
    from .config import parse_config

    run_script(lambda c: print(f"wrote {plot_run(c)}"), parse_config(Config))
