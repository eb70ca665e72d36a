"""Optional MLflow logging of a sweep's runs (`fincocktail sweep run --mlflow URI`).

Only the driver talks to MLflow: the experiment is created once before any worker starts, and
workers never touch the tracking store. What a user looks at in MLflow:

- params (the run's recipe and its training config) and tags (run id, kind, sweep, run folder);
- step curves, **live**: when a run starts, its MLflow run is created (status RUNNING) and a
  driver thread follows the run's `train/train_log.jsonl` as the trainer appends to it (every
  `poll_s` seconds), logging `train/loss`, `train/lr`, `train/tokens_per_s` and the per-task
  validation curves `curve/<task>/<metric>` at their optimizer step. Following the log keeps
  workers (other processes, Ray nodes) free of MLflow;
- final metrics `<split>/<task>/<metric>` with their bootstrap interval and sample size
  (`..._n`; the sample's sha256 as a tag);
- artifacts: each evaluation's predictions and metrics, the run cards and data manifest, and the
  LoRA adapter itself when it is small (`MAX_ADAPTER_MB`), else its path (tag `fincocktail.adapter_dir`).

Logging is idempotent: a run already FINISHED under its fincocktail run id is not logged again;
an unfinished one (the sweep died) is deleted and logged afresh, so a resumed sweep never
duplicates runs or curve points.

Backends: mlflow-skinny (what `make setup` installs) has no database stores, so a folder
(`--mlflow ./mlruns` or `file:///abs/mlruns`) or an `http(s)://` server are the URIs that work
out of the box. MLflow 3 refuses its file store unless `MLFLOW_ALLOW_FILE_STORE=true`; for a
folder URI fincocktail sets it (unless the user set it), since that store is the only local one
skinny has. `sqlite:` and other database URIs need the full `mlflow` package and are refused
up front with that fix.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fincocktail.errors import FincocktailError
from fincocktail.sweep.execute import RESULT_FILE
from fincocktail.sweep.store import MetricRow, RunRow

RUN_ID_TAG = "fincocktail.run_id"
TRAIN_SUBDIR = "train"  # sweep.execute trains a run into <run folder>/train
MAX_ADAPTER_MB = 200.0  # a LoRA adapter below this is copied into MLflow; larger ones are named by path
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
TRAIN_KEYS = ("loss", "lr", "tokens_per_s")  # train_log.jsonl fields logged as train/<key>


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out[prefix] = json.dumps(value, sort_keys=True)[:6000]
    else:
        out[prefix] = str(value)[:6000]


def prepare_backend(uri: str) -> None:
    """Refuse a URI mlflow-skinny cannot serve, and opt a folder store in (see the module docstring)."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme in DATABASE_SCHEMES:
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise FincocktailError(
                f"--mlflow {uri}: database stores need the full MLflow (pip install mlflow); mlflow-skinny, as "
                f"installed by `make setup`, logs to a folder (--mlflow ./mlruns) or an http(s):// tracking server"
            ) from None
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _one_line(exc: BaseException) -> str:
    """The library's whole message on one line: MLflow puts the fix at the end of long messages
    (e.g. `set MLFLOW_ALLOW_FILE_STORE=true`), so cutting it loses what the user needs."""
    return " ".join(str(exc).split()) or type(exc).__name__


def train_dir_of(run: RunRow) -> Path | None:
    """Where the run trains (and writes train_log.jsonl), or None for a run without a folder."""
    train_dir = ((run.card or {}).get("train") or {}).get("run_dir")
    if not train_dir and run.run_dir:
        train_dir = str(Path(run.run_dir) / TRAIN_SUBDIR)
    return Path(train_dir) if train_dir else None


def log_entry_metrics(entry: dict[str, Any], timestamp_ms: int) -> list[Any]:
    """The MLflow step metrics of one train_log.jsonl line: a loss line's `train/*` values or a
    curve line's `curve/<task>/<metric>` values, at the line's optimizer step."""
    from mlflow.entities import Metric

    from fincocktail.training.curves import curve_point

    step = int(entry.get("step", 0))
    point = curve_point(entry)
    if point is not None:
        return [Metric(f"curve/{task}/{point.metrics.get(task, 'likelihood')}", float(value), timestamp_ms, step)
                for task, value in point.values.items()]
    return [Metric(f"train/{key}", float(entry[key]), timestamp_ms, step)
            for key in TRAIN_KEYS if isinstance(entry.get(key), (int, float))]


