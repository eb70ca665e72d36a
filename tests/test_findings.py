"""Findings: verdicts on synthetic studies with known effects, the variance, and Holm's correction."""

from __future__ import annotations

import json
import zlib
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fincocktail.report.analysis import Analysis
from fincocktail.report.findings import NON_SUPERIORITY_MARGIN, findings, holm, needed_examples, needed_seeds
from fincocktail.report.records import MetricRecord, ReportData, RunRecord
from fincocktail.report.render import write_report

N = 400


def _write(path: Path, correct: np.ndarray) -> Path:
    with path.open("w") as fh:
        for i, c in enumerate(correct):
            fh.write(json.dumps({"id": f"ex{i}", "correct": bool(c)}) + "\n")
    return path


def study(tmp_path: Path, effects: dict[str, float], seeds=(0, 1, 2), n: int = N, rng_seed: int = 0) -> ReportData:
    """base, single-task runs, the fpb+finqa cocktail and its +general / +math variants.

    `effects` shifts the probability of a correct answer: "cocktail" (on every task, vs single),
    "general" and "math" (vs the plain cocktail); the knowledge task cfa shares the base model's
    answers exactly unless "knowledge" is given.
    """
    rng = np.random.default_rng(rng_seed)
    latent = {t: rng.random(n) for t in ("fpb", "finqa", "cfa")}  # per-example difficulty, shared by all runs
    base_p = {"fpb": 0.5, "finqa": 0.3, "cfa": 0.4}
    runs, metrics = [], []

    def add(rid, kind, tasks, g, m, seed, shift: dict[str, float]):
        runs.append(RunRecord(rid, kind, "tiny", tasks, g, m, seed))
        noise = np.random.default_rng(zlib.crc32(f"{rid}:{seed}".encode()))  # not hash(): it changes per process
        for task in ("fpb", "finqa", "cfa"):
            p = base_p[task] + shift.get(task, 0.0) + (noise.normal(0, 0.01) if kind != "base" else 0.0)
            # answers flip only where the latent difficulty is near the threshold: runs stay correlated per example
            correct = latent[task] < p
            if task == "cfa" and "knowledge" not in effects:
                correct = latent[task] < base_p["cfa"]
            path = _write(tmp_path / f"{rid}-{task}.jsonl", correct)
            acc = float(correct.mean())
            metrics.append(MetricRecord(rid, task, "test", "accuracy", acc, n=n, predictions=path))
            metrics.append(MetricRecord(rid, task, "validation", "accuracy", acc, n=50))

    add("base", "base", (), 0, 0, 0, {})
    for s in seeds:
        add(f"single-fpb-{s}", "single", ("fpb",), 0, 0, s, {"fpb": 0.2})
        add(f"single-finqa-{s}", "single", ("finqa",), 0, 0, s, {"finqa": 0.1})
        c = effects.get("cocktail", 0.0)
        plain = {"fpb": 0.2 + c, "finqa": 0.1 + c, "cfa": effects.get("knowledge", 0.0)}
        add(f"cocktail-{s}", "cocktail", ("fpb", "finqa"), 0, 0, s, plain)
        add(f"cocktail-g-{s}", "cocktail", ("fpb", "finqa"), 0.2, 0, s,
            {k: v + effects.get("general", 0.0) for k, v in plain.items()})
        add(f"cocktail-m-{s}", "cocktail", ("fpb", "finqa"), 0, 0.2, s,
            {k: v + effects.get("math", 0.0) for k, v in plain.items()})
    return ReportData(runs, metrics, title="synthetic")


def _verdicts(data: ReportData) -> dict[tuple[str, str], str]:
    return {(c.claim, c.task): c.verdict for c in findings(Analysis(data)).contrasts}


def test_known_effects_get_the_right_verdicts(tmp_path):
    v = _verdicts(study(tmp_path, {"cocktail": 0.15, "general": 0.0, "math": -0.15}))
    assert v[("a", "fpb")] == "supported" and v[("a", "finqa")] == "supported"
    assert v[("b", "fpb")] == "inconclusive" and v[("b", "finqa")] == "inconclusive"  # a null effect
    assert v[("c", "finqa")] == "contradicted"  # math hurt
    assert ("c", "fpb") not in v  # (c) is about numerical reasoning only
    assert v[("d", "cfa")] == "supported"  # identical knowledge answers: the gain is shown to be below the margin


