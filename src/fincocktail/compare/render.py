"""`fincocktail compare` output: a rich table for the terminal, and a self-contained HTML page.

The HTML page embeds its one figure (each difference with its 95% paired interval, a forest
plot) as a data URI, so it can be mailed or attached to a pull request as a single file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from fincocktail.compare.stats import Comparison, TaskDelta


def _p(d: TaskDelta) -> str:
    if d.mcnemar is None:
        return "-"
    return f"{d.mcnemar.p_value:.3g} ({d.mcnemar.b}/{d.mcnemar.c})"


def _verdict(d: TaskDelta) -> str:
    if not d.significant:
        return "no clear difference"
    return f"{d.other} better" if d.delta > 0 else f"{d.reference} better"


def runs_table(cmp: Comparison):
    from rich.table import Table

    table = Table(title="runs", show_edge=False)
    for col in ("run", "model", "folder"):
        table.add_column(col)
    for r in cmp.runs:
        table.add_row(r["label"], r["model"], r["path"])
    return table


def deltas_table(cmp: Comparison):
    from rich.table import Table

    table = Table(title=f"fincocktail compare ({cmp.split}, paired bootstrap {cmp.n_resamples}x, seed {cmp.seed})")
    for col in ("task", "measure", "n", "A", "other", "value", "delta", "95% CI", "McNemar p (b/c)", "disagree", "verdict"):
        table.add_column(col, justify="left" if col in ("task", "measure", "other", "verdict") else "right")
    for d in cmp.deltas:
        table.add_row(
            d.task, d.measure, str(d.n), f"{d.value_a:.3f}", d.other, f"{d.value_b:.3f}", f"{d.delta:+.3f}",
            f"[{d.low:+.3f}, {d.high:+.3f}]", _p(d), str(d.n_disagree), _verdict(d),
        )
    return table


def shift_table(d: TaskDelta):
    from rich.table import Table

    table = Table(title=f"{d.task}: per-class shift, {d.reference} -> {d.other}", show_edge=False)
    for col in ("gold class", "n", f"recall {d.reference}", f"recall {d.other}", "delta", f"predicted {d.reference}", f"predicted {d.other}"):
        table.add_column(col, justify="left" if col == "gold class" else "right")
    for s in d.class_shift or []:
        table.add_row(s.label, str(s.n_gold), f"{s.recall_a:.3f}", f"{s.recall_b:.3f}", f"{s.recall_b - s.recall_a:+.3f}", str(s.predicted_a), str(s.predicted_b))
    return table


def _short(v: Any, width: int = 40) -> str:
    text = "-" if v is None else str(v).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def disagreement_table(d: TaskDelta, limit: int):
    from rich.table import Table

    table = Table(title=f"{d.task} ({d.measure}): {d.n_disagree} examples answered differently by {d.reference} and {d.other}, first {min(limit, d.n_disagree)}", show_edge=False)
    for col in ("id", "gold", d.reference, d.other):
        table.add_column(col)
    for x in d.disagreements[:limit]:
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        table.add_row(x["id"], _short(x["gold"]), f"{mark(x['a_correct'])} {_short(x['a'])}", f"{mark(x['b_correct'])} {_short(x['b'])}")
    return table


def print_comparison(cmp: Comparison, console: Any, show: int = 5) -> None:
    console.print(runs_table(cmp))
    console.print(deltas_table(cmp))
    for d in cmp.deltas:
        if d.class_shift:
            console.print(shift_table(d))
        if show and d.disagreements:
            console.print(disagreement_table(d, show))
    for note in cmp.notes:
        console.print(f"note: {note}", highlight=False)


# --- HTML ---------------------------------------------------------------------------------------


def forest_plot(cmp: Comparison) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cmp.deltas
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    others = sorted({d.other for d in rows})
    for yi, d in zip(y, rows):
        color = colors[others.index(d.other) % len(colors)]
        ax.errorbar(d.delta, yi, xerr=[[d.delta - d.low], [d.high - d.delta]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{d.task} {d.measure} ({d.other} - {d.reference})" for d in rows])
    ax.set_xlabel("difference with 95% paired bootstrap interval")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _table(head: list[str], body: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{rows}</tbody></table>"


def write_html(cmp: Comparison, path: Path, show: int = 50) -> Path:
    png = base64.b64encode(forest_plot(cmp)).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fincocktail compare</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}th{background:#f3f3f3}</style></head><body>",
        "<h1>fincocktail compare</h1>",
        _table(["run", "model", "folder"], [[r["label"], r["model"], r["path"]] for r in cmp.runs]),
        f"<h2>Differences ({html.escape(cmp.split)} split; 95% paired bootstrap, {cmp.n_resamples} resamples, seed {cmp.seed})</h2>",
        f"<img alt='differences with 95% intervals' src='data:image/png;base64,{png}'>",
        _table(
            ["task", "measure", "n", "A", "other", "value", "delta", "95% CI", "McNemar p (b/c)", "disagree", "verdict"],
            [[d.task, d.measure, d.n, f"{d.value_a:.3f}", d.other, f"{d.value_b:.3f}", f"{d.delta:+.3f}",
              f"[{d.low:+.3f}, {d.high:+.3f}]", _p(d), d.n_disagree, _verdict(d)] for d in cmp.deltas],
        ),
    ]
    for d in cmp.deltas:
        parts.append(f"<h3>{html.escape(d.task)} ({html.escape(d.measure)}): {html.escape(d.reference)} vs {html.escape(d.other)}</h3>")
        if d.class_shift:
            parts.append(_table(
                ["gold class", "n", f"recall {d.reference}", f"recall {d.other}", "delta", f"predicted {d.reference}", f"predicted {d.other}"],
                [[s.label, s.n_gold, f"{s.recall_a:.3f}", f"{s.recall_b:.3f}", f"{s.recall_b - s.recall_a:+.3f}", s.predicted_a, s.predicted_b] for s in d.class_shift],
            ))
        parts.append(f"<p>{d.n_disagree} examples answered differently (first {min(show, d.n_disagree)}; ✓ = correct).</p>")
        parts.append(_table(
            ["id", "gold", d.reference, d.other],
            [[x["id"], _short(x["gold"], 80), f"{'✓' if x['a_correct'] else '✗'} {_short(x['a'], 80)}",
              f"{'✓' if x['b_correct'] else '✗'} {_short(x['b'], 80)}"] for x in d.disagreements[:show]],
        ))
    if cmp.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in cmp.notes) + "</ul>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
