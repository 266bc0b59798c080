"""Confidence intervals on hand-made inputs whose intervals are known."""

from __future__ import annotations

import numpy as np
import pytest

from algos.statistics import aggregate_across_runs, bootstrap_ci, hierarchical_bootstrap_ci


def test_bootstrap_of_two_points_spans_both():
    # means of 2 draws from {0, 1}: 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4) -> the 95% interval is [0, 1]
    interval = bootstrap_ci(np.array([0.0, 1.0]))
    assert (interval.estimate, interval.low, interval.high, interval.n) == (0.5, 0.0, 1.0, 2)


def test_bootstrap_of_a_constant_has_zero_width():
    interval = bootstrap_ci(np.full(30, 0.7))
    assert interval.low == interval.high == pytest.approx(0.7)


def test_bootstrap_of_a_fair_coin_matches_the_normal_interval():
    # 50 successes in 100: the normal approximation gives 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598]
    interval = bootstrap_ci(np.array([1.0, 0.0] * 50))
    assert interval.estimate == 0.5
    assert interval.low == pytest.approx(0.402, abs=0.015) and interval.high == pytest.approx(0.598, abs=0.015)


def test_hierarchical_bootstrap_widens_with_seed_to_seed_spread():
    levels = np.array([1.0, 0.0] * 32)
    agreeing = hierarchical_bootstrap_ci(np.stack([levels, levels, levels]))
    disagreeing = hierarchical_bootstrap_ci(np.stack([np.ones(64), np.zeros(64), levels]))
    assert agreeing.estimate == disagreeing.estimate == 0.5 and agreeing.n == 192
    assert disagreeing.high - disagreeing.low > 2 * (agreeing.high - agreeing.low)
    # seeds 1.0 / 0.0 / 0.5: resampling 3 seeds alone spans at least [1/6, 5/6]
    assert disagreeing.low <= 1 / 6 + 0.02 and disagreeing.high >= 5 / 6 - 0.02


def test_rliable_aggregates_and_probability_of_improvement():
    better = np.array([[0.9, 0.8, 0.9, 1.0]] * 3)  # 3 runs x 4 tasks
    worse = np.array([[0.1, 0.2, 0.1, 0.0]] * 3)
    result = aggregate_across_runs({"better": better, "worse": worse}, resamples=200)
    iqm = result["methods"]["better"]["iqm"]
    assert iqm["estimate"] == pytest.approx(0.9)  # the middle half of {0.8, 0.9 x6, 1.0 x3 ...}
    assert result["methods"]["worse"]["mean"]["estimate"] == pytest.approx(0.1)
    assert result["probability_of_improvement"]["better"]["worse"]["estimate"] == pytest.approx(1.0)
    assert result["probability_of_improvement"]["worse"]["better"]["estimate"] == pytest.approx(0.0)
