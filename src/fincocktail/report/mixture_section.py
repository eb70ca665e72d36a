"""The report's Mixture search section, and the recommended mixture's column in the main table.

It appears when a search has written `OUT/mix/NAME/summary.json`. Validation-side numbers (the
recommendation, the surrogate's checks, the plot) come from that summary; test scores are read
fresh from the report's data, so a report rebuilt after more runs is current. Test scores are
only ever displayed here, never used to choose.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import json

from fincocktail.report.analysis import Analysis
from fincocktail.report.mixture_compare import NOTE, compare, table, verdict
from fincocktail.report.records import ReportData
from fincocktail.report.tables import cell, md_table

SUMMARY_FILE = "summary.json"  # written by `mix search` into OUT/mix/NAME/


def load_summaries(results_dir: Path) -> list[dict[str, Any]]:
    """Every search's summary under `OUT/mix/*/` (what this section shows)."""
    out = []
    for path in sorted((Path(results_dir) / "mix").glob(f"*/{SUMMARY_FILE}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        data["dir"] = str(path.parent)
        out.append(data)
    return out


def _column(name: str) -> str:
    return f"recommended mixture (mix search {name})"


def add_main_column(main: Any, an: Analysis, summary: dict[str, Any]) -> None:
    """Put the recommended mixture's test scores in the main table, before the API and published columns."""
    ids = set(summary["recommended"]["run_ids"])
    runs = [r for r in an.data.runs if r.run_id in ids]
    at = next((i for i, h in enumerate(main.header) if h.startswith("API ") or h.endswith("(published)")), len(main.header))
    main.header.insert(at, _column(summary["name"]))
    for row in main.rows:
        row.insert(at, cell(an.score(runs, row[0], "test")))


def section(data: ReportData, an: Analysis, main: Any, out: Path) -> tuple[str, str]:
    """(markdown, html) of every search's section; the main table gains one column per search. Empty without a search."""
    results_dir = getattr(data, "results_dir", None)
    summaries = [s for s in load_summaries(results_dir) if s.get("recommended")] if results_dir else []
    md: list[str] = []
    parts: list[str] = []
    for s in summaries:
        add_main_column(main, an, s)
        m, h = _one(s, an, Path(out))
        md.append(m)
        parts.append(h)
    return "\n".join(md), "".join(parts)


def _one(s: dict[str, Any], an: Analysis, out: Path) -> tuple[str, str]:
    main_obj = s["objectives"][0]
    rec = s["recommended"]
    sur = s["surrogate"]["objectives"][main_obj]
    mixture = ", ".join(f"{t} {c}" for t, c in rec["counts"].items() if c)
    race = s.get("race")
    if race:  # a racing search: its own runs only, read on learning curves
        stopped = sum(1 for p in race["proposals"] if p["stopped_at"] is not None)
        how = (f". Racing: {s['proposed']} mixtures proposed in {s['rounds']} rounds, {stopped} stopped early at rungs "
               f"{', '.join(f'{f:g}' for f in race['fractions'][:-1])} of their steps, {race['spent_hours']:.2f} "
               f"{race['unit']} spent; scores are the validation likelihood on the learning curves ({s['surrogate']['mixtures']} "
               f"mixtures finished, {s['surrogate']['runs']} runs with the replicates; `race.md` has every rung)")
    else:
        how = (f". {s['proposed']} mixtures proposed in {s['rounds']} rounds, on top of the sweep's runs "
               f"({s['surrogate']['mixtures']} mixtures, {s['surrogate']['runs']} runs in all)")
    lines = [
        f"Objective: validation **{', '.join(s['objectives'])}**"
        + (f"; constraints: {', '.join(s['constraints'])}" if s["constraints"] else "") + how + ".",
        f"Recommended: {mixture} (total {rec['total']} examples per epoch; {rec['source']}), validation {main_obj} "
        f"{rec['objectives'][main_obj]['measured']:.3f}; cocktail file `{Path(s['dir']) / 'recommended.yaml'}`.",
        f"Surrogate (one Gaussian process per task): leave-one-mixture-out Spearman {sur['spearman']:.2f} on the objective; "
        f"{sur['coverage90']:.0%} of measurements inside the predicted 90% interval (calibrated: 90%).",
    ]
    if s.get("recommended_meets_constraints") is False:
        lines.append("No evaluated mixture met the constraints: the recommendation is the best one regardless.")
    rows = compare(an, rec["run_ids"], s["weights"][main_obj])
    header, body = table(rows)
    png_name = f"mix_{s['name']}.png"
    plot = Path(s["dir"]) / "predicted_vs_measured.png"
    png = plot.read_bytes() if plot.is_file() else b""
    if png:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        (out / "plots" / png_name).write_bytes(png)
    title = f"Mixture search: {s['name']}"
    pareto = _pareto_rows(s)
    md = [f"## {title}", "", *[f"- {x}" for x in lines], ""]
    if png:
        md += [f"![predicted vs measured](plots/{png_name})", ""]
    md += ["On test (95% paired intervals, Holm-adjusted; * = excludes 0):", "", _md(header, body), "", verdict(rows), "", NOTE, ""]
    if pareto:
        md += ["Pareto front (measured validation):", "", _md(*pareto), ""]
    body_html = (f"<h2>{html.escape(title)}</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"
                 + (f"<img class='plot' id='plot-mix-{html.escape(s['name'])}' alt='predicted vs measured' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else "")
                 + _html(header, body) + f"<p>{html.escape(verdict(rows))}</p><p class='note'>{html.escape(NOTE)}</p>"
                 + (_html(*pareto) if pareto else ""))
    return "\n".join(md), body_html


def _pareto_rows(s: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    if not s.get("pareto"):
        return None
    by_ids = {tuple(r["run_ids"]): r for r in s["mixtures"]}
    header = ["mixture", "from", *s["objectives"]]
    rows = []
    for ids in s["pareto"]:
        r = by_ids[tuple(ids)]
        rows.append([" ".join(f"{t}:{c}" for t, c in r["counts"].items() if c), r["source"],
                     *[f"{r['objectives'][o]['measured']:.3f}" for o in s["objectives"]]])
    return header, rows


def _md(header: list[str], rows: list[list[str]]) -> str:
    return md_table(header, rows) if rows else "_The recommended mixture has no test scores yet._"


def _html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='t'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
