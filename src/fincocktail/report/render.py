"""Write `report.md` (with PNGs beside it) and a self-contained `report.html` (PNGs embedded)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from fincocktail.report.analysis import Analysis, Delta, SelectionMetric, any_test_selected
from fincocktail.report.findings import ALPHA, CLAIMS, NON_SUPERIORITY_MARGIN, Contrast, Findings, findings
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
    "Each claim is tested per task by one contrast fixed by the design (not chosen on test): "
    "(a) the largest cocktail containing the task vs its single-task run; (b) / (c) the largest cocktail "
    "with general / math data vs the same cocktail without; (d) the largest cocktail vs the zero-shot model. "
    "Effect = difference of the recipes' mean test scores over seeds, on the same test rows. Where both recipes "
    "were trained on the same seeds the contrast is paired by seed (variance of the per-seed differences / seeds); "
    "otherwise each side adds its between-seed variance / seeds (a one-seed recipe borrows the task's pooled "
    "between-seed variance; the zero-shot model has no seed). The test-sample variance of the paired per-example "
    "differences is added; intervals use Student's t with Welch-Satterthwaite degrees of freedom. "
    "Verdicts of (a)-(c) rest on the likelihood metric (the gold answer's probability over the choices, or its "
    "log-likelihood per token) where every run has it: on real runs its paired noise was several times smaller "
    "than accuracy's (docs/results.md); (d) rests on the primary metric, whose points its margin is in. The "
    "verdict-bearing contrasts form one Holm family and the same contrasts on the other metric a second. "
    f"A verdict needs adjusted p < {ALPHA:g} and measured seed noise (a one-seed recipe with nothing to pool from "
    "is inconclusive whatever its p); an inconclusive one names the test examples (or seeds per recipe) that "
    "would detect the observed effect (80% power, at the family's Bonferroni level). "
    f"Claim (d) is a non-superiority test: supported when the gain is shown to be below {NON_SUPERIORITY_MARGIN:g}, "
    "contradicted when the 95% interval lies above 0."
)


ANSWERED_ALWAYS = ("a", "b", "c", "d")  # the study's claims: said even when untested; "a'" only when the design has it


def _verdict_text(c: Contrast) -> str:
    text = f"**{c.verdict}**" if c.verdict != "inconclusive" else "inconclusive"
    return text + (f" ({c.why_inconclusive})" if c.why_inconclusive else "")


def _beside(c: Contrast | None) -> str:
    if c is None:
        return "–"
    return (f"{c.metric_label}: {c.effect:+.3f} [{c.low:+.3f}, {c.high:+.3f}], p {c.p_holm:.3g}, "
            f"{c.verdict}" + (f" ({c.why_inconclusive})" if c.why_inconclusive else ""))


def findings_table(f: Findings) -> Table:
    rows = []
    for key, text in CLAIMS.items():
        cs = f.for_claim(key)
        if not cs and key not in ANSWERED_ALWAYS:
            continue  # an optional contrast (matched steps) the design did not ask for
        if not cs:
            rows.append([f"({key}) {text}", "–", "–", "–", "–", "–", "–", f"not tested: {f.untested.get(key, 'no runs')}", "–", "–"])
        for c in cs:
            seeds = f"{c.seeds[0]} vs {c.seeds[1]} seeds, {c.design}" + ("" if c.seed_variance == "measured" else f" ({c.seed_variance} seed variance)")
            rows.append([f"({key}) {text}", c.task, f"{c.recipe} vs {c.reference}", c.metric_label, f"{c.effect:+.3f}",
                         f"[{c.low:+.3f}, {c.high:+.3f}]", f"{c.p_holm:.3g}", _verdict_text(c), _beside(c.other),
                         f"{seeds}, n={c.n_examples}; se seed {c.seed_se:.3f} / sample {c.sample_se:.3f}"])
    return Table("Findings: the study's claims, tested", ["claim", "task", "comparison", "verdict metric", "effect", "95% interval",
                 "p (Holm)", "verdict", "the other metric (its own Holm family)", "behind it"], rows,
                 note=f"{f.family_size} verdict-bearing contrasts in one Holm family. " + FINDINGS_NOTE)


def claim_summary(f: Findings) -> list[str]:
    return [f"({key}) {text}: {f.summary(key)}" for key, text in CLAIMS.items() if key in ANSWERED_ALWAYS or key not in f.untested]


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


def _delta_table(title: str, deltas: list[Delta], found: Findings, note: str = "") -> Table:
    """Deltas on the primary metric with the interval Findings computes for the same pair; a row that is a
    Findings contrast shows that contrast's Holm-adjusted p and verdict on this metric, so the two never
    disagree; the others are exploratory (no correction, no verdict)."""
    by_pair: dict[tuple[str, str, str], Contrast] = {}
    for c in found.contrasts:
        for m in (c, c.other):
            if m is not None and m.kind == "primary":
                by_pair[(m.task, m.recipe, m.reference)] = m
    rows = []
    for d in deltas:
        iv = "n/a" if math.isnan(d.low) else f"[{d.low:+.3f}, {d.high:+.3f}]"
        design = d.method + ("" if d.seed_noise == "measured" else f", {d.seed_noise} seed variance")
        c = by_pair.get((d.task, d.recipe, d.reference))
        if c is not None:
            verdict = f"Findings ({c.claim}): p {c.p_holm:.3g}, " + _verdict_text(c)
        elif d.seed_noise == "none":
            verdict = "exploratory (seed noise not measured)"
        else:
            verdict = "exploratory (not corrected)"
        rows.append([d.task, d.recipe, d.reference, f"{d.value:+.3f}", iv, design, verdict])
    return Table(title, ["task", "recipe", "vs", "delta", "95% interval", "design", "verdict"], rows,
                 (note + " " if note else "") + "Primary metric; intervals as in Findings (seed + test-sample noise, "
                 "paired by seed where possible). Only rows that are Findings contrasts carry a verdict.")


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
        _delta_table("Cocktail effect (cocktail minus the task's single-task recipe)", an.cocktail_effects(), found),
        _delta_table("Ingredient ablation (with general / math data minus without)", an.ablations(), found),
        _delta_table("Domain knowledge check (fine-tuned minus base, CFA / FinanceBench)", an.knowledge_check(), found,
                     note="The study found task fine-tuning does not raise broad domain knowledge."),
        cost_table(an),
    ]


PLOT_TITLES = {
    "main": "Per-task scores",
    "cocktail_effect": "Cocktail effect",
    "transfer": "Transfer heatmap",
    "ablation": "Ingredient ablation",
    "knowledge": "Domain knowledge",
    "curves": "Learning curves",
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


def write_report(data: ReportData, out: Path, primary_metric: dict[str, str] | None = None,
                 selection: SelectionMetric = "primary") -> tuple[Path, Path]:
    """Write report.md, plots/*.png and report.html into `out`; return (html, md) paths."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    an = Analysis(data, primary_metric, selection=selection)
    found = findings(an)
    main_rows = an.main_table()
    tables = all_tables(an, found, main_rows)
    mix_md, mix_html = mixture_search_section(data, an, tables[1], out)
    plots = all_plots(an)
    for name, png in plots.items():
        (out / "plots" / f"{name}.png").write_bytes(png)

    note = selection_note(main_rows) + (" Recipes are ranked on validation by the gold answer's likelihood where every "
                                        "candidate has it (eval.selection_metric: likelihood), else by the primary metric."
                                        if selection == "likelihood" else "")
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
