"""Write `report.md` (with PNGs beside it) and a self-contained `report.html` (PNGs embedded)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from fincocktail.report.analysis import Analysis, Delta, any_test_selected
from fincocktail.report.findings import ALPHA, CLAIMS, NON_SUPERIORITY_MARGIN, Findings, findings
from fincocktail.report.plots import all_plots
from fincocktail.report.published import PUBLISHED_SOURCE
from fincocktail.report.records import ReportData
from fincocktail.report.tables import Table, cell, html_section, md_section

SELECTION_NOTE = (
    "Every choice of a 'best' recipe (best single-task, best cocktail, best with general or math data) "
    "is made on the validation split; every score shown is on the test split. Scores are the task's "
    "headline metric; intervals are 95% (across seeds when a recipe has several, else the bootstrap "
    "interval over test examples)."
)
TEST_SELECTION_NOTE = (
    "Some 'best' recipes could not be chosen on validation (the sweep has no validation scores for "
    "them): those cells are marked *test-selected* and overstate the recipe. Scores are the task's "
    "headline metric on the test split; intervals are 95%."
)
FINDINGS_NOTE = (
    "Each claim is tested per task by one paired contrast fixed by the design (not chosen on test): "
    "(a) the largest cocktail containing the task vs its single-task run; (b) / (c) the largest cocktail "
    "with general / math data vs the same cocktail without; (d) the largest cocktail vs the zero-shot model. "
    "Effect = difference of the recipes' mean test scores over seeds, on the same test rows. Its 95% interval "
    "adds seed-to-seed variance (between-seed variance / seeds; a one-seed recipe borrows the task's pooled "
    "between-seed variance; the zero-shot model has no seed and adds none) and test-sample variance (paired per-example differences). p-values of all "
    f"contrasts form one family, adjusted by Holm's step-down method; a verdict needs adjusted p < {ALPHA:g}, "
    "otherwise it is inconclusive, with the test examples (or, where the seeds are the limit, the seeds per "
    "recipe) that would detect the observed effect (80% power, at the family's Bonferroni level). "
    f"Claim (d) is a non-superiority test: supported when the gain is shown to be below {NON_SUPERIORITY_MARGIN:g}, "
    "contradicted when the 95% interval lies above 0."
)


def findings_table(f: Findings) -> Table:
    rows = []
    for key, text in CLAIMS.items():
        cs = f.for_claim(key)
        if not cs:
            rows.append([f"({key}) {text}", "–", "–", "–", "–", "–", f"not tested: {f.untested.get(key, 'no runs')}", "–"])
        for c in cs:
            verdict = f"**{c.verdict}**" if c.verdict != "inconclusive" else "inconclusive"
            if c.verdict == "inconclusive":
                if c.same_score is not None:
                    verdict += (f" (every run of both recipes was right or wrong on the same rows, score {c.same_score:.3f}: "
                                "nothing to tell apart at this size)")
                elif c.needed_examples:
                    verdict += f" (needs ~{c.needed_examples:,} test examples)"
                elif c.needed_seeds:
                    verdict += f" (needs ~{c.needed_seeds} seeds per recipe)"
                else:
                    verdict += " (too small to settle with up to 50 seeds per recipe at this test size)"
            seeds = f"{c.seeds[0]} vs {c.seeds[1]} seeds" + ("" if c.seed_variance == "measured" else f" ({c.seed_variance} seed variance)")
            rows.append([f"({key}) {text}", c.task, f"{c.recipe} vs {c.reference}", f"{c.effect:+.3f}",
                         f"[{c.low:+.3f}, {c.high:+.3f}]", f"{c.p_holm:.3g}", verdict, f"{seeds}, n={c.n_examples}"])
    return Table("Findings: the study's claims, tested", ["claim", "task", "comparison", "effect", "95% interval",
                 "p (Holm)", "verdict", "behind it"], rows,
                 note=f"{f.family_size} contrasts in one Holm family. " + FINDINGS_NOTE)


def claim_summary(f: Findings) -> list[str]:
    return [f"({key}) {text}: {f.summary(key)}" for key, text in CLAIMS.items()]


def main_table(an: Analysis, rows: list[dict]) -> Table:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return Table(
        "Main table (test scores; recipes selected on "
        + ("validation where possible" if any_test_selected(rows) else "validation") + ")",
        cols,
        [[cell(r.get(c)) for c in cols] for r in rows],
        note=f"{_sample_note(an)} '(published)' columns are not measured here: {PUBLISHED_SOURCE}. The published TFNS number was computed "
        "on FinLoRA's tfns_test.jsonl, whose Bullish/Neutral labels are swapped; it is not comparable with ours.",
    )


def _sample_note(an: Analysis) -> str:
    sizes: dict[str, set[int]] = {}
    for m in an.data.metrics:
        if m.split == "test":
            sizes.setdefault(m.task, set()).add(m.n)
    seeds = sorted({len(runs) for rec, runs in an.recipes.items() if rec[0] in ("single", "cocktail")})
    per_task = ", ".join(f"{t} {'/'.join(str(n) for n in sorted(ns))}" for t, ns in sizes.items())
    return (f"Test rows per task: {per_task} (the same rows for every run; a stratified sample where fewer than all). "
            f"Seeds per trained recipe: {', '.join(map(str, seeds)) or '-'}.")


def selection_note(rows: list[dict]) -> str:
    return TEST_SELECTION_NOTE if any_test_selected(rows) else SELECTION_NOTE


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


def all_tables(an: Analysis, found: Findings, main_rows: list[dict]) -> list[Table]:
    """The report's tables; `found` and `main_rows` are computed once by the caller (they read every
    predictions file and select every recipe)."""
    return [
        findings_table(found),
        main_table(an, main_rows),
        _delta_table("Cocktail effect (cocktail minus the task's single-task recipe)", an.cocktail_effects()),
        _delta_table("Ingredient ablation (with general / math data minus without)", an.ablations()),
        _delta_table("Domain knowledge check (fine-tuned minus base, CFA / FinanceBench)", an.knowledge_check(),
                     note="The study found task fine-tuning does not raise broad domain knowledge."),
        cost_table(an),
    ]


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
document.body.dataset.plots=im.length;document.body.dataset.tableRows=document.querySelectorAll('table.t tbody tr').length;
var h=document.querySelector('h2');document.body.dataset.firstSection=h?h.textContent:'';
document.body.dataset.findingsRows=document.querySelectorAll('#findings tbody tr').length;});</script>"""


