"""The results store: one embedded SQLite file per sweep (`OUT/results.sqlite`).

Why SQLite: it needs no server, it is one file a user can copy, and in WAL mode many worker
processes can write while readers (`sweep status`, `results`, the report) read a consistent
snapshot. Every write is one short `BEGIN IMMEDIATE` transaction (the write lock is taken up
front, so two writers never deadlock upgrading a read lock), and `busy_timeout` plus a retry
loop absorbs contention instead of surfacing 'database is locked'. Connections are opened per
operation: they are cheap, and a connection never crosses a thread or a fork.

What it holds: every run's config and run card, its status (planned / running / done /
failed), how many times it was attempted (one row per attempt, with pid, host and timings),
and its metrics, one row per (task, split, metric) with the 95% interval, n, and the path of
the predictions file. `runs()` and `metrics()` are the read API the report layer uses.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import lock_held
from fincocktail.plumbing.redact import redact

STORE_FILE = "results.sqlite"
SWEEP_LOCK = ".sweep.lock"  # held by the `sweep run` writing this folder (sweep.executors)
SIMULATED_DIR = "simulated"  # `--simulate` writes under OUT/simulated/ unless given its own --out
SIMULATED_MARK = "SIMULATED (fake scores, not measured)"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    model TEXT NOT NULL,
    train_tasks TEXT NOT NULL,          -- JSON list
    general REAL NOT NULL DEFAULT 0,
    math REAL NOT NULL DEFAULT 0,
    seed INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL,               -- JSON: the RunSpec
    config_sha256 TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'planned',
    attempts INTEGER NOT NULL DEFAULT 0,
    est_seconds REAL NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    wall_time_s REAL,
    train_time_s REAL,
    eval_time_s REAL,
    tokens_trained INTEGER NOT NULL DEFAULT 0,
    peak_rss_mb REAL NOT NULL DEFAULT 0,
    selection_score REAL,
    run_dir TEXT,
    card TEXT,                          -- JSON: the run card
    error TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    split TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    ci_low REAL,
    ci_high REAL,
    n INTEGER NOT NULL DEFAULT 0,
    headline INTEGER NOT NULL DEFAULT 0,  -- 1 for the task's reported metric
    predictions TEXT,
    sample_sha256 TEXT,                 -- which rows were scored (tasks/sampling.py)
    PRIMARY KEY (run_id, task, split, metric)
);
CREATE INDEX IF NOT EXISTS metrics_task ON metrics (task, split, metric);
"""


@dataclass(frozen=True)
class RunRow:
    """A run as stored. `kind` is base / api / single / cocktail / mixture / matched (its `config`, the RunSpec, holds `matched_to`)."""

    run_id: str
    sweep: str
    kind: str
    label: str
    model: str
    train_tasks: tuple[str, ...]
    general: float
    math: float
    seed: int
    status: str
    attempts: int
    config: dict[str, Any]
    config_sha256: str
    est_seconds: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    tokens_trained: int = 0
    peak_rss_mb: float = 0.0
    selection_score: float | None = None
    run_dir: str | None = None
    card: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class MetricRow:
    run_id: str
    task: str
    split: str
    metric: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    headline: bool = False
    predictions: str | None = None
    sample_sha256: str | None = None  # the scored rows; scores on different rows are never compared


@dataclass(frozen=True)
class AttemptRow:
    run_id: str
    attempt: int
    host: str
    pid: int
    started_at: float
    finished_at: float | None
    status: str
    error: str | None


@dataclass
class RunOutcome:
    """What one finished run hands to the store."""

    metrics: list[MetricRow] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    tokens_trained: int = 0
    peak_rss_mb: float = 0.0
    selection_score: float | None = None
    run_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOutcome:
        data = dict(data)
        data["metrics"] = [MetricRow(**m) for m in data.get("metrics", [])]
        return cls(**data)


class StoreNotReady(FincocktailError):
    """The store file exists but its schema does not yet: a sweep is creating it right now."""


class ContentsMismatch(ConfigError):
    """Simulated and real runs asked to share one store: fake scores would pass for measured ones."""


