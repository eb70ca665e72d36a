"""From a sweep's output folder to the written report: the one path `report` and `reproduce` share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.report.analysis import Analysis, any_test_selected
from fincocktail.report.published import PUBLISHED
from fincocktail.report.render import write_report


@dataclass(frozen=True)
class BuiltReport:
    html: Path
    md: Path
    analysis: Analysis


def sweep_dir(sweep: str | os.PathLike) -> Path:
    """A sweep's output folder from a folder path, a sweep YAML, or a sweep name (sweeps/NAME)."""
    p = Path(sweep)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        from fincocktail.sweep.spec import load_plan

        return load_plan(p, check_tasks=False).out_dir
    if p.is_dir():
        return p
    named = Path("sweeps") / str(sweep)
    if named.is_dir():
        return named
    raise ConfigError(f"sweep {sweep!r}: no results folder found (looked at {p} and {named}); run `fincocktail sweep run` first")


def latest_sweep_dir(root: Path = Path("sweeps")) -> Path:
    """The most recently updated sweep results folder under `root`."""
    stores = sorted(root.glob("*/results.sqlite"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not stores:
        raise ConfigError(f"no sweep results under {root}/; run `fincocktail sweep run SWEEP.yaml` or pass --sweep")
    return stores[-1].parent


def planned_selection_metric(results_dir: Path) -> str:
    """The sweep file's `eval.selection_metric` as its plan.json recorded it ("primary" when absent)."""
    import json

    try:
        plan = json.loads((Path(results_dir) / "plan.json").read_text(encoding="utf-8"))
        return str(plan["sweep"]["eval"].get("selection_metric") or "primary")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "primary"


def build_report(results_dir: Path, out: Path | None = None, title: str | None = None,
                 selection_metric: str | None = None) -> BuiltReport:
    from fincocktail.report.records import from_store
    from fincocktail.sweep.store import SIMULATED_MARK, ResultsStore

    store = ResultsStore.in_dir(results_dir, create=False)
    data = from_store(store, title=title or f"fincocktail report: {results_dir.name}")
    if store.simulated():  # fake scores never pass for measured ones, whatever the title
        data.title = f"{SIMULATED_MARK}: {data.title}"
    if not data.runs:
        raise FincocktailError(f"{store.path}: no finished runs yet; nothing to report")
    data.published = PUBLISHED
    data.results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "report"
    selection = selection_metric or planned_selection_metric(results_dir)
    html, md = write_report(data, out, selection=selection)  # type: ignore[arg-type]
    return BuiltReport(html, md, Analysis(data, selection=selection))  # type: ignore[arg-type]


SHORT = {"base zero-shot": "base", "best single-task": "single", "best cocktail": "cocktail",
         "cocktail + general": "+general", "cocktail + math": "+math"}


def _compact(v) -> str:
    from fincocktail.report.analysis import Score

    if v is None:
        return "-"
    if isinstance(v, tuple):
        v = v[1]
    if isinstance(v, Score):
        half = "" if v.low is None or v.high is None else f"±{(v.high - v.low) / 2:.2f}"
        return f"{v.value:.3f}{half}" + ("†" if v.test_selected else "")
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_main_table(built: BuiltReport, console: Console | None = None) -> None:
    """The main table, compact enough for an 80-column terminal (full labels are in the report)."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 110))
    rows = built.analysis.main_table()
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k not in ("task", "metric")
                 and (not k.endswith("(published)") or k.startswith("GPT-4o"))]
    table = Table(title="Main table: test score (95% half-width)")
    table.add_column("task")
    for c in cols:
        table.add_column(SHORT.get(c, c.replace(" (published)", "*")), justify="right")
    for r in rows:
        table.add_row(r["task"], *[_compact(r.get(c)) for c in cols])
    console.print(table)
    console.print("[dim]* published (FinLoRA), not measured here[/]"
                  + ("[dim]; † chosen on test (no validation scores in this sweep)[/]" if any_test_selected(rows) else ""))
    from fincocktail.report.findings import findings
    from fincocktail.report.render import claim_summary

    console.print("[bold]Findings[/] (paired contrasts, Holm-adjusted; details in the report):")
    for line in claim_summary(findings(built.analysis)):
        console.print(f"  {line}", highlight=False, markup=False)
    console.print(f"report: [bold]{built.html}[/] (and {built.md.name} beside it)")
