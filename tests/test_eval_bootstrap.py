"""Bootstrap intervals against a plain numpy loop written independently of the module."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from fincocktail.evaluation.bootstrap import bootstrap_interval, mean_interval


def _numpy_reference(values: np.ndarray, statistic, n_resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(values), size=len(values))
        stats.append(statistic(idx))
    return tuple(np.percentile(stats, [2.5, 97.5]))


def test_mean_interval_matches_an_independent_loop():
    correct = np.random.default_rng(7).random(137) < 0.62
    got = mean_interval(correct.tolist(), n_resamples=500, seed=3)
    ref = _numpy_reference(correct, lambda idx: correct[idx].mean(), 500, 3)
    assert (got.low, got.high) == pytest.approx(ref, abs=1e-12)
    assert got.low < correct.mean() < got.high


def test_generic_interval_of_a_macro_f1():
    rng = np.random.default_rng(11)
    gold = rng.integers(0, 3, size=80)
    pred = np.where(rng.random(80) < 0.7, gold, rng.integers(0, 3, size=80))
    metric = lambda idx: f1_score(gold[idx], pred[idx], average="macro")  # noqa: E731
    got = bootstrap_interval(metric, 80, n_resamples=200, seed=5)
    ref = _numpy_reference(gold, metric, 200, 5)
    assert (got.low, got.high) == pytest.approx(ref, abs=1e-12)


def test_degenerate_and_empty_cases():
    assert mean_interval([1.0] * 20).low == mean_interval([1.0] * 20).high == 1.0
    assert mean_interval([]) is None
    assert bootstrap_interval(lambda idx: 0.0, 0) is None
    # the seed makes the interval reproducible, another seed moves it
    values = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    assert mean_interval(values, seed=1) == mean_interval(values, seed=1)
    assert mean_interval(values, n_resamples=300, seed=1) != mean_interval(values, n_resamples=300, seed=2)
