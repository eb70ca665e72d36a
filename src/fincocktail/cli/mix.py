"""`fincocktail mix`: search for the training mixture that wins on validation, or predict one without training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fincocktail.errors import ConfigError
from fincocktail.models.device import DEVICE_HELP, check_device

app = typer.Typer(no_args_is_help=True)
console = Console()


def _total(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        return (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ConfigError(f"--total {text}: expected MIN:MAX examples per epoch, e.g. 256:1024") from None


@app.command("search")
def search(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML: its tasks, training config, evaluation samples and store."),
    budget: int | None = typer.Option(None, "--budget", "-n", help="Mixtures to propose and train in all (a rerun with a larger budget extends); with --race, an optional cap."),
    race: bool = typer.Option(False, "--race", help="Race proposals: read them at rungs of their steps, stop the weakest (optuna successive halving); needs --budget-hours."),
    budget_hours: float | None = typer.Option(None, "--budget-hours", help="CPU- or GPU-hours to spend (the jobs' measured time x cores or GPUs each holds); with --budget, whichever ends first."),
    reduction: int = typer.Option(2, "--reduction", help="--race: keep the best 1/N at each rung."),
    rungs: int = typer.Option(3, "--rungs", help="--race: rungs per proposal, the last at full length (3 with reduction 2: 1/4, 1/2, 1)."),
    replicates: int | None = typer.Option(None, "--replicates", help="Extra seeds of the winner (and of the runner-up if the winner's mean falls below it) before it is recommended (default: 2 with --race, 0 without)."),
    fresh: bool = typer.Option(False, "--fresh", help="Learn only from this search's own proposals, not the sweep's runs (a search from scratch)."),
    objective: list[str] = typer.Option(["mean"], "--objective", help="mean | TASK | weights:fpb=2,tfns=1 (repeat for a Pareto front; the first decides)."),
    constraint: list[str] = typer.Option([], "--constraint", help="no-task-below-single | min:TASK=VALUE (repeatable; on validation scores)."),
    batch: int = typer.Option(2, "--batch", "-b", help="Mixtures per round (run at once by the executor)."),
    executor: str = typer.Option("local", "--executor", "-e", help="local or ray."),
    workers: int | None = typer.Option(None, "--workers", "-w", help="Runs at once (local processes, default 1 or one per GPU / CPUs of a local Ray)."),
    device: str | None = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: the sweep's resources.device). Not part of run ids."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address."),
    total: str | None = typer.Option(None, "--total", help="Range of examples per epoch, MIN:MAX (default: the sweep's smallest and largest run)."),
    model: str | None = typer.Option(None, "--model", help="Which model of the sweep (default: the first)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the proposals (candidate sampling, GP restarts)."),
    name: str | None = typer.Option(None, "--name", help="Search folder under OUT/mix/ (default: from objective and constraints)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Sweep output folder (default: the sweep's `out`, else sweeps/NAME)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Datasets folder."),
    simulate: bool = typer.Option(False, "--simulate", help="Hash-based fake metrics (checks the plumbing; the surrogate learns nothing)."),
    runner: str | None = typer.Option(None, "--runner", help="module:function run function, e.g. fincocktail.search.synthetic:run (a known optimum)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Propose mixtures with a Gaussian-process surrogate, train and evaluate them as runs of the sweep, recommend one.

    Starts from the sweep's finished runs; chooses on validation only; resumable (rerun the same command).
    """
    from fincocktail.plumbing.paths import find_data_dir
    from fincocktail.search.outputs import write_outputs
    from fincocktail.search.search import SearchOptions, run_search
    from fincocktail.sweep.executors import make_executor
    from fincocktail.sweep.spec import load_plan
    from fincocktail.sweep.store import SIMULATED_DIR, SIMULATED_MARK

    if simulate and runner:
        raise ConfigError("--simulate and --runner: give one of them")
    if race and budget_hours is None:
        raise ConfigError("--race: give --budget-hours (e.g. --budget-hours 1 for one CPU-hour)")
    if not race and budget is None and budget_hours is None:
        raise ConfigError("--budget N (mixtures to propose) or --budget-hours H (CPU- or GPU-hours to spend)")
    device = check_device(device) if device is not None else None
    plan = load_plan(sweep_file)
    chosen = runner or ("simulate" if simulate else "real")
    out = out or (plan.out_dir / SIMULATED_DIR if chosen == "simulate" else plan.out_dir)
    resolved = str(find_data_dir(data_dir or plan.spec.data_dir)) if chosen == "real" else None
    options = SearchOptions(tuple(objective), tuple(constraint), budget or 0, batch, seed, model, _total(total), name, fresh,
                            None if race else budget_hours, 0 if race else (replicates or 0))
    ex = make_executor(executor, workers=workers, address=address, device=device or plan.spec.resources.device)
    if race:
        from fincocktail.search.race import RaceOptions, run_race
        from fincocktail.search.race_outputs import write_race_outputs

        race_options = RaceOptions(budget_hours or 0.0, reduction, rungs, 2 if replicates is None else replicates)
        raced = run_race(plan, options, race_options, out, ex, chosen, resolved, progress=not quiet,
                         say=lambda text: console.print(text, highlight=False))
        result = raced.search
        summary = write_race_outputs(raced)
        r = summary["race"]
        stopped = sum(1 for p in r["proposals"] if p["stopped_at"] is not None)
        console.print(f"race: {len(r['proposals'])} proposals, {stopped} stopped early, {r['spent_hours']:.2f} of "
                      f"{r['budget_hours']:g} {r['unit']} spent -> {result.dir / 'race.md'}", highlight=False)
        if r["recommended_sd"] is not None:
            console.print(f"winner over {len(r['recommended_seeds'])} seeds: {r['recommended_mean']:.4f} "
                          f"(sd {r['recommended_sd']:.4f})", highlight=False)
    else:
        result = run_search(plan, options, out, ex, chosen, resolved, progress=not quiet,
                            say=lambda text: console.print(text, highlight=False))
        summary = write_outputs(result)
        spent = summary.get("spent") or {}
        if spent.get("budget_hours") is not None:
            console.print(f"spent {spent['hours']:.2f} of {spent['budget_hours']:g} {spent['unit']}", highlight=False)
        seeds = [s for s in (summary.get("recommended") or {}).get("seeds", []) if s["objective"] is not None]
        if len(seeds) > 1:
            console.print(f"winner over {len(seeds)} seeds: " + ", ".join(f"{s['objective']:.4f} (seed {s['seed']})"
                                                                         for s in seeds), highlight=False)
    rec = summary.get("recommended")
    main = summary["objectives"][0]
    if result.ctx.store is not None and result.ctx.store.simulated():
        console.print(f"[bold yellow]{SIMULATED_MARK}[/]: these scores are hash-based, not measured", highlight=False)
    console.print(f"mix search {summary['name']}: {len(result.executed)} run(s) trained now, {summary['proposed']} proposed in "
                  f"all, {summary['surrogate']['mixtures']} mixtures known; outputs in {result.dir}", highlight=False)
    if rec:
        shares = ", ".join(f"{t} {c}" for t, c in rec["counts"].items() if c)
        console.print(f"recommended: {shares} (total {rec['total']}), validation {main} "
                      f"{rec['objectives'][main]['measured']:.4f} ({rec['source']}) -> {result.dir / 'recommended.yaml'}",
                      highlight=False)
        rho = summary["surrogate"]["objectives"][main]["spearman"]
        console.print(f"surrogate: leave-one-out Spearman {rho:.2f} on {summary['surrogate']['mixtures']} mixtures", highlight=False)
        if summary.get("recommended_meets_constraints") is False:
            console.print("[yellow]no evaluated mixture meets the constraints; the best one regardless is shown[/]")
    for note in summary.get("notes", []):
        console.print(f"[dim]{note}[/]", highlight=False)
    if summary.get("verdict"):
        console.print(summary["verdict"], highlight=False)


