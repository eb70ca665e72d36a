"""A search's budget in hours: in which unit, and whether one more round fits (a job's cost: `search.job_costs`).

Both searches (plain and racing) spend CPU- or GPU-hours: a job's measured wall time times the
cores (or GPUs) it held, so that two searches run with different worker counts are compared at
the compute they used, not at the wall clock. Before any job has run, a round's cost comes from
the sweep's estimates, scaled by what its finished runs measured; after, from what the search's
own rounds measured.
"""

from __future__ import annotations

from typing import Any, Sequence


def hours_unit(executor: Any) -> tuple[str, float]:
    """('GPU-hours', GPUs per job) when runs go to GPUs, else ('CPU-hours', cores per job)."""
    from fincocktail.models.device import gpu_count, wants_gpu
    from fincocktail.sweep.executors import cpu_count

    if wants_gpu(getattr(executor, "device", "cpu")) and gpu_count() > 0:
        return "GPU-hours", 1.0
    return "CPU-hours", float(getattr(executor, "threads", None) or cpu_count())


def round_fits(budget_hours: float, spent_hours: float, round_hours: float) -> bool:
    """Start another round while at least half a round's cost is left: the budget is met on average, overshot by
    about half an average round at most, rather than always under-spent by up to a whole one."""
    return budget_hours - spent_hours >= 0.5 * round_hours


def replicates_hours(replicates: int, run_seconds: Sequence[float], estimate_s: float, per_job: float) -> float:
    """Hours kept for the winner's replicates, one full run per extra seed: the mean of what the search's full runs
    measured, `estimate_s` until one has finished (the estimate erred 1.5x short on the real runs of race-seeds)."""
    per_run = sum(run_seconds) / len(run_seconds) if run_seconds else estimate_s
    return replicates * per_run * per_job / 3600