def test_a_knowledge_gain_contradicts_claim_d(tmp_path):
    v = _verdicts(study(tmp_path, {"cocktail": 0.15, "knowledge": 0.2}))
    assert v[("d", "cfa")] == "contradicted"


def test_a_null_effect_is_inconclusive_and_says_what_would_settle_it(tmp_path):
    f = findings(Analysis(study(tmp_path, {"cocktail": 0.0, "general": 0.01})))
    for c in f.for_claim("a") + f.for_claim("b"):
        assert c.verdict == "inconclusive", c
    # what would settle it: more test examples than were used, or (None) more seeds
    assert all(c.needed_examples is None or c.needed_examples > N for c in f.for_claim("a") + f.for_claim("b"))


def _load(tmp_path, rid, task="fpb"):
    rows = [json.loads(x) for x in (tmp_path / f"{rid}-{task}.jsonl").read_text().splitlines()]
    return np.array([float(r["correct"]) for r in rows])


def test_the_variance_adds_seed_and_test_sample_parts_paired_by_seed(tmp_path):
    data = study(tmp_path, {"cocktail": 0.05})
    c = next(c for c in findings(Analysis(data), decision="primary").contrasts if c.claim == "a" and c.task == "fpb")
    # independent computation from the files: the same seeds on both sides, so per-seed differences
    a = np.array([_load(tmp_path, f"cocktail-{s}") for s in range(3)])
    b = np.array([_load(tmp_path, f"single-fpb-{s}") for s in range(3)])
    effect = a.mean() - b.mean()
    d = a.mean(axis=0) - b.mean(axis=0)
    seed_part = (a.mean(axis=1) - b.mean(axis=1)).var(ddof=1) / 3
    se = math.sqrt(seed_part + d.var(ddof=1) / len(d))
    df = se**4 / (seed_part**2 / 2 + (d.var(ddof=1) / len(d)) ** 2 / (len(d) - 1))
    assert c.effect == pytest.approx(effect) and c.se == pytest.approx(se) and c.design == "paired"
    assert c.low == pytest.approx(effect - stats.t.ppf(0.975, df) * se)
    assert c.seeds == (3, 3) and c.n_examples == N and c.seed_variance == "measured" and c.metric == "accuracy"


def test_different_seed_sets_fall_back_to_the_unpaired_variance(tmp_path):
    data = study(tmp_path, {"cocktail": 0.05})
    data = ReportData([RunRecord(**{**r.__dict__, "seed": r.seed + 10}) if r.run_id.startswith("cocktail-") and r.run_id[-2] == "-"
                       else r for r in data.runs], data.metrics)
    c = next(c for c in findings(Analysis(data), decision="primary").contrasts if c.claim == "a" and c.task == "fpb")
    a = np.array([_load(tmp_path, f"cocktail-{s}") for s in range(3)])
    b = np.array([_load(tmp_path, f"single-fpb-{s}") for s in range(3)])
    d = a.mean(axis=0) - b.mean(axis=0)
    se = math.sqrt(a.mean(axis=1).var(ddof=1) / 3 + b.mean(axis=1).var(ddof=1) / 3 + d.var(ddof=1) / len(d))
    assert c.design == "unpaired" and c.se == pytest.approx(se)


def test_one_seed_borrows_the_pooled_seed_variance(tmp_path):
    data = study(tmp_path, {"cocktail": 0.1})
    # keep one seed of the cocktail: its seed variance comes from the task's 3-seed recipes
    drop = {"cocktail-1", "cocktail-2"}
    data = ReportData([r for r in data.runs if r.run_id not in drop], [m for m in data.metrics if m.run_id not in drop])
    c = next(c for c in findings(Analysis(data)).contrasts if c.claim == "a" and c.task == "fpb")
    assert c.seeds == (1, 3) and c.seed_variance == "pooled"


