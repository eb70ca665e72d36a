"""Tables as the report shows them: a title, a header, rows of text, and their Markdown and HTML.

Their own module so that every section of the report (the core tables, the mixture-search
section) formats cells and tables the same way without importing the renderer.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from fincocktail.report.analysis import Score


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, tuple):
        v = v[1]
    if isinstance(v, Score):
        seeds = f"{v.n_seeds} seed{'s' if v.n_seeds != 1 else ''}"
        return v.fmt() + (f" ({v.label}; {seeds})" if v.label else f" ({seeds})") + (" *test-selected*" if v.test_selected else "")
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def md_section(t: Table) -> str:
    lines = [f"## {t.title}", ""]
    if not t.rows:
        return "\n".join(lines + ["_No runs for this section._", ""])
    lines.append(md_table(t.header, t.rows))
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines + [""])


def html_section(t: Table) -> str:
    if not t.rows:
        return f"<h2>{html.escape(t.title)}</h2><p><em>No runs for this section.</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2><table class='t'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A bare Markdown table (no heading, no note)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
