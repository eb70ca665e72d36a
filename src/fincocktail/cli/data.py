"""`fincocktail data`: is the data where we expect it, and how to get it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fincocktail.errors import DataError

app = typer.Typer(no_args_is_help=True)
console = Console()

DataDirOpt = typer.Option(None, "--data-dir", help="Data folder (default: $FINCOCKTAIL_DATA, ./data, ../shared/data).")


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("check")
def check_cmd(
    data_dir: Optional[Path] = DataDirOpt,
    verify: bool = typer.Option(False, "--verify", help="Also compare every file's sha256 (slower)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show, per dataset, which files are found or missing, with their sizes."""
    from fincocktail.data.catalog import DATASETS
    from fincocktail.data.fetch import check
    from fincocktail.plumbing.paths import find_data_dir

    root = find_data_dir(data_dir)
    statuses = check(root, verify=verify)
    bad = [s for s in statuses if s.state not in ("ok", "present")]
    if as_json:
        print(json.dumps({"data_dir": str(root), "files": [s.__dict__ for s in statuses]}, indent=2))
    else:
        table = Table(title=f"datasets in {root}")
        for col in ("dataset", "status", "files", "size", "licence"):
            table.add_column(col)
        for d in DATASETS:
            mine = [s for s in statuses if s.dataset == d.name]
            n_ok = sum(s.state in ("ok", "present") for s in mine)
            state = "found" if n_ok == len(mine) else ("missing" if n_ok == 0 else "incomplete")
            colour = {"found": "green", "missing": "red"}.get(state, "yellow")
            size = sum(s.size or 0 for s in mine)
            lic = d.licence if d.commercial_use else f"{d.licence}; non-commercial"
            table.add_row(d.name, f"[{colour}]{state}[/]", f"{n_ok}/{len(mine)}", _human(size), lic)
        console.print(table)
        for s in bad:
            console.print(f"[yellow]{s.state}[/]: {root / s.path}")
    if bad:
        names = sorted({s.dataset for s in bad})
        raise DataError(
            f"{len(bad)} dataset file(s) missing or different in {root} (datasets: {', '.join(names)}); "
            f"put the original files under {root}/<dataset>/ as listed above, or run `fincocktail data fetch --data-dir {root}`"
        )


@app.command("fetch")
def fetch_cmd(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where to put the data (default: ./data)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated dataset names."),
) -> None:
    """Download the public copies of the datasets (needs network), verified by sha256."""
    from fincocktail.data.fetch import fetch_file, select

    root = Path(data_dir) if data_dir else Path.cwd() / "data"
    datasets = select(only.split(",") if only else None)
    n_new = 0
    for d in datasets:
        for f in d.files:
            with console.status(f"fetching {f.path}"):
                got = fetch_file(root, f)
            n_new += got
            console.print(f"{'downloaded' if got else 'up to date'}: {f.path}")
    console.print(f"[green]{n_new} file(s) downloaded into {root}[/]")


def _register_extras() -> None:
    """Commands owned by other modules that live under `fincocktail data`."""
    try:
        from fincocktail.cli import contamination
    except ImportError:  # pragma: no cover - module not written yet
        return
    contamination.register(app)


_register_extras()