def test_holm_matches_the_step_down_rule():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.random(rng.integers(1, 12)) ** 3)
        adj = holm(p)
        for alpha in (0.01, 0.05, 0.1):
            # the rule itself: sort, reject while p_(j) <= alpha / (m - j), stop at the first failure
            order = np.argsort(p, kind="stable")
            rejected = set()
            for j, i in enumerate(order):
                if p[i] <= alpha / (len(p) - j):
                    rejected.add(int(i))
                else:
                    break
            assert {i for i, a in enumerate(adj) if a <= alpha} == rejected
        assert all(a >= x for a, x in zip(adj, p)) and all(a <= 1 for a in adj)


def test_needed_examples_would_reach_the_threshold():
    z = 1.96 + 0.8416
    n = needed_examples(0.05, seed_part=0.0001, sample_var_per_example=0.3, z_needed=z)
    assert n is not None and math.sqrt(0.0001 + 0.3 / n) * z <= 0.05 < math.sqrt(0.0001 + 0.3 / (n - 1)) * z
    assert needed_examples(0.01, seed_part=0.01, sample_var_per_example=0.3, z_needed=z) is None  # seeds are the limit


def test_needed_seeds_would_reach_the_threshold():
    z = 1.96 + 0.8416
    k = needed_seeds(0.05, seed_variance_sum=0.004, sample_part=0.0001, z_needed=z, have=3)
    se = lambda k: math.sqrt(0.004 / k + 0.0001)
    assert k is not None and se(k) * z <= 0.05 < se(k - 1) * z
    assert needed_seeds(0.05, 0.004, sample_part=0.001, z_needed=z, have=3) is None  # the test rows are the limit
    assert needed_seeds(0.001, 0.004, sample_part=0.0, z_needed=z, have=3) is None  # more than MAX_SEEDS


def test_seed_noise_makes_a_verdict_ask_for_seeds(tmp_path):
    """Two recipes whose seeds disagree far more than their test rows do: the inconclusive verdict
    names the seeds per recipe that would settle it, and that many would (checked by hand)."""
    runs, metrics = [], []
    z = 1.96 + 0.8416
    rng = np.random.default_rng(3)
    latent = rng.random(300)
    for rid, kind, tasks, p in [("s0", "single", ("fpb",), 0.50), ("s1", "single", ("fpb",), 0.60),
                                ("c0", "cocktail", ("fpb", "tfns"), 0.62), ("c1", "cocktail", ("fpb", "tfns"), 0.78)]:
        runs.append(RunRecord(rid, kind, "tiny", tasks, 0, 0, int(rid[1])))
        path = _write(tmp_path / f"{rid}.jsonl", latent < p)
        metrics.append(MetricRecord(rid, "fpb", "test", "accuracy", float((latent < p).mean()), n=300, predictions=path))
    (c,) = findings(Analysis(ReportData(runs, metrics))).contrasts
    assert c.verdict == "inconclusive" and c.needed_examples is None and c.needed_seeds is not None
    score = {m.run_id: m.value for m in metrics}
    # seeds 0 and 1 on both sides: paired, so the seed part is the per-seed differences' variance over k
    seed_sum = np.var([score["c0"] - score["s0"], score["c1"] - score["s1"]], ddof=1)
    corr = {rid: (latent < p).astype(float) for rid, p in (("s0", .5), ("s1", .6), ("c0", .62), ("c1", .78))}
    d = (corr["c0"] + corr["c1"]) / 2 - (corr["s0"] + corr["s1"]) / 2
    sample = d.var(ddof=1) / len(d)
    k = c.needed_seeds

    def t_needed(seeds):  # the verdict reads t at seeds - 1 degrees of freedom (one contrast: no Holm factor)
        return stats.t.ppf(0.975, seeds - 1) + stats.t.ppf(0.8, seeds - 1)

    assert k > 2 and math.sqrt(seed_sum / k + sample) * t_needed(k) <= abs(c.effect)
    assert abs(c.effect) < math.sqrt(seed_sum / (k - 1) + sample) * t_needed(k - 1)


