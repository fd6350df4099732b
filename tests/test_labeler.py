"""The simulated labeler: Plackett-Luce rankings whose noise is calibrated to InstructGPT's 72.6 %
inter-labeler agreement."""

import math

import numpy as np
import pytest

from minigpt_rlhf.labeler import (
    calibrate_temperature,
    expected_agreement,
    measure_agreement,
    rank_responses,
    within_group_gaps,
)


def _synthetic_groups(n_groups, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=rng.integers(4, 10)).tolist() for _ in range(n_groups)]


def test_temperature_zero_gives_exact_gold_order_with_ties_by_index():
    rng = np.random.default_rng(0)
    assert rank_responses([0.3, 0.9, 0.1, 0.9], 0.0, rng) == [1, 3, 0, 2]
    assert rank_responses([5, 4, 3, 2, 1], 0.0, rng) == [0, 1, 2, 3, 4]


def test_rank_responses_returns_a_permutation():
    rng = np.random.default_rng(1)
    ranking = rank_responses(np.arange(9.0), 0.5, rng)
    assert sorted(ranking) == list(range(9)) and all(isinstance(i, int) for i in ranking)


def test_pairwise_order_is_logistic_in_gold_gap():
    rng = np.random.default_rng(2)
    gold, temperature, n = [0.8, 0.2, 0.5], 0.3, 20000
    above = 0
    for _ in range(n):
        ranking = rank_responses(gold, temperature, rng)
        above += ranking.index(0) < ranking.index(1)
    p = 1 / (1 + math.exp(-(0.8 - 0.2) / temperature))
    assert above / n == pytest.approx(p, abs=0.015)


def test_expected_agreement_matches_monte_carlo():
    groups = _synthetic_groups(1000, seed=3)
    temperature = 0.2
    analytic = expected_agreement(within_group_gaps(groups), temperature)
    # p^2 + (1-p)^2 by hand for one gap
    p = 1 / (1 + math.exp(-0.1 / temperature))
    assert expected_agreement([0.1], temperature) == pytest.approx(p**2 + (1 - p) ** 2)
    empirical = measure_agreement(groups, temperature, np.random.default_rng(4), n_repeats=5)
    assert empirical == pytest.approx(analytic, abs=0.01)


def test_calibrated_temperature_reproduces_instructgpt_agreement():
    groups = _synthetic_groups(2000, seed=5)
    temperature = calibrate_temperature(groups, target_agreement=0.726)
    assert expected_agreement(within_group_gaps(groups), temperature) == pytest.approx(0.726, abs=1e-6)
    measured = measure_agreement(groups, temperature, np.random.default_rng(6))
    assert measured == pytest.approx(0.726, abs=0.03)


def test_higher_temperature_lowers_agreement():
    groups = _synthetic_groups(500, seed=7)
    gaps = within_group_gaps(groups)
    temperatures = [0.01, 0.05, 0.1, 0.3, 1.0, 10.0]
    analytic = [expected_agreement(gaps, t) for t in temperatures]
    assert all(a > b for a, b in zip(analytic, analytic[1:]))
    assert analytic[-1] == pytest.approx(0.5, abs=0.01)
    rng = np.random.default_rng(8)
    assert measure_agreement(groups, 0.02, rng) > measure_agreement(groups, 0.5, rng)


def test_calibration_edge_cases():
    with pytest.raises(ValueError):
        calibrate_temperature([[0.1, 0.2]], target_agreement=0.5)
    # all gold scores tied: agreement is 1/2 at every T > 0, the target cannot be reached
    with pytest.warns(RuntimeWarning):
        temperature = calibrate_temperature([[0.3, 0.3, 0.3]], target_agreement=0.726)
    assert temperature > 0
    assert expected_agreement([0.0, 0.0], temperature) == 0.5