def mixture_search_section(data: ReportData, an: Analysis, main: Table, out: Path) -> tuple[str, str]:
    """(markdown, html) of the Mixture search section when `mix search` has run (it also adds the recommended
    mixture's column to `main`); empty otherwise."""
    from fincocktail.report.mixture_section import section

    return section(data, an, main, out)


def write_report(data: ReportData, out: Path, primary_metric: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write report.md, plots/*.png and report.html into `out`; return (html, md) paths."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    an = Analysis(data, primary_metric)
    found = findings(an)
    main_rows = an.main_table()
    tables = all_tables(an, found, main_rows)
    mix_md, mix_html = mixture_search_section(data, an, tables[1], out)
    plots = all_plots(an)
    for name, png in plots.items():
        (out / "plots" / f"{name}.png").write_bytes(png)

    note = selection_note(main_rows)
    summary = claim_summary(found)
    md = [f"# {data.title}", ""]
    md += [md_section(tables[0]), *[f"- {line}" for line in summary], ""]
    md += [note, "", md_section(tables[1]), mix_md]
    for name, png in plots.items():
        md += [f"### {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}](plots/{name}.png)", ""]
    md += [md_section(t) for t in tables[2:]]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    figs = "".join(
        f"<h3>{PLOT_TITLES[n]}</h3><img class='plot' id='plot-{n}' alt='{PLOT_TITLES[n]}' "
        f"src='data:image/png;base64,{base64.b64encode(p).decode()}'>"
        for n, p in plots.items()
    )
    summary_html = "<ul class='claims'>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>"
    body = (f"<h1>{html.escape(data.title)}</h1><section id='findings'>{html_section(tables[0])}{summary_html}</section>"
            f"<p class='note'>{html.escape(note)}</p>"
            + html_section(tables[1]) + mix_html + figs + "".join(html_section(t) for t in tables[2:]))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
            f"<style>{CSS}</style></head><body>{body}{SELF_CHECK}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, md_path
