"""`fincocktail results`: the metrics of a sweep's finished runs, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fincocktail.errors import ConfigError

FIELDS = (
    "run_id", "kind", "model", "cocktail", "train_tasks", "general", "math", "seed",
    "task", "split", "metric", "value", "ci_low", "ci_high", "n", "predictions", "simulated",
)


def find_out_dir(out: Path | None) -> Path:
    """--out, else the only sweep folder under ./sweeps."""
    from fincocktail.sweep.store import STORE_FILE

    if out is not None:
        return out
    found = sorted(p.parent for p in Path("sweeps").glob(f"*/{STORE_FILE}"))
    if len(found) == 1:
        return found[0]
    if not found:
        fake = sorted(p.parent for p in Path("sweeps").glob(f"*/simulated/{STORE_FILE}"))
        hint = f" (simulated results are in {', '.join(map(str, fake))}: pass that as --out)" if fake else ""
        raise ConfigError(f"no results store under ./sweeps; pass --out DIR (the folder given to `fincocktail sweep run`){hint}")
    raise ConfigError(f"several sweeps under ./sweeps ({', '.join(p.name for p in found)}); pick one with --out DIR")


def result_rows(out_dir: Path, split: str | None, all_metrics: bool) -> list[dict[str, Any]]:
    from fincocktail.sweep.store import ResultsStore

    store = ResultsStore.in_dir(out_dir, create=False)
    runs = {r.run_id: r for r in store.runs(status="done")}
    simulated = store.simulated()
    rows = []
    from fincocktail.metrics.likelihood import LIKELIHOOD_KEYS

    for m in store.metrics(split=split):
        r = runs.get(m.run_id)
        if r is None or not (all_metrics or m.headline or m.metric in LIKELIHOOD_KEYS):  # headline + likelihood by default
            continue
        rows.append(
            {
                "run_id": r.run_id, "kind": r.kind, "model": r.model, "cocktail": r.label,
                "train_tasks": "+".join(r.train_tasks), "general": r.general, "math": r.math, "seed": r.seed,
                "task": m.task, "split": m.split, "metric": m.metric, "value": m.value,
                "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n, "predictions": m.predictions,
                "simulated": simulated or bool((r.card or {}).get("simulated")),
            }
        )
    return rows


STANDARD_SPLITS = ("train", "validation", "test")


def check_split(out_dir: Path, split: str | None) -> None:
    """A --split the store has never seen and no task defines is a typo, not an empty table."""
    from fincocktail.sweep.store import ResultsStore

    if split in (None, "all") or split in STANDARD_SPLITS:
        return
    known = ResultsStore.in_dir(out_dir, create=False).splits()
    if split not in known:
        choices = ", ".join(sorted(set(known) | set(STANDARD_SPLITS)) + ["all"])
        raise ConfigError(f"--split {split!r}: no results for that split in {out_dir}; expected one of {choices}")


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        out: Path | None = typer.Option(None, "--out", "-o", help="Sweep output folder (default: the only one under ./sweeps)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per metric, as a list."),
        as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout, one line per metric."),
        split: str | None = typer.Option("test", "--split", help="Split to show ('all' for every split)."),
        all_metrics: bool = typer.Option(False, "--all-metrics", help="Every metric, not only each task's headline one and its likelihood (gold_prob / gold_logprob_per_token)."),
    ) -> None:
        """Metrics of a sweep's finished runs (headline metric per task, 95% interval)."""
        if as_json and as_csv:
            raise ConfigError("--json and --csv: pick one")
        out_dir = find_out_dir(out)
        check_split(out_dir, split)
        rows = result_rows(out_dir, None if split == "all" else split, all_metrics)
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        if as_csv:
            writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return
        Console().print(_table(rows, out_dir))


def _table(rows: list[dict[str, Any]], out_dir: Path) -> Any:
    from rich.table import Table

    tasks: list[tuple[str, str, str]] = []
    by_run: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = (r["task"], r["split"], r["metric"])
        if key not in tasks:
            tasks.append(key)
        entry = by_run.setdefault(r["run_id"], {"row": r, "values": {}})
        entry["values"][key] = r
    from fincocktail.sweep.store import SIMULATED_MARK

    fake = any(r["simulated"] for r in rows)
    mark = f" {SIMULATED_MARK}" if fake else ""
    table = Table(title=f"results: {out_dir} ({len(by_run)} finished runs){mark}", title_justify="left")
    for col in ("model", "cocktail", "seed"):
        table.add_column(col)
    multi_split = len({t[1] for t in tasks}) > 1
    for task, split, metric in tasks:
        head = f"{task}\n{metric}" + (f"\n{split}" if multi_split else "")
        table.add_column(head, justify="right")
    for entry in by_run.values():
        r = entry["row"]
        cells = [r["model"], r["cocktail"], str(r["seed"]) if r["kind"] in ("single", "cocktail", "mixture", "matched") else "-"]
        for key in tasks:
            m = entry["values"].get(key)
            if m is None:
                cells.append("")
            elif m["ci_low"] is not None and m["ci_high"] is not None:
                cells.append(f"{m['value']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]")
            else:
                cells.append(f"{m['value']:.3f}")
        table.add_row(*cells)
    return table
