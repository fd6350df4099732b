"""The laboratory's arithmetic (lab.py): best-of-n's picks and KL, curves of a method's settings, values at a
matched KL or a matched training time, the tables, and the frontier picture (with the optional matplotlib).

A result row is one policy: {"method", "setting", "kl", "sqrt_kl", "gold", "win", "win_ci95", "train_s", ...}.
Gao et al. 2022 ("Scaling Laws for Reward Model Overoptimization") plot gold reward against
sqrt(KL(pi || pi_init)); so does this picture, with the SFT model itself at KL 0 on every curve.
"""

from __future__ import annotations

import math

import numpy as np


def best_of_n_kl(n: int) -> float:
    """log n - (n - 1) / n: an upper bound on KL(best-of-n || base), reached when no single sample has appreciable
    probability (Stiennon et al. 2020, appendix; Beirami et al. 2024, "Theoretical guarantees on the best-of-n
    alignment policy"). best_of_n_exact_kl gives the KL itself from the draws."""
    return math.log(n) - (n - 1) / n


def best_of_n_exact_kl(responses: list, scores: list[float], n: int) -> float:
    """KL(best-of-n || base) of the distribution that `responses` (draws of one prompt, repeats included; any
    hashable, e.g. (text, ended)) sample, exactly, with the best of n picked by `scores` (one per draw; a
    repeated response scores alike). Over the distinct responses sorted by score, with p their share of the
    draws and F the share scoring at most as high, the best of n draws scores at a level s with probability
    F(s)^n - F(s-)^n, split among that level's responses in proportion to p (the first drawn of a tie wins); so

        KL = sum over levels of P_bon(level) * log(P_bon(level) / p(level)).

    It reaches the bound log n - (n - 1)/n only when no response has appreciable probability: repeats lower it
    (Beirami et al. 2024)."""
    p, score_of = {}, {}
    for r, s in zip(responses, scores, strict=True):
        p[r] = p.get(r, 0) + 1 / len(responses)
        score_of[r] = s
    levels = {}  # score -> its responses' total share
    for r, share in p.items():
        levels[score_of[r]] = levels.get(score_of[r], 0.0) + share
    kl, below = 0.0, 0.0
    for s in sorted(levels):
        q = min(below + levels[s], 1.0) ** n - below ** n  # P(best of n scores s)
        if q > 0:
            kl += q * math.log(q / levels[s])
        below += levels[s]
    return kl


def best_of_n_picks(draws: list[list[dict]], scores: np.ndarray, n: int) -> list[dict]:
    """Best-of-n: for each sample slot i, the one of its first n draws that scores highest. draws[j][i] is the
    j-th draw for slot i; scores (slots, draws), e.g. the RM's (ties go to the earlier draw)."""
    if not 1 <= n <= len(draws):
        raise ValueError(f"best-of-{n} needs 1..{len(draws)} draws")
    best = np.asarray(scores)[:, :n].argmax(1)  # (slots,)
    return [draws[j][i] for i, j in enumerate(best.tolist())]


def interpolate(xs, ys, x: float) -> float | None:
    """The value at x of the piecewise-linear curve through (xs, ys), or None outside the curve's range (no
    extrapolation: a method not run that far has no value there). Points are sorted by x first."""
    order = np.argsort(np.asarray(xs, dtype=float), kind="stable")
    xs, ys = np.asarray(xs, dtype=float)[order], np.asarray(ys, dtype=float)[order]
    if len(xs) == 0 or x < xs[0] - 1e-12 or x > xs[-1] + 1e-12:
        return None
    return float(np.interp(x, xs, ys))


def method_curve(rows: list[dict], method: str, x_key: str, y_key: str, origin: dict | None = None):
    """(xs, ys) of one method's rows, with the origin row (SFT: KL 0, no training) first if given."""
    pts = ([origin] if origin is not None else []) + [r for r in rows if r["method"] == method]
    pts = [p for p in pts if p.get(x_key) is not None and p.get(y_key) is not None]
    return [p[x_key] for p in pts], [p[y_key] for p in pts]


def matched(rows: list[dict], methods: list[str], x_key: str, levels: list[float], y_keys: tuple[str, ...],
            origin: dict | None = None) -> dict:
    """{method: {f"{level:g}": {y_key: value or None}}}: each method's curve read at each level of x_key."""
    out = {}
    for m in methods:
        out[m] = {}
        for level in levels:
            out[m][f"{level:g}"] = {y: interpolate(*method_curve(rows, m, x_key, y, origin), level) for y in y_keys}
    return out


