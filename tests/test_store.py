"""The SQLite results store: round trips, attempts, recovery, and many concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from fincocktail.sweep.spec import RunSpec
from fincocktail.sweep.store import MetricRow, ResultsStore, RunOutcome
from fincocktail.report.records import from_store


def make_run(i: int, kind: str = "cocktail") -> RunSpec:
    return RunSpec(
        run_id=f"{kind}-{i:04d}",
        sweep="s",
        kind=kind,
        label=f"fpb+tfns +general{i}",
        model="m",
        train_tasks=["fpb", "tfns"] if kind != "base" else [],
        general=0.25,
        math=0.0,
        seed=i % 3,
        train={"x": i} if kind != "base" else None,
        eval={"tasks": ["fpb"]},
        config_sha256=f"{i:064x}",
        est_seconds=10.0,
    )


def outcome(run_id: str, value: float) -> RunOutcome:
    return RunOutcome(
        metrics=[
            MetricRow(run_id, "fpb", "test", "accuracy", value, value - 0.1, value + 0.1, 50, True, "/p/fpb.jsonl"),
            MetricRow(run_id, "fpb", "test", "macro_f1", value / 2, None, None, 50, False),
            MetricRow(run_id, "fpb", "validation", "accuracy", value, None, None, 20, True),
        ],
        card={"hello": "world"},
        wall_time_s=3.5,
        tokens_trained=1234,
        peak_rss_mb=100.0,
        selection_score=value,
    )


def test_round_trip_attempts_and_read_api(tmp_path):
    store = ResultsStore.in_dir(tmp_path)
    runs = [make_run(0, "base"), make_run(1), make_run(2)]
    assert store.register(runs) == 3
    assert store.register(runs) == 0  # known runs are kept as they are
    assert store.counts() == {"planned": 3, "running": 0, "done": 0, "failed": 0}

    assert store.start_attempt("cocktail-0001") == 1
    store.finish("cocktail-0001", outcome("cocktail-0001", 0.8), attempt=1)
    assert store.start_attempt("cocktail-0002") == 1
    store.fail("cocktail-0002", "ValueError: boom", attempt=1)
    assert store.start_attempt("cocktail-0002") == 2
    assert store.counts() == {"planned": 1, "running": 1, "done": 1, "failed": 0}

    row = store.run("cocktail-0001")
    assert row.status == "done" and row.attempts == 1 and row.tokens_trained == 1234
    assert row.train_tasks == ("fpb", "tfns") and row.general == 0.25 and row.seed == 1
    assert row.card == {"hello": "world"} and row.config["run_id"] == "cocktail-0001"
    metrics = store.metrics("cocktail-0001")
    assert len(metrics) == 3
    head = store.metrics(split="test", headline_only=True)
    assert [(m.metric, m.value, m.ci_low, m.ci_high, m.n, m.predictions) for m in head] == [
        ("accuracy", 0.8, pytest.approx(0.7), pytest.approx(0.9), 50, "/p/fpb.jsonl")
    ]
    attempts = store.attempts("cocktail-0002")
    assert [(a.attempt, a.status, a.error) for a in attempts] == [(1, "failed", "ValueError: boom"), (2, "running", None)]

    # a sweep that died leaves runs 'running': the next sweep puts them back, attempts stay counted
    assert store.reset_stale() == 1
    row2 = store.run("cocktail-0002")
    assert row2.status == "planned" and row2.attempts == 2
    assert store.attempts("cocktail-0002")[-1].status == "interrupted"

    # finishing twice is idempotent (driver and worker both record)
    store.finish("cocktail-0001", outcome("cocktail-0001", 0.8))
    assert len(store.metrics("cocktail-0001")) == 3

    data = from_store(store, split="test")
    assert [r.run_id for r in data.runs] == ["cocktail-0001"]
    assert data.runs[0].kind == "cocktail" and data.runs[0].train_tasks == ("fpb", "tfns")
    assert [(m.task, m.metric, m.value) for m in data.metrics] == [("fpb", "accuracy", 0.8)]


def test_wal_mode_and_missing_store(tmp_path):
    store = ResultsStore.in_dir(tmp_path)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(Exception, match="no results store here"):
        ResultsStore.in_dir(tmp_path / "nothing", create=False)


def _writer(path: str, worker: int, n_runs: int) -> None:
    """One process: register its runs one by one, start and finish each with metrics."""
    store = ResultsStore(path, busy_timeout_ms=20_000)
    for i in range(n_runs):
        run = make_run(worker * 1000 + i)
        store.register([run])
        attempt = store.start_attempt(run.run_id)
        store.finish(run.run_id, outcome(run.run_id, i / n_runs), attempt)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultsStore(path)
    workers, n_runs = 4, 60
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, n_runs)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers  # a 'database is locked' error would exit 1
    store = ResultsStore(path)
    runs = store.runs()
    assert len(runs) == workers * n_runs
    assert all(r.status == "done" and r.attempts == 1 for r in runs)
    assert len(store.metrics()) == workers * n_runs * 3
    assert len(store.attempts()) == workers * n_runs
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_outcome_json_round_trip():
    o = outcome("r", 0.5)
    back = RunOutcome.from_json(o.to_json())
    assert back == o
    assert isinstance(back.metrics[0], MetricRow) and Path(back.metrics[0].predictions).name == "fpb.jsonl"
