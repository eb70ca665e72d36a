"""Showing a plan and a sweep's state: rows for `--json`, rich tables for people."""

from __future__ import annotations

from typing import Any

from fincocktail.sweep.spec import Plan, RunSpec
from fincocktail.sweep.store import ResultsStore, RunRow


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds / 86400:.1f}d"


def format_tokens(tokens: float) -> str:
    if tokens >= 1e9:
        return f"{tokens / 1e9:.1f}B"
    if tokens >= 1e6:
        return f"{tokens / 1e6:.1f}M"
    if tokens >= 1e3:
        return f"{tokens / 1e3:.0f}k"
    return str(int(tokens))


def run_row(run: RunSpec) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "kind": run.kind,
        "model": run.model,
        "cocktail": run.label,
        "train_tasks": run.train_tasks,
        "general": run.general,
        "math": run.math,
        "seed": run.seed,
        "est_tokens": run.est_tokens,
        "est_eval_examples": run.est_eval_examples,
        "est_seconds": run.est_seconds,
        "num_cpus": run.resources.num_cpus,
        "num_gpus": run.resources.num_gpus,
        "device": run.resources.device,
        "config_sha256": run.config_sha256,
        "matched_to": run.matched_to,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {"sweep": plan.spec.name, "source": plan.source, "totals": plan.totals(), "runs": [run_row(r) for r in plan.runs]}


def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of runs of these lengths on `workers` workers taking the longest first, as the
    local executor does (each run to the worker that frees up first)."""
    import heapq

    free = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(free, free[0] + s)
    return max(free)


def plan_table(plan: Plan, status: dict[str, RunRow] | None = None, workers: int = 1) -> Any:
    from rich.table import Table

    totals = plan.totals()
    title = (
        f"sweep {plan.spec.name}: {totals['runs']} runs ({totals['training_runs']} training), "
        f"~{format_tokens(totals['est_tokens'])} training tokens, ~{format_seconds(totals['est_seconds'])} on one worker"
    )
    if workers > 1:
        wall = makespan([r.est_seconds for r in plan.runs], workers)
        title += f", ~{format_seconds(wall)} on {workers} workers (longest first)"
    if "est_gpu_hours" in totals:
        spec = plan.spec
        on_gpus = [m for m in spec.models if m.num_gpus or (m.num_gpus is None and spec.resources.asks_for_gpus())]
        given = all(m.gpu_tokens_per_s or spec.estimates.gpu_tokens_per_s for m in on_gpus)
        title += f", ~{totals['est_gpu_hours']:g} GPU-hours" + ("" if given else " (some models give no gpu_tokens_per_s: their tokens_per_s is used)")
    table = Table(title=title, title_justify="left")
    for col in ("id", "kind", "model", "cocktail", "seed", "est. tokens", "est. time"):
        table.add_column(col, justify="right" if col.startswith("est") or col == "seed" else "left", no_wrap=col == "id")
    if status is not None:
        table.add_column("status")
    for r in plan.runs:
        cells = [
            r.run_id, r.kind, r.model, r.label, str(r.seed) if r.trains else "-",
            format_tokens(r.est_tokens) if r.trains else "-", format_seconds(r.est_seconds),
        ]
        if status is not None:
            row = status.get(r.run_id)
            cells.append(_status_cell(row))
        table.add_row(*cells)
    return table


def _status_cell(row: RunRow | None) -> str:
    if row is None:
        return "not registered"
    colour = {"done": "green", "failed": "red", "running": "yellow"}.get(row.status, "white")
    extra = f" ({row.attempts} attempts)" if row.attempts > 1 else ""
    return f"[{colour}]{row.status}[/]{extra}"


def status_json(store: ResultsStore, plan: Plan | None = None) -> dict[str, Any]:
    rows = store.runs()
    if plan is not None:
        ids = {r.run_id for r in plan.runs}
        rows = [r for r in rows if r.run_id in ids]
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("planned", "running", "done", "failed")}
    remaining = sum(r.est_seconds for r in rows if r.status != "done")
    if plan is not None:
        registered = {r.run_id for r in rows}
        unregistered = [r for r in plan.runs if r.run_id not in registered]
        counts["planned"] += len(unregistered)  # never registered: not started
        remaining += sum(r.est_seconds for r in unregistered)
    from fincocktail.sweep.executors import sweep_active

    return {
        "store": str(store.path),
        "active": sweep_active(store.path.parent),  # False: 'running' rows are runs a dead sweep left behind
        "counts": counts,
        "est_seconds_left": remaining,
        "runs": [
            {
                "id": r.run_id, "kind": r.kind, "model": r.model, "cocktail": r.label, "seed": r.seed,
                "status": r.status, "attempts": r.attempts, "wall_time_s": r.wall_time_s, "error": r.error,
            }
            for r in rows
        ],
    }
