"""`fincocktail compare A B [C ...]`: paired comparison of eval or sweep runs on the same examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        runs: List[Path] = typer.Argument(..., metavar="A B [C ...]", help="Eval run folders (eval --out) or sweep run folders; each is compared with the first."),
        tasks: Optional[str] = typer.Option(None, "--tasks", help="Compare only these tasks (comma-separated); default: all, which every run must have."),
        split: Optional[str] = typer.Option(None, "--split", help="Which eval split of sweep runs (default test)."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON (every disagreement included) instead of tables."),
        html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML page with a plot of the differences."),
        show: int = typer.Option(5, "--show", help="Disagreeing examples listed per task in the terminal."),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=100, help="Bootstrap resamples."),
        seed: int = typer.Option(0, "--seed", help="Seeds the bootstrap."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (the tasks' examples, to recompute corpus metrics)."),
        tasks_dir: Optional[Path] = typer.Option(None, "--tasks-dir", help="Folder of user task YAMLs, if the runs evaluated user tasks."),
    ) -> None:
        """Is B better than A? Per task: the difference, its paired 95% interval, McNemar's exact test, per-class shift, disagreements."""
        from rich.console import Console

        from fincocktail.compare import compare_runs, load_run
        from fincocktail.compare.render import print_comparison, write_html
        from fincocktail.plumbing.paths import find_data_dir
        from fincocktail.tasks.registry import get_task

        loaded = [load_run(p, split) for p in runs]
        wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        cmp = compare_runs(loaded, lambda t: get_task(t, tasks_dir), find_data_dir(data_dir), wanted, bootstrap, seed)
        if as_json:
            typer.echo(json.dumps(cmp.to_json(), indent=2, ensure_ascii=False, default=str))
        else:
            print_comparison(cmp, Console(), show)
        if html:
            write_html(cmp, html)
            Console(stderr=True).print(f"HTML page: {html}", highlight=False)
