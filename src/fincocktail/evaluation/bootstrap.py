"""95% bootstrap intervals over examples, for any corpus metric.

The resampling unit is the evaluated example, so the interval says how much a headline number
would move with another draw of test examples of the same kind: the right error bar when
comparing two fine-tuned models on a few hundred test items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    n_resamples: int
    seed: int


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n] indices drawn with replacement (numpy's PCG64, so identical everywhere)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_interval(
    metric: Callable[[np.ndarray], float],
    n: int,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval | None:
    """Percentile interval of `metric(indices)` over resamples; None for an empty set."""
    if n == 0:
        return None
    values = np.array([metric(idx) for idx in resample_indices(n, n_resamples, seed)], dtype=float)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(low), float(high), n_resamples, seed)


def mean_interval(values: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> Interval | None:
    """The interval of a mean (accuracy from per-example correctness), vectorised."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    means = arr[resample_indices(arr.size, n_resamples, seed)].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Interval(float(low), float(high), n_resamples, seed)
