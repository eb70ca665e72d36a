"""Evaluation samples: stratified, seeded, the same for every run, and refused when mixed."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from fincocktail.report.records import MetricRecord
from fincocktail.sweep.store import MetricRow, ResultsStore, RunOutcome, SampleMismatch, check_same_samples
from fincocktail.tasks.base import Example
from fincocktail.tasks.registry import get_task
from fincocktail.tasks.sampling import draw_sample, label_quotas, sample_sha256
from fincocktail.report.records import from_store


def _draw(task_id, split, n, data_dir, **kw):
    task = get_task(task_id)
    return draw_sample(task.load(split, data_dir), n, task_id=task_id, split=split, kind=task.kind, **kw)


@pytest.mark.parametrize("task_id,n", [("tfns", 60), ("fpb", 300), ("fiqa_sa", 50), ("tfns", 301)])
def test_stratified_shares_within_one_example_of_exact(task_id, n, data_dir):
    population = get_task(task_id).load("test", data_dir)
    sample = _draw(task_id, "test", n, data_dir)
    assert len(sample.examples) == n and sample.method == "stratified-label"
    full = Counter(e.target for e in population)
    got = Counter(e.target for e in sample.examples)
    for label, count in full.items():
        assert abs(got[label] - n * count / len(population)) < 1, (label, got[label])


def test_the_first_60_tfns_tweets_hold_no_neutral_but_the_sample_does(data_dir):
    head = _draw("tfns", "test", 60, data_dir, method="head")
    assert head.method == "head" and "neutral" not in {e.target for e in head.examples}  # the known bias, by name only
    sample = _draw("tfns", "test", 60, data_dir)
    assert sum(e.target == "neutral" for e in sample.examples) in (38, 39)  # 65% of 60


def test_deterministic_for_a_seed_and_different_across_seeds(data_dir):
    a = _draw("fpb", "test", 100, data_dir, seed=0)
    b = _draw("fpb", "test", 100, data_dir, seed=0)
    c = _draw("fpb", "test", 100, data_dir, seed=1)
    assert a.ids == b.ids and a.sha256 == b.sha256
    assert a.ids != c.ids
    assert a.sha256 == sample_sha256(list(reversed(a.ids)))  # the hash names the rows, not their order


def test_test_and_validation_are_drawn_independently_and_disjoint(data_dir):
    test = _draw("fpb", "test", 200, data_dir)
    val = _draw("fpb", "validation", 200, data_dir)
    assert not set(test.ids) & set(val.ids)
    # independent draws: the positions chosen within each split are not the same pattern
    pop_t = [e.id for e in get_task("fpb").load("test", data_dir)]
    pop_v = [e.id for e in get_task("fpb").load("validation", data_dir)]
    pos_t = {pop_t.index(i) for i in test.ids}
    pos_v = {pop_v.index(i) for i in val.ids}
    assert pos_t != pos_v


@pytest.mark.parametrize("task_id,n", [("headline", 90), ("ner_cls", 300), ("finqa", 60), ("convfinqa", 60)])
def test_grouped_tasks_are_sampled_a_whole_group_at_a_time(task_id, n, data_dir):
    task = get_task(task_id)
    population = task.load("test", data_dir)
    sizes = Counter(e.group for e in population)
    sample = _draw(task_id, "test", n, data_dir)
    assert sample.method == "stratified-group" and len(sample.examples) == n
    got = Counter(e.group for e in sample.examples)
    partial = [g for g, k in got.items() if k != sizes[g]]
    assert len(partial) <= 1  # only the last group drawn may be cut to reach n


def test_all_rows_when_n_is_not_smaller():
    rows = [Example(id=f"x{i}", input="t", target="a") for i in range(5)]
    s = draw_sample(rows, 10, task_id="x", split="test")
    assert s.method == "all" and s.ids == [r.id for r in rows]


def test_largest_remainder_quotas_sum_to_n():
    for n in range(1, 60):
        q = label_quotas({"a": 7, "b": 13, "c": 29}, n)
        assert sum(q.values()) == n
        assert all(abs(q[k] - n * c / 49) < 1 for k, c in {"a": 7, "b": 13, "c": 29}.items())


def test_the_same_rows_for_every_run_of_an_eval(tiny_model_dir, data_dir, tmp_path, one_thread):
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    cards = []
    for i, batch in enumerate((4, 7)):
        run = run_eval(EvalConfig(model=str(tiny_model_dir), tasks=["tfns"], limit=20, batch_size=batch, seed=i,
                                  out=tmp_path / f"r{i}", data_dir=data_dir))
        cards.append(run.card["tasks"]["tfns"]["sample"])
        metrics = json.loads((tmp_path / f"r{i}" / "tfns.metrics.json").read_text())
        assert metrics["sample"]["sha256"] == cards[-1]["sha256"] and metrics["n"] == 20
    assert cards[0] == cards[1] and cards[0]["method"] == "stratified-label" and cards[0]["population"] > 20


def test_every_run_of_a_sweep_gets_the_same_sample_settings(tmp_path):
    from fincocktail.sweep.spec import expand, parse_sweep

    spec = parse_sweep({"name": "s", "tasks": ["fpb", "tfns"], "models": ["x"], "seeds": [0, 1],
                        "eval": {"tasks": ["fpb", "tfns"], "max_examples": 50}})
    plan = expand(spec, check_tasks=False)
    settings = {(r.eval["sample"], r.eval["sample_seed"], r.eval["max_examples"]) for r in plan.runs}
    assert settings == {("stratified", 0, 50)}


def _outcome(sha: str, run: str) -> RunOutcome:
    return RunOutcome(metrics=[MetricRow(run, "fpb", "test", "accuracy", 0.5, n=10, headline=True, sample_sha256=sha)])


def test_the_store_refuses_to_compare_scores_on_different_samples(tmp_path):
    from fincocktail.sweep.spec import expand, parse_sweep

    spec = parse_sweep({"name": "s", "tasks": ["fpb"], "models": ["x"], "design": {"base": True, "single": False,
                        "incremental": False, "all_tasks": False, "cocktails": [["fpb"]]}})
    runs = expand(spec, check_tasks=False).runs
    store = ResultsStore(tmp_path / "results.sqlite")
    store.register(runs)
    store.finish(runs[0].run_id, _outcome("a" * 64, runs[0].run_id))
    store.finish(runs[1].run_id, _outcome("a" * 64, runs[1].run_id))
    assert len(from_store(store).metrics) == 2  # same rows: comparable
    store.finish(runs[1].run_id, _outcome("b" * 64, runs[1].run_id))
    with pytest.raises(SampleMismatch, match="fpb .test. was scored on different samples"):
        from_store(store)


def test_sample_check_ignores_rows_from_before_samples_were_recorded():
    rows = [MetricRow("a", "fpb", "test", "accuracy", 0.5), MetricRow("b", "fpb", "test", "accuracy", 0.6, sample_sha256="c" * 64)]
    check_same_samples(rows)  # no error
    assert MetricRecord("a", "fpb", "test", "accuracy", 0.5).sample_sha256 is None
