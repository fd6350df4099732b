"""Evaluation helpers and the LR schedule, each against a hand computation."""

import math

import pytest

from minigpt_rlhf.common import cosine_lr
from minigpt_rlhf.evaluate import spearman, win_rate


def test_win_rate_counts_ties_as_half_with_a_normal_interval():
    a = [0.9, 0.5, 0.3, 0.7]
    b = [0.1, 0.5, 0.8, 0.2]
    wins = [1.0, 0.5, 0.0, 1.0]  # by hand
    mean = sum(wins) / 4
    sd = math.sqrt(sum((w - mean) ** 2 for w in wins) / 3)
    rate, (lo, hi) = win_rate(a, b)
    assert rate == pytest.approx(0.625)
    assert lo == pytest.approx(max(0.0, mean - 1.96 * sd / 2)) and hi == pytest.approx(min(1.0, mean + 1.96 * sd / 2))
    assert win_rate([0.5] * 5, [0.5] * 5) == (0.5, (0.5, 0.5))


def test_spearman_matches_pearson_of_ranks_with_ties_averaged():
    a = [1.0, 2.0, 2.0, 5.0]
    b = [10.0, 30.0, 20.0, 40.0]
    ra, rb = [0, 1.5, 1.5, 3], [0, 2, 1, 3]  # ranks by hand
    ma, mb = sum(ra) / 4, sum(rb) / 4
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    expected = cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    assert spearman(a, b) == pytest.approx(expected)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor():
    lr, warm, total = 1e-3, 10, 110
    assert cosine_lr(0, total, lr, warm) == pytest.approx(lr / 10)
    assert cosine_lr(9, total, lr, warm) == pytest.approx(lr)
    assert cosine_lr(10, total, lr, warm) == pytest.approx(lr)  # start of the cosine
    mid = cosine_lr(60, total, lr, warm)  # halfway through the decay: the mean of lr and the floor
    assert mid == pytest.approx(0.5 * (lr + 0.1 * lr))
    assert cosine_lr(total, total, lr, warm) == pytest.approx(0.1 * lr)
    assert cosine_lr(total + 50, total, lr, warm) == pytest.approx(0.1 * lr)
