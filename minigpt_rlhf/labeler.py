"""A simulated labeler that ranks K responses to a prompt from their gold scores, with noise tuned
so that two independent labelers agree as often as InstructGPT's did.

Ouyang et al. 2022 (sec. 5.1 / appendix B): training labelers agreed with each other on
72.6 +/- 1.5 % of comparisons (held-out labelers 77.3 +/- 1.3 %). Our labeler draws a ranking from
the Plackett-Luce model with utilities gold / T, by the Gumbel trick: sort gold_i / T + g_i with
g_i ~ Gumbel(0, 1) i.i.d. (the Gumbel-max trick applied repeatedly; Yellott 1977). Because the
difference of two independent Gumbel(0, 1) variables is Logistic(0, 1), every pair's order is a
Bradley-Terry draw:

    P(i ranked above j) = sigmoid((s_i - s_j) / T)

and two independent labelers agree on that pair with probability p^2 + (1 - p)^2. The temperature
T is chosen by bisection so that this agreement, averaged over all within-prompt pairs, is 72.6 %.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def rank_responses(
    gold_scores: Sequence[float] | np.ndarray, temperature: float, rng: np.random.Generator
) -> list[int]:
    """One Plackett-Luce ranking of K responses, best -> worst: indices sorted by
    gold / T + Gumbel(0, 1) noise, descending.

    temperature 0 gives the exact gold order, ties broken by index (lower index first), and
    draws nothing from rng.
    """
    gold = np.asarray(gold_scores, dtype=np.float64)  # (K,)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        keys = gold
    else:
        keys = gold / temperature + rng.gumbel(size=gold.shape)  # (K,)
    # stable sort of -keys: equal keys keep index order
    return np.argsort(-keys, kind="stable").tolist()


def _agreement_per_pair(gaps: np.ndarray, temperature: float) -> np.ndarray:
    """p^2 + (1 - p)^2 with p = sigmoid(gap / T), written as (1 + tanh(gap / 2T)^2) / 2
    (p - 1/2 = tanh(x/2) / 2), which cannot overflow."""
    if temperature == 0:
        # a T = 0 labeler is deterministic (gold order, ties by index): two of them always agree
        return np.ones_like(gaps)
    return 0.5 * (1.0 + np.tanh(gaps / (2.0 * temperature)) ** 2)


def expected_agreement(score_gaps: Sequence[float] | np.ndarray, temperature: float) -> float:
    """Probability that two independent labelers at this temperature order a pair the same way,
    averaged over pairs: mean_pairs [p^2 + (1 - p)^2], p = sigmoid(gap / T).

    Decreasing in T for every nonzero gap, from 1 (T -> 0) to 1/2 (T -> inf); a zero gap gives 1/2
    for every T > 0. T = 0 gives exactly 1 (the deterministic labeler of rank_responses).
    """
    gaps = np.asarray(score_gaps, dtype=np.float64)
    return float(np.mean(_agreement_per_pair(gaps, temperature)))


def within_group_gaps(groups_of_gold_scores: Sequence[Sequence[float]]) -> np.ndarray:
    """s_i - s_j for every pair i < j inside each group, concatenated. (sum_g C(K_g, 2),)"""
    gaps = []
    for scores in groups_of_gold_scores:
        s = np.asarray(scores, dtype=np.float64)  # (K,)
        i, j = np.triu_indices(len(s), k=1)
        gaps.append(s[i] - s[j])
    return np.concatenate(gaps) if gaps else np.zeros(0)


def calibrate_temperature(
    groups_of_gold_scores: Sequence[Sequence[float]],
    target_agreement: float = 0.726,
    n_iters: int = 200,
) -> float:
    """The labeler temperature T at which expected_agreement over all within-group pairs equals
    target_agreement (InstructGPT's inter-labeler agreement, 72.6 %: Ouyang et al. 2022).

    Bisection on log T, which is valid because the agreement decreases monotonically in T.
    Edge cases:
      - target <= 0.5 or > 1: no temperature reaches it (agreement lies in (1/2, 1]): ValueError.
      - Pairs with equal gold scores stay at 1/2 for every T > 0, so the largest reachable agreement
        is (n_nonzero + n_zero / 2) / n_pairs. If the target is at or above what the smallest
        searched T (1e-6 x the largest gap) gives, that smallest T is returned with a RuntimeWarning
        (so with all gaps zero, 1e-6 is returned: any T > 0 gives 1/2).
    """
    if not 0.5 < target_agreement <= 1.0:
        raise ValueError(f"target_agreement must be in (0.5, 1], got {target_agreement}")
    gaps = np.abs(within_group_gaps(groups_of_gold_scores))
    if gaps.size == 0:
        raise ValueError("no pairs: every group has fewer than 2 responses")
    scale = gaps.max() if gaps.max() > 0 else 1.0
    log_lo, log_hi = np.log(1e-6 * scale), np.log(1e6 * scale)  # agreement(lo) > target > agreement(hi)
    best_reachable = expected_agreement(gaps, float(np.exp(log_lo)))
    if best_reachable <= target_agreement:
        warnings.warn(
            f"target agreement {target_agreement:.3f} is not reachable (at most {best_reachable:.3f}: "
            "tied gold scores); returning the smallest temperature searched",
            RuntimeWarning,
            stacklevel=2,
        )
        return float(np.exp(log_lo))
    for _ in range(n_iters):
        log_mid = 0.5 * (log_lo + log_hi)
        if expected_agreement(gaps, float(np.exp(log_mid))) > target_agreement:
            log_lo = log_mid
        else:
            log_hi = log_mid
        if log_hi - log_lo < 1e-12:
            break
    return float(np.exp(0.5 * (log_lo + log_hi)))


def measure_agreement(
    groups_of_gold_scores: Sequence[Sequence[float]],
    temperature: float,
    rng: np.random.Generator,
    n_repeats: int = 1,
) -> float:
    """Empirical agreement: for each group (n_repeats times), two independent rank_responses draws;
    the fraction of within-group pairs they order the same way. Its expectation is
    expected_agreement(within_group_gaps(groups), temperature)."""
    n_agree, n_pairs = 0, 0
    for _ in range(n_repeats):
        for scores in groups_of_gold_scores:
            K = len(scores)
            i, j = np.triu_indices(K, k=1)
            # position of each response in each ranking (inverse permutation)
            pos1 = np.argsort(rank_responses(scores, temperature, rng))  # (K,)
            pos2 = np.argsort(rank_responses(scores, temperature, rng))  # (K,)
            n_agree += int(np.sum((pos1[i] < pos1[j]) == (pos2[i] < pos2[j])))
            n_pairs += len(i)
    return n_agree / n_pairs if n_pairs else float("nan")