@app.command("predict")
def predict(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML (its store holds the runs the surrogate learns from)."),
    cocktail_file: Path = typer.Argument(..., help="Cocktail YAML (configs/cocktails format) over the sweep's ingredients."),
    objective: str = typer.Option("mean", "--objective", help="Also predict this objective (mean | TASK | weights:...)."),
    model: str | None = typer.Option(None, "--model", help="Which model of the sweep (default: the first)."),
    total: str | None = typer.Option(None, "--total", help="The search's total range MIN:MAX, if it was not the default."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Sweep output folder."),
) -> None:
    """Print the surrogate's predicted validation score (with its uncertainty) per task for a mixture, without training it."""
    from fincocktail.cocktail import load_cocktail
    from fincocktail.search.objective import parse_objective
    from fincocktail.search.propose import objective_moments
    from fincocktail.search.search import context, matrix
    from fincocktail.search.surrogate import Surrogate
    from fincocktail.sweep.spec import load_plan

    plan = load_plan(sweep_file)
    ctx = context(plan, out or plan.out_dir, model, _total(total), need_store=True)
    obj = parse_objective(objective, ctx.tasks)
    mixture = ctx.space.of_cocktail(load_cocktail(cocktail_file).model_dump(mode="json"), str(cocktail_file))
    runs = ctx.runs()
    if not runs:
        raise ConfigError(f"{ctx.out_dir}: no finished training run with validation scores to learn from; run the sweep first")
    X, Y, _ = matrix(ctx, runs)
    surrogate = Surrogate(ctx.tasks, seed=0).fit(X, Y)
    mu, sd = surrogate.predict(ctx.space.features([mixture]))
    table = Table(title=f"predicted validation score: {cocktail_file.name} ({ctx.space.label(mixture)}, total {mixture.total})")
    for col in ("task", "predicted", "sd", "95% interval"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for j, t in enumerate(ctx.tasks):
        table.add_row(t, f"{mu[0, j]:.3f}", f"{sd[0, j]:.3f}", f"[{mu[0, j] - 1.96 * sd[0, j]:.3f}, {mu[0, j] + 1.96 * sd[0, j]:.3f}]")
    om, osd = objective_moments(mu, sd, obj.vector(ctx.tasks))
    table.add_row(f"objective {objective}", f"{om[0]:.3f}", f"{osd[0]:.3f}", f"[{om[0] - 1.96 * osd[0]:.3f}, {om[0] + 1.96 * osd[0]:.3f}]")
    console.print(table)
    known = {r.mixture for r in runs}
    console.print(f"learned from {len(runs)} run(s) of {len(known)} mixture(s) in {ctx.out_dir}"
                  + ("; this mixture was itself measured" if mixture in known else ""),
                  highlight=False)
