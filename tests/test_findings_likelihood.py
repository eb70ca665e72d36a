"""Findings on two metrics: verdicts on the gold answer's likelihood with accuracy beside, the one-seed
rule, the delta tables agreeing with Findings, and selection by likelihood."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from fincocktail.report.analysis import Analysis
from fincocktail.report.findings import findings, holm
from fincocktail.report.records import MetricRecord, ReportData, RunRecord
from fincocktail.report.render import write_report

N = 300


def _write(path: Path, gold_prob: np.ndarray) -> tuple[Path, float]:
    """Two-choice predictions: the gold choice's probability is `gold_prob`; right when it is above 0.5."""
    with path.open("w") as fh:
        for i, p in enumerate(gold_prob):
            lp = {"up": math.log(p), "down": math.log(1 - p)}
            fh.write(json.dumps({"id": f"ex{i}", "gold": "up", "correct": bool(p > 0.5), "choice_logprobs": lp}) + "\n")
    return path, float((gold_prob > 0.5).mean())


def study(tmp_path: Path, cocktail_shift: float, seeds=(0, 1, 2), seed_sd: float = 0.04) -> ReportData:
    """Single fpb vs the fpb+tfns cocktail: each seed shifts both recipes' gold probabilities together
    (shared LoRA init and draw), the cocktail adds `cocktail_shift` to every example."""
    rng = np.random.default_rng(0)
    latent = rng.normal(0.0, 0.25, N)  # per-example difficulty, shared by every run
    runs, metrics = [], []
    for s in seeds:
        shared = np.random.default_rng(zlib.crc32(f"seed{s}".encode())).normal(0, seed_sd)
        for rid, kind, tasks, shift in ((f"single-{s}", "single", ("fpb",), 0.0),
                                        (f"cocktail-{s}", "cocktail", ("fpb", "tfns"), cocktail_shift)):
            own = np.random.default_rng(zlib.crc32(rid.encode())).normal(0, 0.05, N)  # per-example run noise
            p = np.clip(0.55 + latent + shared + shift + own, 0.01, 0.99)
            runs.append(RunRecord(rid, kind, "tiny", tasks, 0, 0, s))
            for split in ("test", "validation"):
                path, acc = _write(tmp_path / f"{rid}-{split}.jsonl", p)
                metrics.append(MetricRecord(rid, "fpb", split, "accuracy", acc, n=N, predictions=path))
    return ReportData(runs, metrics, title="likelihood")


def test_verdicts_rest_on_the_likelihood_with_accuracy_beside(tmp_path):
    f = findings(Analysis(study(tmp_path, cocktail_shift=0.01)))
    (c,) = f.for_claim("a")
    assert c.metric == "gold_prob" and c.kind == "likelihood" and c.design == "paired"
    assert c.other is not None and c.other.metric == "accuracy" and c.other.kind == "primary"
    # a small, consistent shift of every example's probability: the likelihood decides, accuracy does not
    assert c.verdict == "supported" and c.other.verdict == "inconclusive"
    assert c.effect == pytest.approx(0.01, abs=0.006)
    assert "gold prob" in f.summary("a") and "accuracy" in f.summary("a")
    primary = findings(Analysis(study(tmp_path, cocktail_shift=0.01)), decision="primary").for_claim("a")[0]
    assert primary.metric == "accuracy" and primary.other.metric == "gold_prob"
    assert primary.effect == pytest.approx(c.other.effect) and primary.low == pytest.approx(c.other.low)


def test_the_verdict_family_is_holm_adjusted_together(tmp_path):
    data = study(tmp_path, cocktail_shift=0.01)
    f = findings(Analysis(data))
    assert [c.p_holm for c in f.contrasts] == pytest.approx(holm([c.p for c in f.contrasts]))


def test_one_seed_gives_no_verdict_seed_noise_not_measured(tmp_path):
    f = findings(Analysis(study(tmp_path, cocktail_shift=0.2, seeds=(0,))))
    (c,) = f.for_claim("a")
    assert c.p < 1e-6  # the test sample alone would call it
    assert c.verdict == "inconclusive" and c.seed_variance == "none" and c.why_inconclusive == "seed noise not measured"
    assert c.other.verdict == "inconclusive"
    assert "seed noise not measured" in f.summary("a")


