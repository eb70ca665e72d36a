"""`fincocktail sweep`: plan, run and follow a sweep (the study's design as one YAML file)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from fincocktail.errors import ConfigError
from fincocktail.models.device import DEVICE_HELP, check_device

app = typer.Typer(no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@app.command("plan")
def plan(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML (see configs/sweeps/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON."),
    workers: int = typer.Option(1, "--workers", "-w", help="Also estimate the wall time on N workers (the rates are one worker's)."),
) -> None:
    """List the runs a sweep expands to, with estimated tokens and time; runs nothing."""
    from fincocktail.sweep.plan import plan_json, plan_table
    from fincocktail.sweep.spec import load_plan

    p = load_plan(sweep_file)
    if as_json:
        print(json.dumps(plan_json(p), indent=2))
        return
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected 1 or more")
    console.print(plan_table(p, workers=workers))


@app.command("run")
def run(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML."),
    executor: str = typer.Option("local", "--executor", "-e", help="local or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a private local Ray on 127.0.0.1)."),
    workers: int | None = typer.Option(
        None, "--workers", "-w",
        help="Runs at once, on either executor (local: processes, each with cores // N torch threads, default 1, or one per GPU on GPUs; ray: also the CPUs of a private local Ray, default as many runs as its CPUs fit).",
    ),
    device: str | None = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: the sweep's resources.device, auto). Not part of run ids."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: the sweep's `out`, else sweeps/NAME)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Datasets folder (default: FINCOCKTAIL_DATA, ./data, ../shared/data)."),
    only: list[str] | None = typer.Option(None, "--only", help="Run just these run ids (repeatable)."),
    mlflow: str | None = typer.Option(None, "--mlflow", help="Also log every run to MLflow: a folder (./mlruns) or an http(s):// server; loss, lr and curves live (docs/sweeps.md#mlflow)."),
    simulate: bool = typer.Option(False, "--simulate", help="Fake, deterministic metrics in a moment: check the sweep and executor without compute."),
    runner: str | None = typer.Option(None, "--runner", hidden=True, help="module:function run function (advanced)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Execute a sweep. Finished runs are skipped; interrupted runs resume from their checkpoint."""
    from fincocktail.plumbing.fileio import check_out_dir
    from fincocktail.plumbing.paths import find_data_dir
    from fincocktail.sweep.executors import make_executor, run_sweep
    from fincocktail.sweep.plan import format_seconds
    from fincocktail.sweep.spec import load_plan
    from fincocktail.sweep.store import SIMULATED_DIR, SIMULATED_MARK

    if simulate and runner:
        raise ConfigError("--simulate and --runner: give one of them")
    device = check_device(device) if device is not None else None
    p = load_plan(sweep_file)
    chosen_runner = runner or ("simulate" if simulate else "real")
    resolved_data = None
    if chosen_runner == "real":
        resolved_data = str(find_data_dir(data_dir or p.spec.data_dir))
    out_dir = out or (p.out_dir / SIMULATED_DIR if chosen_runner == "simulate" else p.out_dir)
    check_out_dir(out_dir)
    summary = run_sweep(
        p,
        out_dir=out_dir,
        executor=make_executor(executor, workers=workers, address=address, device=device or p.spec.resources.device),
        runner=chosen_runner,
        data_dir=resolved_data,
        progress=not quiet,
        only=only,
        mlflow_uri=mlflow,
    )
    mark = f" [{SIMULATED_MARK}]" if chosen_runner == "simulate" else ""
    line = (
        f"sweep {p.spec.name}{mark}: {len(summary.executed)} run(s) executed, {len(summary.skipped) + len(summary.recovered)} "
        f"already done, {len(summary.failed)} failed, in {format_seconds(summary.wall_s)}; results in {summary.out_dir}"
    )
    console.print(line, highlight=False)
    for run_id, error in summary.failed.items():
        err.print(f"[red]failed[/] {run_id}: {error} (log: {summary.out_dir / 'runs' / run_id / 'error.log'})", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command("status")
def status(
    sweep_file: Path | None = typer.Argument(None, help="Sweep YAML (its out folder is read)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Sweep output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Where a sweep stands: runs done / running / planned / failed, attempts, time left."""
    from fincocktail.sweep.plan import format_seconds, plan_table, status_json
    from fincocktail.sweep.spec import load_plan
    from fincocktail.sweep.store import SIMULATED_MARK, ResultsStore

    if sweep_file is None and out is None:
        raise ConfigError("sweep status: give a sweep file or --out DIR")
    p = load_plan(sweep_file) if sweep_file is not None else None
    out_dir = out or p.out_dir  # type: ignore[union-attr]
    store = ResultsStore.in_dir(out_dir, create=False)
    data = status_json(store, p)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    counts = data["counts"]
    if p is not None:
        console.print(plan_table(p, status={r.run_id: r for r in store.runs()}))
    else:
        console.print(_runs_table(data["runs"], str(out_dir)))
    console.print(
        f"{counts['done']} done, {counts['running']} running, {counts['planned']} planned, {counts['failed']} failed; "
        f"~{format_seconds(data['est_seconds_left'])} of estimated work left ({store.path})"
        + (f" [{SIMULATED_MARK}]" if store.simulated() else ""),
        highlight=False,
    )
    if counts["running"] and not data["active"]:
        console.print(
            f"no sweep is running in {out_dir}: the {counts['running']} 'running' run(s) were interrupted and resume "
            "from their checkpoints on the next `fincocktail sweep run`",
            highlight=False,
        )


def _runs_table(runs: list[dict], where: str):
    from rich.table import Table

    from fincocktail.sweep.plan import format_seconds

    table = Table(title=f"runs in {where}", title_justify="left")
    for col in ("id", "kind", "model", "cocktail", "seed", "status", "attempts", "time"):
        table.add_column(col, justify="right" if col in ("seed", "attempts", "time") else "left", no_wrap=col == "id")
    colours = {"done": "green", "failed": "red", "running": "yellow"}
    for r in runs:
        status = f"[{colours.get(r['status'], 'white')}]{r['status']}[/]"
        if r["error"]:
            status += f" ({r['error'][:60]})"
        table.add_row(
            r["id"], r["kind"], r["model"], r["cocktail"], str(r["seed"]), status, str(r["attempts"]),
            format_seconds(r["wall_time_s"]) if r["wall_time_s"] else "",
        )
    return table