class ResultsStore:
    """A sweep's SQLite results file. Safe to use from many processes at once."""

    def __init__(self, path: str | os.PathLike, busy_timeout_ms: int = 60_000, create: bool = True):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        if not create and not self.path.is_file():
            raise ConfigError(f"{self.path}: no results store here; run `fincocktail sweep run` first or pass --out DIR")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._init()

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike, create: bool = True) -> ResultsStore:
        return cls(Path(out_dir) / STORE_FILE, create=create)

    # -- connections ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        conn.row_factory = sqlite3.Row
        return conn

    def _damaged(self, exc: BaseException | str) -> FincocktailError:
        """The one-line error for a store SQLite cannot read (truncated, overwritten, not a database)."""
        return FincocktailError(
            f"{self.path}: the results store is damaged ({exc}); move it away and rerun `fincocktail sweep run` "
            "(finished runs are recorded again from their result.json, nothing is retrained), or restore a copy"
        )

    @contextmanager
    def _checked(self) -> Iterator[None]:
        """SQLite's errors about a damaged file become `_damaged`; lock contention stays as it is."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                raise
            if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
                if not lock_held(self.path.parent, SWEEP_LOCK):  # nobody is creating it: it was emptied or truncated
                    size = self.path.stat().st_size if self.path.is_file() else 0
                    raise self._damaged(f"it holds no tables, {size} bytes") from None
                raise StoreNotReady(
                    f"{self.path}: the results store has no tables yet (a starting sweep is creating it); "
                    "retry in a moment, or run `fincocktail sweep run` to create it"
                ) from None
            raise self._damaged(exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction, retried if the lock cannot be had within busy_timeout."""
        with self._checked():
            yield from self._write_once_retried()

    def _write_once_retried(self) -> Iterator[sqlite3.Connection]:
        deadline = time.monotonic() + max(self.busy_timeout_ms / 1000 * 3, 5)
        delay = 0.01
        while True:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                conn.close()
            return

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._checked():
            conn = self._connect()
            try:
                yield conn
            finally:
                conn.close()

    def _init(self) -> None:
        with self._checked():
            self._init_schema()

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            # WAL is a property of the file: set once, every later connection uses it.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. a filesystem without shared memory
                raise FincocktailError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode}); put --out on a local disk")
        finally:
            conn.close()
        with self._write() as conn:
            for statement in _schema_statements():
                conn.execute(statement)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(metrics)").fetchall()}
            if "sample_sha256" not in columns:  # a store written before samples were recorded
                conn.execute("ALTER TABLE metrics ADD COLUMN sample_sha256 TEXT")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise FincocktailError(
                    f"{self.path}: results store schema {row[0]}, this fincocktail reads {SCHEMA_VERSION}; use another --out"
                )

    # -- writes ---------------------------------------------------------------------------

    def register(self, runs: Sequence[Any]) -> int:
        """Add planned runs (RunSpec objects); runs already known keep their status. Returns how many were new."""
        now = time.time()
        new = 0
        with self._write() as conn:
            for r in runs:
                cur = conn.execute(
                    """INSERT OR IGNORE INTO runs (run_id, sweep, kind, label, model, train_tasks, general, math, seed,
                       config, config_sha256, status, est_seconds, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?)""",
                    (
                        r.run_id, r.sweep, r.kind, r.label, r.model, json.dumps(list(r.train_tasks)), r.general, r.math,
                        r.seed, r.model_dump_json(), r.config_sha256, r.est_seconds, now,
                    ),
                )
                new += cur.rowcount
        return new

    def start_attempt(self, run_id: str) -> int:
        """Mark a run running and count the attempt; returns the attempt number (1 for the first)."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT attempts FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise FincocktailError(f"{self.path}: run {run_id} is not registered")
            attempt = int(row[0]) + 1
            # An older attempt still marked running was killed: say so.
            conn.execute(
                "UPDATE attempts SET status = 'interrupted', finished_at = ? WHERE run_id = ? AND status = 'running'",
                (now, run_id),
            )
            conn.execute(
                "UPDATE runs SET status = 'running', attempts = ?, started_at = ?, error = NULL, updated_at = ? WHERE run_id = ?",
                (attempt, now, now, run_id),
            )
            conn.execute(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, NULL, 'running', NULL)",
                (run_id, attempt, socket.gethostname(), os.getpid(), now),
            )
        return attempt

    def finish(self, run_id: str, outcome: RunOutcome, attempt: int | None = None) -> None:
        """Record a finished run and its metrics (idempotent: writing it twice changes nothing)."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                """UPDATE runs SET status = 'done', finished_at = ?, wall_time_s = ?, train_time_s = ?, eval_time_s = ?,
                   tokens_trained = ?, peak_rss_mb = ?, selection_score = ?, run_dir = ?, card = ?, error = NULL,
                   updated_at = ? WHERE run_id = ?""",
                (
                    now, outcome.wall_time_s, outcome.train_time_s, outcome.eval_time_s, outcome.tokens_trained,
                    outcome.peak_rss_mb, outcome.selection_score, outcome.run_dir,
                    redact(json.dumps(outcome.card, default=str)), now, run_id,
                ),
            )
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.executemany(
                """INSERT INTO metrics (run_id, task, split, metric, value, ci_low, ci_high, n, headline, predictions,
                   sample_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (run_id, m.task, m.split, m.metric, m.value, m.ci_low, m.ci_high, m.n, int(m.headline), m.predictions,
                     m.sample_sha256)
                    for m in outcome.metrics
                ],
            )
            if attempt is not None:
                conn.execute(
                    "UPDATE attempts SET status = 'done', finished_at = ? WHERE run_id = ? AND attempt = ?",
                    (now, run_id, attempt),
                )
            else:
                conn.execute(
                    "UPDATE attempts SET status = 'done', finished_at = ? WHERE run_id = ? AND status = 'running'",
                    (now, run_id),
                )

    def pause(self, run_id: str, outcome: RunOutcome, attempt: int | None = None) -> None:
        """Record a run paused at a racing rung: status `paused`, its card (the rung's scores), no metrics."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET status = 'paused', card = ?, tokens_trained = ?, updated_at = ? WHERE run_id = ?",
                (redact(json.dumps(outcome.card, default=str)), outcome.tokens_trained, now, run_id),
            )
            sql = "UPDATE attempts SET status = 'paused', finished_at = ? WHERE run_id = ? AND "
            if attempt is not None:
                conn.execute(sql + "attempt = ?", (now, run_id, attempt))
            else:
                conn.execute(sql + "status = 'running'", (now, run_id))

    def fail(self, run_id: str, error: str, attempt: int | None = None) -> None:
        """Record a failed run; the error text (often an endpoint's body) is stored redacted."""
        now = time.time()
        error = redact(error)
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, error = ?, updated_at = ? WHERE run_id = ?",
                (now, error, now, run_id),
            )
            sql = "UPDATE attempts SET status = 'failed', finished_at = ?, error = ? WHERE run_id = ? AND "
            if attempt is not None:
                conn.execute(sql + "attempt = ?", (now, error, run_id, attempt))
            else:
                conn.execute(sql + "status = 'running'", (now, error, run_id))

    def reset_stale(self) -> int:
        """Runs left 'running' by a sweep that died go back to 'planned' (their attempt stays counted)."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE attempts SET status = 'interrupted', finished_at = ? WHERE status = 'running'", (now,)
            )
            cur = conn.execute("UPDATE runs SET status = 'planned', updated_at = ? WHERE status = 'running'", (now,))
            return cur.rowcount

    def claim(self, contents: str) -> None:
        """Record that this store holds `contents` ('real' or 'simulated') runs, refusing the other kind.

        Why: a simulated run's hash-based fake scores would otherwise count as finished work for a
        real sweep (and show in `results` and `report` as measured). A store written before this
        was recorded counts as simulated if any of its runs was.
        """
        held = self.contents()
        if held is not None and held != contents:
            how = "sweep run --simulate" if held == "simulated" else "real training and evaluation"
            raise ContentsMismatch(
                f"{self.path}: this store holds {held} runs ({how}); {contents} runs never share a store with them: "
                f"use another --out (`--simulate` writes under OUT/{SIMULATED_DIR}/ by default) or delete {self.path.parent}"
            )
        if held is None:
            with self._write() as conn:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('contents', ?)", (contents,))

    def contents(self) -> str | None:
        """'simulated' or 'real' as recorded (or inferred from the run cards of an older store); None when empty."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'contents'").fetchone()
            if row is not None:
                return str(row[0])
            fake = conn.execute("SELECT 1 FROM runs WHERE card LIKE '%\"simulated\": true%' LIMIT 1").fetchone()
            done = conn.execute("SELECT 1 FROM runs WHERE status = 'done' LIMIT 1").fetchone()
        return "simulated" if fake is not None else ("real" if done is not None else None)

    def simulated(self) -> bool:
        """Whether the scores in this store are fake (a `--simulate` sweep): every display says so."""
        return self.contents() == "simulated"

    # -- reads ----------------------------------------------------------------------------

    def runs(self, status: str | None = None, sweep: str | None = None, kind: str | None = None) -> list[RunRow]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        for col, val in (("status", status), ("sweep", sweep), ("kind", kind)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [_run_row(r) for r in rows]

    def run(self, run_id: str) -> RunRow | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run_row(row) if row is not None else None

    def metrics(
        self, run_id: str | None = None, split: str | None = None, task: str | None = None, headline_only: bool = False
    ) -> list[MetricRow]:
        sql, args = "SELECT * FROM metrics WHERE 1=1", []
        for col, val in (("run_id", run_id), ("split", split), ("task", task)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        if headline_only:
            sql += " AND headline = 1"
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [
            MetricRow(
                run_id=r["run_id"], task=r["task"], split=r["split"], metric=r["metric"], value=r["value"],
                ci_low=r["ci_low"], ci_high=r["ci_high"], n=r["n"], headline=bool(r["headline"]), predictions=r["predictions"],
                sample_sha256=r["sample_sha256"],
            )
            for r in rows
        ]

    def splits(self) -> list[str]:
        """The splits that have at least one metric."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT split FROM metrics ORDER BY split").fetchall()]

    def attempts(self, run_id: str | None = None) -> list[AttemptRow]:
        sql, args = "SELECT * FROM attempts", []
        if run_id is not None:
            sql += " WHERE run_id = ?"
            args.append(run_id)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY run_id, attempt", args).fetchall()
        return [AttemptRow(**dict(r)) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        out = {s: 0 for s in ("planned", "running", "done", "failed")}
        out.update({r[0]: r[1] for r in rows})
        return out


class SampleMismatch(FincocktailError):
    """Scores of one (task, split) were computed on different rows: comparing them would mislead."""


def check_same_samples(rows: Sequence[MetricRow], where: str | os.PathLike = "results") -> None:
    """Refuse a set of scores in which one (task, split) was scored on two different samples.

    Rows without a recorded sample (stores from before samples were recorded) are not checked.
    """
    first: dict[tuple[str, str], MetricRow] = {}
    for m in rows:
        if m.sample_sha256 is None:
            continue
        key = (m.task, m.split)
        seen = first.setdefault(key, m)
        if seen.sample_sha256 != m.sample_sha256:
            raise SampleMismatch(
                f"{where}: {m.task} ({m.split}) was scored on different samples by runs {seen.run_id} "
                f"(n={seen.n}, sample {seen.sample_sha256[:12]}) and {m.run_id} (n={m.n}, sample {m.sample_sha256[:12]}); "
                "their scores are not comparable: rerun with the same eval settings, or use another --out for the new ones"
            )


def _schema_statements() -> list[str]:
    """The schema as single statements (executescript would commit our open transaction)."""
    lines = [line.split("--")[0] for line in _SCHEMA.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _run_row(r: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=r["run_id"], sweep=r["sweep"], kind=r["kind"], label=r["label"], model=r["model"],
        train_tasks=tuple(json.loads(r["train_tasks"])), general=r["general"], math=r["math"], seed=r["seed"],
        status=r["status"], attempts=r["attempts"], config=json.loads(r["config"]), config_sha256=r["config_sha256"],
        est_seconds=r["est_seconds"], started_at=r["started_at"], finished_at=r["finished_at"],
        wall_time_s=r["wall_time_s"], train_time_s=r["train_time_s"], eval_time_s=r["eval_time_s"],
        tokens_trained=r["tokens_trained"], peak_rss_mb=r["peak_rss_mb"], selection_score=r["selection_score"],
        run_dir=r["run_dir"], card=json.loads(r["card"]) if r["card"] else None, error=r["error"],
    )
