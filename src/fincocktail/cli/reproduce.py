"""`fincocktail reproduce`: run a preset sweep of the study and write its report, in one command.

Resumable by construction: the sweep layer skips finished runs and resumes interrupted ones,
so running the same command again after a crash continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fincocktail.errors import ConfigError
from fincocktail.models.device import DEVICE_HELP, check_device

PRESETS: dict[str, str] = {  # the help text is built from this, so it lists every preset there is
    "quick": "the few-minute demo (same as --quick)",
    "cpu-small": "the design in miniature, <= 60 min on 2 cores",
    "cpu-study": "the classification claims sized to decide, 2 CPU cores",
    "paper": "the study at its scale (GPU cluster)",
}
PRESET_HELP = "; ".join(f"{name}: {what}" for name, what in PRESETS.items()) + "."


def preset_file(name: str) -> Path:
    """configs/sweeps/<name>.yaml from the working directory, else from the source checkout."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    import fincocktail

    candidates = [Path.cwd() / "configs" / "sweeps" / f"{name}.yaml",
                  Path(fincocktail.__file__).resolve().parents[2] / "configs" / "sweeps" / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"preset {name!r}: sweep file not found (looked at {', '.join(map(str, candidates))})")


def register(app: typer.Typer) -> None:
    @app.command("reproduce")
    def reproduce_cmd(
        preset: str = typer.Option("cpu-small", "--preset", "-p", help=PRESET_HELP),
        quick: bool = typer.Option(False, "--quick", help="The few-minute demo: the same pipeline with tiny sample counts."),
        executor: str = typer.Option("local", "--executor", "-e", help="local or ray."),
        workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Runs at once (default 1, or one per GPU on GPUs)."),
        device: Optional[str] = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: the preset's resources.device). Not part of run ids."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default: sweeps/<preset>)."),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Datasets folder."),
    ) -> None:
        """Run the study's sweep (a preset) end to end and write the cocktail-effect report."""
        from rich.console import Console

        from fincocktail.plumbing.paths import find_data_dir
        from fincocktail.report.build import build_report, print_main_table
        from fincocktail.sweep.executors import make_executor, run_sweep
        from fincocktail.sweep.spec import load_plan

        device = check_device(device) if device is not None else None
        console = Console()
        path = preset_file("quick" if quick else preset)
        plan = load_plan(path)
        out_dir = out or plan.out_dir
        console.print(f"[bold]reproduce[/]: sweep {path} -> {out_dir} ({len(plan.runs)} runs)")
        summary = run_sweep(
            plan,
            out_dir=out_dir,
            executor=make_executor(executor, workers=workers, device=device or plan.spec.resources.device),
            runner="real",
            data_dir=str(find_data_dir(data_dir or plan.spec.data_dir)),
            progress=True,
        )
        for run_id, error in summary.failed.items():
            console.print(f"[red]failed[/] {run_id}: {error}", highlight=False)
        built = build_report(Path(out_dir), title=f"fincocktail reproduce: {plan.spec.name}")
        print_main_table(built, console)
        if summary.failed:
            raise typer.Exit(1)
