"""The laboratory's arithmetic (minigpt_rlhf/frontier.py), by hand."""

import math

import numpy as np
import pytest

from minigpt_rlhf.frontier import (
    best_of_n_exact_kl,
    best_of_n_kl,
    best_of_n_picks,
    format_lab,
    interpolate,
    matched,
)


def test_best_of_n_kl_is_log_n_minus_n_minus_1_over_n_reached_on_a_wide_uniform_base():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 3 / 4)
    # reached, in the limit, on a base of many equally likely outcomes: best-of-n of a uniform over
    # m ranked outcomes picks outcome i (1 = worst) with probability (i/m)^n - ((i-1)/m)^n
    m, n = 20000, 4
    i = np.arange(1, m + 1)
    p = (i / m) ** n - ((i - 1) / m) ** n
    kl = float(np.sum(p * np.log(p * m)))
    assert kl == pytest.approx(best_of_n_kl(n), abs=1e-3)


def test_best_of_n_exact_kl_equals_a_brute_force_enumeration_of_n_draws_with_repeats_and_ties():
    """Four responses drawn 4:3:2:1 (repeats), two of them tied in score: every sequence of n draws enumerated,
    the best picked (the first drawn of a tie), its probability summed, the KL to the base computed."""
    import itertools

    base = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}
    score = {"a": 1.0, "b": 3.0, "c": 3.0, "d": 2.0}  # b and c tie
    draws = [r for r, share in base.items() for _ in range(round(share * 10))]
    for n in (1, 2, 3, 5):
        bon = dict.fromkeys(base, 0.0)
        for seq in itertools.product(base, repeat=n):
            best = max(range(n), key=lambda j: (score[seq[j]], -j))  # the highest score, the earliest of a tie
            bon[seq[best]] += math.prod(base[r] for r in seq)
        brute = sum(q * math.log(q / base[r]) for r, q in bon.items() if q > 0)
        exact = best_of_n_exact_kl(draws, [score[r] for r in draws], n)
        assert exact == pytest.approx(brute, abs=1e-12)
        assert exact <= best_of_n_kl(n) + 1e-12
    assert best_of_n_exact_kl(draws, [score[r] for r in draws], 1) == pytest.approx(0.0, abs=1e-12)


def test_best_of_n_exact_kl_nears_the_bound_only_without_repeats():
    n = 4
    distinct = list(range(20000))  # every draw different: the bound's case
    assert best_of_n_exact_kl(distinct, [float(x) for x in distinct], n) == pytest.approx(best_of_n_kl(n), abs=1e-3)
    repeated = [x % 3 for x in range(300)]  # three responses, each a third of the draws
    exact = best_of_n_exact_kl(repeated, [float(x) for x in repeated], n)
    by_hand = sum(((i / 3) ** n - ((i - 1) / 3) ** n) * math.log(3 * ((i / 3) ** n - ((i - 1) / 3) ** n))
                  for i in (1, 2, 3))
    assert exact == pytest.approx(by_hand) and exact < best_of_n_kl(n) - 0.05
    # one response drawn 6 times in 10 and ranked best: best-of-4 picks it with probability 1 - 0.4^4
    skewed = [0] * 6 + [1, 2, 3, 4]
    scores = [5.0] * 6 + [1.0, 2.0, 3.0, 4.0]
    q = [(0.1 * i) ** n - (0.1 * (i - 1)) ** n for i in (1, 2, 3, 4)] + [1 - 0.4 ** n]
    by_hand = sum(qi * math.log(qi / pi) for qi, pi in zip(q, [0.1] * 4 + [0.6]))
    assert best_of_n_exact_kl(skewed, scores, n) == pytest.approx(by_hand) and by_hand < 0.7 * best_of_n_kl(n)


def test_best_of_n_picks_the_highest_scored_of_the_first_n_draws_per_slot():
    draws = [[{"id": f"d{j}s{i}"} for i in range(3)] for j in range(4)]  # 4 draws for each of 3 slots
    scores = np.array([[0.1, 0.9, 0.5, 2.0],
                       [3.0, 1.0, 1.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0]])  # (slots, draws)
    assert [d["id"] for d in best_of_n_picks(draws, scores, 2)] == ["d1s0", "d0s1", "d0s2"]
    assert [d["id"] for d in best_of_n_picks(draws, scores, 4)] == ["d3s0", "d0s1", "d0s2"]
    with pytest.raises(ValueError):
        best_of_n_picks(draws, scores, 5)


def test_interpolate_is_piecewise_linear_in_range_and_none_outside():
    xs, ys = [1.0, 0.0, 2.0], [3.0, 1.0, 2.0]  # unsorted on purpose: (0,1) (1,3) (2,2)
    assert interpolate(xs, ys, 0.5) == pytest.approx(2.0)
    assert interpolate(xs, ys, 1.5) == pytest.approx(2.5)
    assert interpolate(xs, ys, 2.0) == pytest.approx(2.0)
    assert interpolate(xs, ys, 2.01) is None and interpolate(xs, ys, -0.1) is None
    assert interpolate([], [], 0.0) is None


def results():
    origin = {"method": "sft", "setting": "T=0.7", "sqrt_kl": 0.0, "gold": 0.4, "win": 0.5, "train_s": 0.0}
    rows = [
        {"method": "a", "setting": "it=1", "sqrt_kl": 1.0, "gold": 0.6, "win": 0.7, "win_ci95": [0.6, 0.8],
         "train_s": 10.0},
        {"method": "a", "setting": "it=2", "sqrt_kl": 2.0, "gold": 0.5, "win": 0.6, "win_ci95": [0.5, 0.7],
         "train_s": 20.0},
        {"method": "b", "setting": "n=2", "sqrt_kl": 0.5, "gold": 0.45, "win": 0.55, "win_ci95": [0.5, 0.6],
         "train_s": None},
    ]
    return origin, rows


def test_matched_reads_each_curve_from_the_sft_origin_at_each_level():
    origin, rows = results()
    table = matched(rows, ["a", "b"], "sqrt_kl", [0.5, 1.5], ("gold", "win"), origin)
    assert table["a"]["0.5"]["gold"] == pytest.approx(0.5)  # halfway from SFT (0, 0.4) to (1, 0.6)
    assert table["a"]["1.5"]["win"] == pytest.approx(0.65)
    assert table["b"]["0.5"]["gold"] == pytest.approx(0.45)
    assert table["b"]["1.5"]["gold"] is None  # best-of-2 does not reach sqrt(KL) 1.5
    by_time = matched(rows, ["a", "b"], "train_s", [5.0], ("gold",), origin)
    assert by_time["a"]["5"]["gold"] == pytest.approx(0.5)
    assert by_time["b"]["5"]["gold"] is None  # no training time: only the origin


def test_format_lab_prints_every_row_and_both_matched_tables():
    origin, rows = results()
    res = {"rows": [{**r, "rm_score": 0.1} for r in rows], "methods": ["a", "b"], "sft": origin,
           "levels_sqrt_kl": [0.5], "levels_train_s": [5.0],
           "matched_sqrt_kl": matched(rows, ["a", "b"], "sqrt_kl", [0.5], ("gold", "win"), origin),
           "matched_train_s": matched(rows, ["a"], "train_s", [5.0], ("gold", "win"), origin),
           "cost": {"a": {"s_per_iteration": 1.5, "train_s": 20.0, "peak_memory_mb": 300.0}}}
    text = format_lab(res)
    assert "it=2" in text and "n=2" in text and "gold @0.5" in text and "gold @5s" in text and "1.50" in text
