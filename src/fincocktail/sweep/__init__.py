"""Sweeps: the study's experiment design as one config, executed locally or on Ray, into a results store."""

from fincocktail.sweep.spec import (
    Plan,
    RunSpec,
    SweepSpec,
    expand,
    load_plan,
    load_sweep,
)
from fincocktail.sweep.store import MetricRow, ResultsStore, RunOutcome, RunRow

__all__ = [
    "MetricRow",
    "Plan",
    "ResultsStore",
    "RunOutcome",
    "RunRow",
    "RunSpec",
    "SweepSpec",
    "expand",
    "load_plan",
    "load_sweep",
]
