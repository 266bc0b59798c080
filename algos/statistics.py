"""Results as statistics: bootstrap confidence intervals over levels and seeds, and rliable's aggregates.

A success rate measured on ``n`` held-out levels is a sample; these functions give its 95% interval:

- :func:`bootstrap_ci`: percentile bootstrap of a statistic of one sample (levels of one run).
- :func:`hierarchical_bootstrap_ci`: scores ``[seeds, levels]``; each resample draws seeds with
  replacement, then levels with replacement within each drawn seed, so the interval covers both the
  run-to-run spread and the level sampling.
- :func:`aggregate_across_runs`: rliable's interquartile mean (IQM) over runs x tasks with stratified
  bootstrap intervals, and the probability of improvement of each method over each other one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate and its ``confidence`` interval, from ``n`` observations."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, confidence: float = 0.95,
                 resamples: int = 10_000, seed: int = 0) -> Interval:
    """Percentile bootstrap: ``statistic(values)`` and the central ``confidence`` share of
    ``statistic(values[idx])`` over ``resamples`` index draws with replacement."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is invalid; allowed: (0, 1)")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    samples = np.apply_along_axis(statistic, 1, values[draws]) if statistic is not np.mean else \
        values[draws].mean(axis=1)
    return Interval(float(statistic(values)), *_percentiles(samples, confidence), len(values), confidence)


def hierarchical_bootstrap_ci(scores: np.ndarray, confidence: float = 0.95, resamples: int = 10_000,
                              seed: int = 0) -> Interval:
    """Mean of ``scores [seeds, levels]`` with an interval from resampling seeds, then levels within each."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty [seeds, levels] array, got shape {scores.shape}")
    rng = np.random.default_rng(seed)
    seeds, levels = scores.shape
    seed_draws = rng.integers(0, seeds, size=(resamples, seeds))
    level_draws = rng.integers(0, levels, size=(resamples, seeds, levels))
    samples = scores[seed_draws[:, :, None], level_draws].mean(axis=(1, 2))
    return Interval(float(scores.mean()), *_percentiles(samples, confidence), scores.size, confidence)


def aggregate_across_runs(scores: dict[str, np.ndarray], resamples: int = 2_000, confidence: float = 0.95,
                          seed: int = 0) -> dict[str, dict]:
    """rliable aggregates of ``scores[method] = [runs, tasks]`` (e.g. seeds x held-out levels, or seeds x
    envs): ``iqm`` and ``mean`` with stratified-bootstrap intervals per method, and
    ``probability_of_improvement[a][b]`` = P(a run of ``a`` beats a run of ``b``) with its interval."""
    from rliable import library as rly
    from rliable import metrics

    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    arrays = {name: np.asarray(value, dtype=float) for name, value in scores.items()}
    aggregate = lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)])  # noqa: E731
    point, interval = rly.get_interval_estimates(arrays, aggregate, reps=resamples, confidence_interval_size=confidence)
    result: dict[str, dict] = {"methods": {}}
    for name, value in arrays.items():
        result["methods"][name] = {
            key: Interval(float(point[name][i]), float(interval[name][0, i]), float(interval[name][1, i]),
                          value.size, confidence).as_dict()
            for i, key in enumerate(("iqm", "mean"))}
    pairs = {f"{a},{b}": (arrays[a], arrays[b]) for a in arrays for b in arrays if a != b}
    improvement: dict[str, dict] = {}
    if pairs:
        pair_point, pair_interval = rly.get_interval_estimates(
            pairs, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=resamples,
            confidence_interval_size=confidence)
        for key in pairs:
            a, b = key.split(",")
            improvement.setdefault(a, {})[b] = Interval(
                float(pair_point[key][0]), float(pair_interval[key][0, 0]), float(pair_interval[key][1, 0]),
                len(arrays[a]), confidence).as_dict()
    result["probability_of_improvement"] = improvement
    return result