def _cell(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def format_lab(results: dict) -> str:
    """The printed report: every policy, then the methods at matched sqrt(KL) and at matched training time, and
    each method's cost."""
    from .evaluate import format_table
    rows = results["rows"]
    lines = ["every policy, on the same held-out prompts, samples and judge:",
             format_table(["method", "setting", "sqrt(KL)", "gold", "win vs SFT", "95% CI", "RM score", "train s"],
                          [[r["method"], r["setting"], _cell(r["sqrt_kl"], "{:.2f}"), _cell(r["gold"]),
                            _cell(r["win"]), f"{r['win_ci95'][0]:.3f}-{r['win_ci95'][1]:.3f}",
                            _cell(r.get("rm_score"), "{:.2f}"), _cell(r.get("train_s"), "{:.0f}")] for r in rows])]
    for key, title, unit in (("sqrt_kl", "at matched sqrt(KL(pi || SFT)) (interpolated on each method's curve, "
                              "from SFT at 0; '-': the method did not reach it)", "{:g}"),
                             ("train_s", "at matched training seconds (best-of-n and sharpening train nothing: "
                              "not listed)", "{:g}s")):
        levels = results[f"levels_{key}"]
        table = results[f"matched_{key}"]
        lines += ["", title]
        header = ["method"] + [f"gold @{unit.format(lv)}" for lv in levels] + [f"win @{unit.format(lv)}"
                                                                               for lv in levels]
        body = [[m] + [_cell(table[m][f"{lv:g}"]["gold"]) for lv in levels]
                + [_cell(table[m][f"{lv:g}"]["win"]) for lv in levels] for m in table]
        lines.append(format_table(header, body))
    coef = results.get("kl_coefficients")
    if coef and len(coef) > 1:
        def per_std(c, v):
            return f"{v:.4g}" + (" x group std" if c.get("per_unit_group_std") else "")

        lines += ["", f"KL coefficients in one unit: against the normalised RM score (RM gain {coef['rm_gain']:.3f}) "
                  "and against Bradley-Terry logits, DPO's unit (docs/methods.md, section 1)",
                  format_table(["method", "option", "vs RM score", "in logit units"],
                               [[m, f"beta {c.get('kl_coef', c.get('beta')):g}", per_std(c, c["effective_vs_rm_score"]),
                                 per_std(c, c["in_logit_units"])] for m, c in coef.items() if m != "rm_gain"])]
    cost = results["cost"]
    cuda = any("cuda_peak_memory_mb" in c for c in cost.values())
    lines += ["", "cost per method (one process each; peak memory: the process's maximum resident set"
              + (", and the CUDA memory it allocated at most" if cuda else "") + ")",
              format_table(["method", "s per iteration (or step)", "train s", "peak memory MB"]
                           + (["peak CUDA MB"] if cuda else []),
                           [[m, _cell(c.get("s_per_iteration"), "{:.2f}"), _cell(c.get("train_s"), "{:.0f}"),
                             _cell(c.get("peak_memory_mb"), "{:.0f}")]
                            + ([_cell(c.get("cuda_peak_memory_mb"), "{:.0f}")] if cuda else [])
                            for m, c in cost.items()])]
    return "\n".join(lines)


def plot_frontier(results: dict, path) -> bool:
    """Three panels: gold score and win rate over SFT against sqrt(KL(pi || SFT)), one curve per method, and gold
    against training seconds. Returns False (and draws nothing) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows, origin = results["rows"], results["sft"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for m in results["methods"]:
        for ax, (x, y) in zip(axes, (("sqrt_kl", "gold"), ("sqrt_kl", "win"), ("train_s", "gold"))):
            xs, ys = method_curve(rows, m, x, y, origin)
            if len(xs) > 1:
                # a trained method's points in training order (its KL need not grow at every step), the others'
                # by x
                times, _ = method_curve(rows, m, "train_s", y, origin)
                order = np.arange(len(xs)) if len(times) == len(xs) else np.argsort(xs, kind="stable")
                ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], marker="o", label=m)
    for ax, (xl, yl) in zip(axes, (("sqrt(KL(pi || SFT)), nats^0.5", "gold score"),
                                   ("sqrt(KL(pi || SFT)), nats^0.5", "gold win rate over SFT"),
                                   ("training seconds", "gold score"))):
        ax.set_xlabel(xl), ax.set_ylabel(yl), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("the laboratory: one SFT model, one RM, one gold judge")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
