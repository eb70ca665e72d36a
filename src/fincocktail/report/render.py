"""Write `report.md` (with PNGs beside it) and a self-contained `report.html` (PNGs embedded)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

from fincocktail.report.analysis import Analysis, Delta, Score
from fincocktail.report.plots import all_plots
from fincocktail.report.published import PUBLISHED_SOURCE
from fincocktail.report.records import ReportData

SELECTION_NOTE = (
    "Every choice of a 'best' recipe (best single-task, best cocktail, best with general or math data) "
    "is made on the validation split; every score shown is on the test split. Scores are the task's "
    "headline metric; intervals are 95% (across seeds when a recipe has several, else the bootstrap "
    "interval over test examples)."
)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        v = v[1]
    if isinstance(v, Score):
        return v.fmt() + (f" ({v.label})" if v.label else "") + ("" if v.selected_on == "validation" else " *test-selected*")
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def main_table(an: Analysis) -> Table:
    rows = an.main_table()
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return Table(
        "Main table (test scores; recipes selected on validation)",
        cols,
        [[_cell(r.get(c)) for c in cols] for r in rows],
        note=f"'(published)' columns are not measured here: {PUBLISHED_SOURCE}.",
    )


def _delta_table(title: str, deltas: list[Delta], note: str = "") -> Table:
    rows = []
    for d in deltas:
        iv = "n/a" if math.isnan(d.low) else f"[{d.low:+.3f}, {d.high:+.3f}]"
        mark = "**yes**" if d.significant else "no"
        rows.append([d.task, d.recipe, d.reference, f"{d.value:+.3f}", iv, d.method, mark])
    return Table(title, ["task", "recipe", "vs", "delta", "95% interval", "interval from", "excludes 0"], rows, note)


def cost_table(an: Analysis) -> Table:
    rows = [[r.run_id, r.cocktail_name, str(r.seed), f"{r.tokens_trained:,}", f"{r.wall_time_s:.0f}",
             f"{r.peak_rss_mb:.0f}"] for r in an.costs()]
    return Table("Cost per training run", ["run", "cocktail", "seed", "tokens trained", "wall time (s)", "peak RSS (MB)"], rows)


def all_tables(an: Analysis) -> list[Table]:
    return [
        main_table(an),
        _delta_table("Cocktail effect (cocktail minus the task's single-task recipe)", an.cocktail_effects()),
        _delta_table("Ingredient ablation (with general / math data minus without)", an.ablations()),
        _delta_table("Domain knowledge check (fine-tuned minus base, CFA / FinanceBench)", an.knowledge_check(),
                     note="The study found task fine-tuning does not raise broad domain knowledge."),
        cost_table(an),
    ]


def _md_table(t: Table) -> str:
    lines = [f"## {t.title}", ""]
    if not t.rows:
        return "\n".join(lines + ["_No runs for this section._", ""])
    lines.append("| " + " | ".join(t.header) + " |")
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines + [""])


def _html_table(t: Table) -> str:
    if not t.rows:
        return f"<h2>{html.escape(t.title)}</h2><p><em>No runs for this section.</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2><table class='t'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


PLOT_TITLES = {
    "main": "Per-task scores",
    "cocktail_effect": "Cocktail effect",
    "transfer": "Transfer heatmap",
    "ablation": "Ingredient ablation",
    "knowledge": "Domain knowledge",
}

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table.t{border-collapse:collapse;margin:1em 0;font-size:13px}table.t td,table.t th{border:1px solid #ccc;padding:3px 6px}
table.t th{background:#f0f0f0}.note{color:#555;font-size:13px}img.plot{max-width:100%;border:1px solid #eee}"""


# Records on <body> how many plots decoded and how many table rows exist, so a headless browser
# test (and a curious user) can tell a page that renders from one that merely loads.
SELF_CHECK = """<script>window.addEventListener('load',function(){var im=[].slice.call(document.images);
document.body.dataset.plotsRendered=im.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;
document.body.dataset.plots=im.length;document.body.dataset.tableRows=document.querySelectorAll('table.t tbody tr').length;});</script>"""


def write_report(data: ReportData, out: Path, primary_metric: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write report.md, plots/*.png and report.html into `out`; return (html, md) paths."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    an = Analysis(data, primary_metric)
    tables = all_tables(an)
    plots = all_plots(an)
    for name, png in plots.items():
        (out / "plots" / f"{name}.png").write_bytes(png)

    md = [f"# {data.title}", "", SELECTION_NOTE, ""]
    md.append(_md_table(tables[0]))
    for name, png in plots.items():
        md += [f"### {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}](plots/{name}.png)", ""]
    md += [_md_table(t) for t in tables[1:]]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    figs = "".join(
        f"<h3>{PLOT_TITLES[n]}</h3><img class='plot' id='plot-{n}' alt='{PLOT_TITLES[n]}' "
        f"src='data:image/png;base64,{base64.b64encode(p).decode()}'>"
        for n, p in plots.items()
    )
    body = (f"<h1>{html.escape(data.title)}</h1><p class='note'>{html.escape(SELECTION_NOTE)}</p>"
            + _html_table(tables[0]) + figs + "".join(_html_table(t) for t in tables[1:]))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
            f"<style>{CSS}</style></head><body>{body}{SELF_CHECK}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, md_path
