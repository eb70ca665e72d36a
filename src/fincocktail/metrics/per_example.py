"""What every metric over aligned predictions and golds shares: the length check and the mean.

Kept apart so the text, entity and (in `tasks.scoring`) numeric scores raise the same error for
misaligned inputs and average an empty split to 0.0 the same way.
"""

from __future__ import annotations

from typing import Sequence


def mean(values: Sequence[float]) -> float:
    """The average of per-example scores; 0.0 for none, so an empty split scores 0, not NaN."""
    return sum(values) / len(values) if values else 0.0


def check_lengths(predictions: Sequence[object], golds: Sequence[object]) -> None:
    """Refuse predictions and golds of different lengths: zip would silently drop the excess."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
