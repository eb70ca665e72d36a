"""`fincocktail data contamination COCKTAIL.yaml`: n-gram overlap of a cocktail with every eval split."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(data_app: typer.Typer) -> None:
    @data_app.command("contamination")
    def contamination_cmd(
        cocktail: Path = typer.Argument(..., help="Cocktail YAML (see configs/cocktails/)."),
        n: int | None = typer.Option(None, "--n", min=1, help="n-gram length in words (default: the cocktail's, 13)."),
        drop: bool = typer.Option(False, "--drop", help="Build the cocktail without the contaminated examples and show what is left."),
        out: Path | None = typer.Option(None, "--out", help="Write the JSON report here."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON report instead of tables."),
        show_all: bool = typer.Option(False, "--all", help="List every pair, not only those that overlap."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder."),
    ) -> None:
        """Report n-gram overlap between every training source and every validation/test split."""
        from rich.console import Console
        from rich.table import Table

        from fincocktail.cocktail import (
            build_cocktail,
            load_cocktail,
            load_sources,
            resolve_tasks,
        )
        from fincocktail.data.contamination import contamination_for_cocktail
        from fincocktail.plumbing.fileio import write_json_atomic
        from fincocktail.plumbing.paths import find_data_dir

        cfg = load_cocktail(cocktail)
        n_words = n or cfg.decontaminate.n
        root = find_data_dir(data_dir)
        tasks = resolve_tasks(cfg, source=str(cocktail))
        sources = load_sources(tasks, root)
        report = contamination_for_cocktail(sources, root, n=n_words, cocktail_tasks=tasks.values())
        report.dropped = drop
        payload = {"cocktail": str(cocktail), "data_dir": str(root), **report.to_json()}
        if drop:
            built = build_cocktail(cfg, sources, tasks, drop_ids=report.contaminated_ids, source=str(cocktail))
            payload["after_drop"] = {
                task: {"available": len(built.sources[task]), "examples_per_epoch": len([1 for s, _ in built.epochs[0] if s == task])}
                for task in built.sources
            }
        if out is not None:
            write_json_atomic(out, payload)
        if as_json:
            print(json.dumps(payload, indent=2))
            return
        console = Console()
        table = Table(title=f"{n_words}-gram overlap: {cocktail}")
        for col in ("train source", "eval split", "train ex.", "contaminated", "%", "eval ex. hit"):
            table.add_column(col, justify="right" if col not in ("train source", "eval split") else "left")
        shown = 0
        for p in report.pairs:
            if not show_all and p.contaminated_train == 0:
                continue
            shown += 1
            table.add_row(
                p.train_task,
                f"{p.eval_task}/{p.eval_split}",
                str(p.train_examples),
                str(p.contaminated_train),
                f"{100 * p.train_fraction:.2f}",
                f"{p.contaminated_eval}/{p.eval_examples}",
            )
        if shown:
            console.print(table)
        else:
            console.print(f"no {n_words}-gram overlap in {len(report.pairs)} (train source, eval split) pairs")
        totals = ", ".join(f"{t}: {len(ids)}" for t, ids in report.contaminated_ids.items())
        console.print(f"contaminated training examples per source: {totals}")
        if report.skipped:
            console.print(f"[yellow]not checked[/]: {', '.join(sorted(report.skipped))}")
        if drop:
            left = ", ".join(f"{t}: {v['available']} left" for t, v in payload["after_drop"].items())
            console.print(f"after --drop: {left}")
        if out is not None:
            console.print(f"report written to {out}")