def test_the_cocktail_effect_table_shows_the_findings_interval_and_verdict(tmp_path):
    data = study(tmp_path, cocktail_shift=0.01)
    f = findings(Analysis(data))
    acc = f.for_claim("a")[0].other
    _, md_path = write_report(data, tmp_path / "report")
    md = md_path.read_text()
    section = md[md.index("## Cocktail effect"):]
    row = next(line for line in section.splitlines() if line.startswith("| fpb | fpb+tfns |"))
    assert f"[{acc.low:+.3f}, {acc.high:+.3f}]" in row
    assert f"Findings (a): p {acc.p_holm:.3g}, {acc.verdict}" in row
    assert "**yes**" not in section.split("\n## ")[0]


def test_selection_by_likelihood_ranks_on_the_validation_gold_probability(tmp_path):
    """Two single-task recipes: A is more often right on validation, B puts more probability on the gold."""
    runs = [RunRecord("a", "single", "m", ("fpb",), seed=0), RunRecord("b", "single", "m", ("fpb",), 0.5, 0, 0)]
    pa = np.array([0.51] * 80 + [0.45] * 20)  # 80% right, mean gold prob 0.498
    pb = np.array([0.99] * 70 + [0.40] * 30)  # 70% right, mean gold prob 0.813
    metrics = []
    for rid, p in (("a", pa), ("b", pb)):
        path, acc = _write(tmp_path / f"{rid}.jsonl", p)
        metrics += [MetricRecord(rid, "fpb", "validation", "accuracy", acc, n=100, predictions=path),
                    MetricRecord(rid, "fpb", "test", "accuracy", acc, n=100, predictions=path)]
    data = ReportData(runs, metrics)
    by_primary = Analysis(data).best(Analysis(data).recipes_of("single", single_of="fpb"), "fpb")
    an = Analysis(data, selection="likelihood")
    by_likelihood = an.best(an.recipes_of("single", single_of="fpb"), "fpb")
    assert by_primary[1].run_ids == ("a",) and by_likelihood[1].run_ids == ("b",)
    assert an.validation_likelihood(an.recipes[by_likelihood[0]], "fpb") == pytest.approx(pb.mean())


def test_matched_steps_singles_give_claim_a_at_matched_steps(tmp_path):
    data = study(tmp_path, cocktail_shift=0.01)
    runs, metrics = list(data.runs), list(data.metrics)
    for m in [m for m in data.metrics if m.run_id.startswith("single-")]:
        rid = m.run_id.replace("single", "matched")
        if m.split == "test":
            src = next(r for r in data.runs if r.run_id == m.run_id)
            runs.append(RunRecord(rid, "matched", "tiny", ("fpb",), 0, 0, src.seed, matched_to="fpb+tfns"))
        metrics.append(MetricRecord(rid, m.task, m.split, m.metric, m.value, n=m.n, predictions=m.predictions))
    f = findings(Analysis(ReportData(runs, metrics)))
    (a,) = f.for_claim("a")
    (matched,) = f.for_claim("a'")
    assert matched.reference == "fpb (matched steps)" and matched.recipe == "fpb+tfns"
    assert matched.effect == pytest.approx(a.effect) and matched.design == "paired"  # the same predictions here
    assert len(f.contrasts) == 2 and "a'" not in f.untested
    # without matched runs the optional contrast is neither tested nor printed
    plain = findings(Analysis(data))
    from fincocktail.report.render import claim_summary

    assert "a'" in plain.untested and not any(line.startswith("(a')") for line in claim_summary(plain))


def test_the_report_draws_the_runs_learning_curves(tmp_path):
    data = study(tmp_path, cocktail_shift=0.01)
    runs = []
    for r in data.runs:
        log = tmp_path / r.run_id / "train" / "train_log.jsonl"
        log.parent.mkdir(parents=True)
        steps = range(0, 65, 16) if r.kind == "single" else range(0, 129, 32)
        log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" + json.dumps(
            {"step": s, "curve": {"fpb": 0.4 + s / 400}, "curve_metric": {"fpb": "gold_prob"}, "curve_n": {"fpb": 64},
             "curve_s": 0.1}) + "\n" for s in steps))
        runs.append(RunRecord(**{**r.__dict__, "run_dir": tmp_path / r.run_id}))
    write_report(ReportData(runs, data.metrics), tmp_path / "report")
    png = (tmp_path / "report" / "plots" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "Learning curves" in (tmp_path / "report" / "report.md").read_text()
    write_report(data, tmp_path / "plain")  # no curves logged: no empty figure
    assert not (tmp_path / "plain" / "plots" / "curves.png").exists()
