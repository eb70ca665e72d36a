"""The metrics files are read back through one reader (`evaluation.results`), beside their writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fincocktail.errors import ConfigError
from fincocktail.evaluation.bootstrap import Interval
from fincocktail.evaluation.results import TaskResult, read_metrics, read_task_result, result_json


def _result(task: str = "fpb") -> TaskResult:
    return TaskResult(
        task=task, version="v3", mode="choice", n=300, metric="accuracy", metrics={"accuracy": 0.8, "macro_f1": 0.7},
        interval=Interval(low=0.75, high=0.85, n_resamples=1000, seed=0), parse_failure_rate=0.0, ties=1,
        examples_per_s=12.5, tokens_per_s=900.0, seconds=24.0, demo_ids=["a"], rescored=3,
        sample={"method": "stratified", "seed": 0, "n": 300, "population": 970, "sha256": "abc"},
    )


def test_a_task_file_reads_back_as_written(tmp_path: Path):
    path = tmp_path / "fpb.metrics.json"
    path.write_text(json.dumps(result_json(_result())), encoding="utf-8")
    assert read_task_result(path) == _result()


def test_a_run_file_reads_back_by_task(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({t: result_json(_result(t)) for t in ("fpb", "tfns")}), encoding="utf-8")
    assert read_metrics(path) == {"fpb": _result("fpb"), "tfns": _result("tfns")}


def test_an_older_file_reads_with_the_absent_fields_defaulted(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"fpb": {"metric": "accuracy", "metrics": {"accuracy": 0.5}, "n": 10, "interval": None,
                                        "a_field_from_later": 1}}), encoding="utf-8")
    r = read_metrics(path)["fpb"]
    assert (r.task, r.metric, r.metrics, r.n, r.interval, r.sample, r.mode) == ("fpb", "accuracy", {"accuracy": 0.5}, 10, None, {}, "")


def test_an_unreadable_file_is_named(tmp_path: Path):
    path = tmp_path / "fpb.metrics.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="fpb.metrics.json: cannot read it as JSON"):
        read_task_result(path)