def test_report_opens_with_findings(tmp_path):
    data = study(tmp_path, {"cocktail": 0.15, "math": -0.15})
    html_path, md_path = write_report(data, tmp_path / "report")
    md = md_path.read_text()
    assert md.index("## Findings") < md.index("## Main table")
    assert "(a) A cocktail of related tasks beats single-task fine-tuning: supported on fpb, finqa" in md
    assert "Holm" in md and f"{NON_SUPERIORITY_MARGIN:g}" in md
    page = html_path.read_text()
    assert page.index("id='findings'") < page.index("Main table")


def test_without_per_example_files_or_seeds_nothing_is_claimed(tmp_path):
    runs = [RunRecord("s", "single", "m", ("fpb",)), RunRecord("c", "cocktail", "m", ("fpb", "tfns"))]
    metrics = [MetricRecord("s", "fpb", "test", "accuracy", 0.5, n=100), MetricRecord("c", "fpb", "test", "accuracy", 0.9, n=100)]
    (c,) = findings(Analysis(ReportData(runs, metrics))).contrasts
    assert c.effect == pytest.approx(0.4) and c.verdict == "inconclusive" and c.seed_variance == "none"


def test_the_zero_shot_base_adds_no_seed_variance(tmp_path):
    """Claim (d) compares a tuned recipe with the base model, which has no seed: only the tuned side's
    between-seed variance and the paired test-sample variance enter (checked against numpy)."""
    data = study(tmp_path, {"cocktail": 0.1, "knowledge": 0.05})
    c = next(c for c in findings(Analysis(data)).contrasts if c.claim == "d" and c.task == "cfa")

    def load(rid):
        rows = [json.loads(x) for x in (tmp_path / f"{rid}-cfa.jsonl").read_text().splitlines()]
        return np.array([float(r["correct"]) for r in rows])

    a = np.array([load(f"cocktail-{s}") for s in range(3)])
    b = load("base")
    d = a.mean(axis=0) - b
    se = math.sqrt(a.mean(axis=1).var(ddof=1) / 3 + d.var(ddof=1) / len(d))
    assert c.seeds == (3, 1) and c.seed_variance == "measured"
    assert c.se == pytest.approx(se)


def test_a_floor_is_inconclusive_and_says_every_run_scored_the_same(tmp_path):
    """Every run wrong on every FinQA row (a small model's floor): no effect to measure, said as such."""
    runs, metrics = [], []
    for rid, kind, tasks, m in [(f"s{i}", "single", ("finqa",), 0) for i in range(2)] + \
            [(f"c{i}", "cocktail", ("fpb", "finqa"), 0) for i in range(2)] + [(f"cm{i}", "cocktail", ("fpb", "finqa"), 0.2) for i in range(2)]:
        runs.append(RunRecord(rid, kind, "tiny", tasks, 0, m, int(rid[-1])))
        path = _write(tmp_path / f"{rid}.jsonl", np.zeros(60, dtype=bool))
        metrics.append(MetricRecord(rid, "finqa", "test", "accuracy", 0.0, n=60, predictions=path))
    found = findings(Analysis(ReportData(runs, metrics)))
    floors = [c for c in found.contrasts if c.task == "finqa"]
    assert {c.claim for c in floors} == {"a", "c"}
    for c in floors:
        assert c.verdict == "inconclusive" and c.same_score == 0.0 and c.effect == 0.0 and c.se == 0.0
    assert "finqa (every run 0.000)" in found.summary("c")
    # one run that differs on one row is no longer "the same score"
    _write(tmp_path / "cm1.jsonl", np.arange(60) == 0)
    metrics = [MetricRecord(m.run_id, m.task, m.split, m.metric, 1 / 60 if m.run_id == "cm1" else 0.0, n=60,
                            predictions=m.predictions) for m in metrics]
    c = next(c for c in findings(Analysis(ReportData(runs, metrics))).contrasts if c.claim == "c")
    assert c.same_score is None and c.se > 0