def curve_metrics(run: RunRow, timestamp_ms: int) -> list[Any]:
    """Every step metric of the run's train_log.jsonl (loss, lr, curves), read in one go."""
    from fincocktail.training.trainer import TRAIN_LOG

    train_dir = train_dir_of(run)
    return LogFollower(train_dir / TRAIN_LOG).read_new(timestamp_ms) if train_dir else []


class LogFollower:
    """Reads the complete lines appended to a train_log.jsonl since the last read.

    Why by byte offset: the trainer appends while we read, so a torn last line is left for the
    next read instead of being lost or logged twice.
    """

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read_new(self, timestamp_ms: int) -> list[Any]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        metrics: list[Any] = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                metrics += log_entry_metrics(entry, timestamp_ms)
        return metrics


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, poll_s: float = 5.0):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise FincocktailError(
                "--mlflow needs MLflow: pip install 'fincocktail[mlflow]' (mlflow-skinny: folder and http(s) URIs)"
            ) from None
        prepare_backend(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        except Exception as exc:  # one line, but whole: the library's fix is often its last sentence
            raise FincocktailError(f"--mlflow {uri}: {_one_line(exc)}") from None
        self.poll_s = poll_s
        self._lock = threading.Lock()  # the follower thread and the driver share the client
        self._live: dict[str, tuple[str, LogFollower]] = {}  # fincocktail run id -> (MLflow run id, its log)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _existing(self, run_id: str) -> Any | None:
        hits = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1)
        return hits[0] if hits else None

    def logged(self, run_id: str) -> bool:
        found = self._existing(run_id)
        return found is not None and found.info.status == "FINISHED"

    def start(self, run: RunRow | None, run_dir: Path | None = None) -> None:
        """Create the run's MLflow run (RUNNING, params and tags) and follow its training log live
        (in `run_dir`/train: the store learns a run's folder only when it ends)."""
        if run is None:
            return
        with self._lock:
            if run.run_id in self._live:
                return
            found = self._existing(run.run_id)
            if found is not None and found.info.status == "FINISHED":
                return
            if found is not None:  # an earlier sweep died mid-run: log it afresh, not on top
                self.client.delete_run(found.info.run_id)
            mlflow_id = self._create(run)
            train_dir = run_dir / TRAIN_SUBDIR if run_dir is not None else train_dir_of(run)
            from fincocktail.training.trainer import TRAIN_LOG

            self._live[run.run_id] = (mlflow_id, LogFollower((train_dir or Path(os.devnull)) / TRAIN_LOG))
        if self._thread is None and self.poll_s > 0:
            self._thread = threading.Thread(target=self._follow, name="mlflow-follow", daemon=True)
            self._thread.start()

    def _create(self, run: RunRow) -> str:
        from mlflow.entities import Param

        tags = {
            RUN_ID_TAG: run.run_id,
            "fincocktail.kind": run.kind,
            "fincocktail.sweep": run.sweep,
            "fincocktail.config_sha256": run.config_sha256,
            "fincocktail.run_dir": run.run_dir or "",
        }
        created = self.client.create_run(self.experiment_id, run_name=f"{run.model} | {run.label} | seed {run.seed}", tags=tags)
        params: dict[str, str] = {
            "kind": run.kind, "model": run.model, "cocktail": run.label, "train_tasks": "+".join(run.train_tasks),
            "general": str(run.general), "math": str(run.math), "seed": str(run.seed),
        }
        train = run.config.get("train") or {}
        _flatten("train", {k: v for k, v in train.items() if k != "cocktail"}, params)
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(created.info.run_id, params=items[start : start + 100])
        return str(created.info.run_id)

    def poll(self) -> None:
        """Log what every running run's training log gained since the last poll."""
        with self._lock:
            now = int(time.time() * 1000)
            for mlflow_id, follower in list(self._live.values()):
                self._log_metrics(mlflow_id, follower.read_new(now))

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # a tracking hiccup must not end the sweep; the final flush retries
                continue

    def _log_metrics(self, mlflow_id: str, values: Sequence[Any]) -> None:
        for start in range(0, len(values), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(mlflow_id, metrics=list(values[start : start + 1000]))

    def finish(self, run: RunRow | None, metrics: Sequence[MetricRow], failed: bool = False) -> None:
        """The rest of the training log, the final metrics and the artifacts; then FINISHED (or FAILED)."""
        if run is None:
            return
        if run.run_id not in self._live:
            if self.logged(run.run_id):
                return
            self.start(run)
        if run.run_id not in self._live:  # FINISHED meanwhile
            return
        with self._lock:
            mlflow_id, follower = self._live.pop(run.run_id)
            now = int(time.time() * 1000)
            self._log_metrics(mlflow_id, follower.read_new(now) + final_metrics(run, metrics, now))
            if not failed:
                log_artifacts(self.client, mlflow_id, run, metrics)
            self.client.set_terminated(mlflow_id, "FAILED" if failed else "FINISHED")

    def safely(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        """Run a tracking call; a failure is one line on stderr, not the end of the sweep.

        Why: hours of runs must not die because a tracking server blipped; the run's MLflow
        record is redone by the next `sweep run --mlflow` (only FINISHED ones are skipped).
        """
        import sys

        try:
            call(*args, **kwargs)
        except Exception as exc:
            print(f"warning: --mlflow: could not log {what}: {_one_line(exc)}; rerun with --mlflow to log it", file=sys.stderr)

    def log_run(self, run: RunRow | None, metrics: Sequence[MetricRow]) -> None:
        """A finished run in one go (a run recorded before this sweep's tracker existed)."""
        self.finish(run, metrics)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def final_metrics(run: RunRow, metrics: Sequence[MetricRow], now: int) -> list[Any]:
    """`<split>/<task>/<metric>` with `_ci_low`/`_ci_high` and `_n` (the rows it was scored on), plus the run's costs."""
    from mlflow.entities import Metric

    values: list[Metric] = []
    for m in metrics:
        key = f"{m.split}/{m.task}/{m.metric}"
        values.append(Metric(key, m.value, now, 0))
        if m.ci_low is not None and m.ci_high is not None:
            values += [Metric(f"{key}_ci_low", m.ci_low, now, 0), Metric(f"{key}_ci_high", m.ci_high, now, 0)]
        if m.n:
            values.append(Metric(f"{key}_n", float(m.n), now, 0))
    for name in ("wall_time_s", "train_time_s", "eval_time_s", "tokens_trained", "peak_rss_mb", "selection_score"):
        value = getattr(run, name)
        if value is not None:
            values.append(Metric(name, float(value), now, 0))
    return values


def log_artifacts(client: Any, mlflow_id: str, run: RunRow, metrics: Sequence[MetricRow]) -> None:
    """Predictions and metrics of each evaluation, the cards, and the adapter (or its path)."""
    from mlflow.entities import RunTag

    tags: list[RunTag] = []
    for m in {(m.split, m.task): m for m in metrics}.values():
        if m.sample_sha256:
            tags.append(RunTag(f"sample/{m.split}/{m.task}", m.sample_sha256))
        if m.predictions and Path(m.predictions).is_file():
            folder = Path(m.predictions).parent
            for path in sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.json")):
                client.log_artifact(mlflow_id, str(path), f"eval/{m.split}/{m.task}")
    train_dir = train_dir_of(run)
    if train_dir is not None:
        for name in ("run_card.json", "data_manifest.json", "train_log.jsonl"):
            if (train_dir / name).is_file():
                client.log_artifact(mlflow_id, str(train_dir / name), "train")
        adapter = train_dir / "adapter"
        if adapter.is_dir():
            tags.append(RunTag("fincocktail.adapter_dir", str(adapter)))
            size_mb = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file()) / 2**20
            if size_mb <= MAX_ADAPTER_MB:
                client.log_artifacts(mlflow_id, str(adapter), "adapter")
    if run.run_dir and (Path(run.run_dir) / RESULT_FILE).is_file():
        client.log_artifact(mlflow_id, str(Path(run.run_dir) / RESULT_FILE))
    if tags:
        client.log_batch(mlflow_id, tags=tags)
