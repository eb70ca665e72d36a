"""`fincocktail report`: the cocktail-effect report of a sweep, as HTML and Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        sweep: Optional[str] = typer.Option(None, "--sweep", "-s", help="Sweep name (sweeps/NAME), sweep YAML, or results folder (default: the latest under sweeps/)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: <results>/report)."),
        title: Optional[str] = typer.Option(None, "--title", help="Report title."),
        selection_metric: Optional[str] = typer.Option(
            None, "--selection-metric", help="Rank recipes on validation by 'primary' or 'likelihood' (default: the sweep file's eval.selection_metric, else primary)."),
    ) -> None:
        """Write report.html (self-contained) and report.md for a sweep's finished runs."""
        from fincocktail.plumbing.fileio import check_out_dir
        from fincocktail.report.build import build_report, latest_sweep_dir, print_main_table, sweep_dir

        from fincocktail.errors import ConfigError

        if selection_metric not in (None, "primary", "likelihood"):
            raise ConfigError(f"--selection-metric {selection_metric!r}: expected 'primary' or 'likelihood'")
        if out is not None:
            check_out_dir(out)
        results = sweep_dir(sweep) if sweep else latest_sweep_dir()
        print_main_table(build_report(results, out, title, selection_metric))
