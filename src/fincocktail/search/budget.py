"""A search's budget in hours: what a job costs, in which unit, and whether one more round fits.

Both searches (plain and racing) spend CPU- or GPU-hours: a job's measured wall time times the
cores (or GPUs) it held, so that two searches run with different worker counts are compared at
the compute they used, not at the wall clock. Before any job has run, a round's cost comes from
the sweep's estimates, scaled by what its finished runs measured; after, from what the search's
own rounds measured.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fincocktail.search.mixture import proposal_run
from fincocktail.sweep.spec import rates

if TYPE_CHECKING:
    from fincocktail.search.search import Context
    from fincocktail.sweep.store import ResultsStore


def hours_unit(executor: Any) -> tuple[str, float]:
    """('GPU-hours', GPUs per job) when runs go to GPUs, else ('CPU-hours', cores per job)."""
    from fincocktail.models.device import gpu_count, wants_gpu
    from fincocktail.sweep.executors import cpu_count

    if wants_gpu(getattr(executor, "device", "cpu")) and gpu_count() > 0:
        return "GPU-hours", 1.0
    return "CPU-hours", float(getattr(executor, "threads", None) or cpu_count())


def job_costs(ctx: Context, store: ResultsStore | None) -> tuple[dict[str, float], str]:
    """Seconds of a typical full proposal (overhead, training, full evaluation, one curve point), from the sweep's
    rates scaled by what its finished runs measured against their estimates."""
    spec = ctx.plan.spec
    probe = proposal_run(ctx.plan, ctx.space, ctx.space.make(np.ones(len(ctx.space.names)),  # type: ignore[arg-type]
                         math.sqrt(ctx.space.total_min * ctx.space.total_max)), ctx.model_index, 0, "probe", ctx.settings)
    token_rate, eval_rate = rates(spec, spec.models[ctx.model_index])
    train_s = probe.est_tokens / (token_rate or 300.0)
    overhead = spec.estimates.overhead_s
    eval_s = max(0.0, probe.est_seconds - overhead - train_s)
    curve_rows = int(spec.training.get("eval_examples", 64)) * len(ctx.tasks)
    curve_s = curve_rows / (eval_rate or 10.0) / 3  # a curve point scores choices (likelihood only): ~3x eval's rate
    scale, why = 1.0, "the sweep's estimates"
    done = [r for r in (store.runs(status="done") if store else []) if r.wall_time_s and r.est_seconds]
    if done:
        scale = sum(r.wall_time_s or 0 for r in done) / sum(r.est_seconds for r in done)
        why = f"the sweep's estimates x {scale:.2f}, as its {len(done)} finished run(s) measured"
    return {"overhead": overhead * scale, "train": train_s * scale, "eval": eval_s * scale, "curve": curve_s * scale}, why


def round_fits(budget_hours: float, spent_hours: float, round_hours: float) -> bool:
    """Start another round while at least half a round's cost is left: the budget is met on average, overshooting
    by at most half a round, rather than always under-spent by up to a whole one."""
    return budget_hours - spent_hours >= 0.5 * round_hours
