"""Optional MLflow logging of a sweep's finished runs (`fincocktail sweep run --mlflow URI`).

Only the driver talks to MLflow: the experiment is created once before any worker starts, and
each run is logged when its result reaches the driver. Workers never touch the tracking store,
so its sqlite backend cannot race. Logging is idempotent (a run already logged under its
fincocktail run id is not logged twice), so a resumed sweep does not duplicate runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fincocktail.errors import FincocktailError
from fincocktail.sweep.store import MetricRow, RunRow

RUN_ID_TAG = "fincocktail.run_id"
TRAIN_SUBDIR = "train"  # sweep.execute trains a run into <run folder>/train


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out[prefix] = json.dumps(value, sort_keys=True)[:6000]
    else:
        out[prefix] = str(value)[:6000]


def curve_metrics(run: RunRow, timestamp_ms: int) -> list[Any]:
    """The run's learning curves (`training.eval_every`) as MLflow step metrics
    `curve/<task>/<metric>`, read from its train_log.jsonl after the run, so MLflow draws each
    task's curve over optimizer steps. Empty when the run drew no curves."""
    from mlflow.entities import Metric

    from fincocktail.training.curves import read_curves
    from fincocktail.training.trainer import TRAIN_LOG

    train_dir = ((run.card or {}).get("train") or {}).get("run_dir")
    if not train_dir and run.run_dir:
        train_dir = str(Path(run.run_dir) / TRAIN_SUBDIR)
    if not train_dir:
        return []
    return [
        Metric(f"curve/{task}/{point.metrics.get(task, 'likelihood')}", value, timestamp_ms, point.step)
        for point in read_curves(Path(train_dir) / TRAIN_LOG)
        for task, value in point.values.items()
    ]


class MlflowTracker:
    def __init__(self, uri: str, experiment: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise FincocktailError(
                "--mlflow needs MLflow: pip install 'fincocktail[mlflow]' (or mlflow-skinny for file: and http: URIs)"
            ) from None
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        except Exception as exc:  # MLflow's errors are long; the user needs the first line and the URI
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FincocktailError(f"--mlflow {uri}: {first[:300]}") from None

    def logged(self, run_id: str) -> bool:
        hits = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1)
        return bool(hits)

    def log_run(self, run: RunRow | None, metrics: Sequence[MetricRow]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if run is None or self.logged(run.run_id):
            return
        tags = {
            RUN_ID_TAG: run.run_id,
            "fincocktail.kind": run.kind,
            "fincocktail.sweep": run.sweep,
            "fincocktail.config_sha256": run.config_sha256,
        }
        created = self.client.create_run(
            self.experiment_id, run_name=f"{run.model} | {run.label} | seed {run.seed}", tags=tags
        )
        params: dict[str, str] = {
            "kind": run.kind, "model": run.model, "cocktail": run.label, "train_tasks": "+".join(run.train_tasks),
            "general": str(run.general), "math": str(run.math), "seed": str(run.seed),
        }
        train = run.config.get("train") or {}
        _flatten("train", {k: v for k, v in train.items() if k != "cocktail"}, params)
        now = int(time.time() * 1000)
        values: list[Metric] = []
        for m in metrics:
            key = f"{m.split}/{m.task}/{m.metric}"
            values.append(Metric(key, m.value, now, 0))
            if m.ci_low is not None and m.ci_high is not None:
                values += [Metric(f"{key}_ci_low", m.ci_low, now, 0), Metric(f"{key}_ci_high", m.ci_high, now, 0)]
        for name in ("wall_time_s", "train_time_s", "eval_time_s", "tokens_trained", "peak_rss_mb", "selection_score"):
            value = getattr(run, name)
            if value is not None:
                values.append(Metric(name, float(value), now, 0))
        values += curve_metrics(run, now)
        run_id = created.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, max(len(values), len(items), 1), 100):  # MLflow caps a batch at 1000 metrics / 100 params
            self.client.log_batch(run_id, metrics=values[start : start + 100], params=items[start : start + 100])
        self.client.log_batch(run_id, tags=[RunTag("fincocktail.run_dir", run.run_dir or "")])
        self.client.set_terminated(run_id, "FINISHED")
