"""The report: selection on validation, deltas and their intervals, and the written files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fincocktail.report.analysis import Analysis
from fincocktail.report.records import MetricRecord, ReportData, RunRecord
from fincocktail.report.render import write_report


def _preds(path: Path, correct: list[bool]) -> Path:
    with path.open("w") as fh:
        for i, c in enumerate(correct):
            fh.write(json.dumps({"id": f"ex{i}", "correct": bool(c)}) + "\n")
    return path


def synthetic(tmp_path: Path, seeds=(0,)) -> ReportData:
    rng = np.random.default_rng(1)
    runs, metrics = [], []
    recipes = [
        ("base", ()),
        ("single", ("fpb",)),
        ("single", ("tfns",)),
        ("cocktail", ("fpb", "tfns")),
    ]
    quality = {"base": 0.4, "single": 0.6, "cocktail": 0.7}
    for kind, tasks in recipes:
        for extra in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5)) if kind == "cocktail" else ((0.0, 0.0),):
            for seed in seeds:
                rid = f"{kind}-{'+'.join(tasks) or 'none'}-g{extra[0]}-m{extra[1]}-s{seed}"
                runs.append(RunRecord(rid, kind, "tiny", tasks, extra[0], extra[1], seed, 1000, 10.0, 500.0))
                for task in ("fpb", "tfns", "cfa"):
                    p = quality[kind] + (0.05 if extra[0] else 0) - (0.05 if extra[1] else 0)
                    if task == "cfa":
                        p = 0.35
                    correct = list(rng.random(200) < p)
                    path = _preds(tmp_path / f"{rid}-{task}.jsonl", correct)
                    acc = float(np.mean(correct))
                    metrics.append(MetricRecord(rid, task, "test", "accuracy", acc, acc - 0.05, acc + 0.05, 200, path))
                    metrics.append(MetricRecord(rid, task, "validation", "accuracy", acc + rng.normal(0, 0.01), n=50))
    return ReportData(runs, metrics, title="synthetic", published={"GPT-4o": {"fpb": 0.8113}})


def test_selection_uses_validation_not_test(tmp_path):
    runs = [RunRecord("a", "single", "m", ("fpb",), seed=0), RunRecord("b", "single", "m", ("fpb",), 0.5, 0, 0)]
    metrics = [
        MetricRecord("a", "fpb", "test", "accuracy", 0.90), MetricRecord("a", "fpb", "validation", "accuracy", 0.50),
        MetricRecord("b", "fpb", "test", "accuracy", 0.70), MetricRecord("b", "fpb", "validation", "accuracy", 0.80),
    ]
    an = Analysis(ReportData(runs, metrics))
    rec, score = an.best(an.recipes_of("single", single_of="fpb"), "fpb")
    assert score.run_ids == ("b",) and score.value == 0.70 and score.selected_on == "validation"


def test_cocktail_effect_detects_planted_gain(tmp_path):
    an = Analysis(synthetic(tmp_path))
    effects = {(d.task, d.recipe): d for d in an.cocktail_effects()}
    d = effects[("fpb", "fpb+tfns")]
    # one seed a side and nothing to pool: the interval holds the test sample only, and says so
    assert d.method == "unpaired" and d.seed_noise == "none" and d.value > 0.03
    assert d.low < d.value < d.high


def test_seeds_give_t_intervals(tmp_path):
    an = Analysis(synthetic(tmp_path, seeds=(0, 1, 2)))
    d = next(d for d in an.cocktail_effects() if d.task == "fpb" and d.recipe == "fpb+tfns")
    assert d.method == "paired" and d.seed_noise == "measured"
    per_seed = lambda rid_prefix: [an.metric(r.run_id, "fpb").value for r in an.data.runs if r.run_id.startswith(rid_prefix)]
    a, b = per_seed("cocktail-fpb+tfns-g0.0-m0.0"), per_seed("single-fpb-g0.0")
    assert d.value == pytest.approx(np.mean(a) - np.mean(b))


def test_write_report_files(tmp_path):
    html_path, md_path = write_report(synthetic(tmp_path), tmp_path / "out")
    md = md_path.read_text()
    assert "validation" in md and "| fpb |" in md and "published" in md
    for plot in ("main", "cocktail_effect", "transfer", "ablation", "knowledge"):
        assert (tmp_path / "out" / "plots" / f"{plot}.png").stat().st_size > 1000
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 5 and "src='plots/" not in page


def test_delta_plot_accepts_a_point_outside_its_interval():
    from fincocktail.report.analysis import Delta
    from fincocktail.report.plots import deltas_plot

    png = deltas_plot([Delta("headline", "a+b", "a", 0.05, 0.06, 0.09, "bootstrap"),
                       Delta("fpb", "a+b", "a", -0.02, -0.05, 0.01, "bootstrap")], "Cocktail effect: x vs y")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_knowledge_cells_show_the_cocktail_scored_on_them_and_a_lone_recipe_is_not_test_selected():
    """cfa is never trained on and has no validation split: the zero-shot row and the one cocktail scored
    on it are shown, neither marked as chosen on test (there was nothing to choose); two cocktails
    ranked on test are marked."""
    from fincocktail.report.analysis import any_test_selected

    runs = [RunRecord("b", "base", "m", ()), RunRecord("c", "cocktail", "m", ("fpb", "tfns"), seed=0)]
    metrics = [MetricRecord("b", "cfa", "test", "accuracy", 0.31), MetricRecord("c", "cfa", "test", "accuracy", 0.34),
               MetricRecord("c", "fpb", "test", "accuracy", 0.7), MetricRecord("c", "fpb", "validation", "accuracy", 0.7)]
    rows = {r["task"]: r for r in Analysis(ReportData(runs, metrics)).main_table()}
    assert rows["cfa"]["base zero-shot"][1].selected_on == "only"
    assert rows["cfa"]["best cocktail"][1].value == 0.34 and rows["cfa"]["best cocktail"][1].selected_on == "only"
    assert not any_test_selected(list(rows.values()))
    runs.append(RunRecord("d", "cocktail", "m", ("fpb",  "fiqa_sa"), seed=0))
    metrics.append(MetricRecord("d", "cfa", "test", "accuracy", 0.40))
    rows = {r["task"]: r for r in Analysis(ReportData(runs, metrics)).main_table()}
    assert rows["cfa"]["best cocktail"][1].value == 0.40 and rows["cfa"]["best cocktail"][1].test_selected
    assert any_test_selected(list(rows.values()))
