"""One task's evaluation result as the metrics files hold it.

Its own module because the runner writes it and the judge rewrites it with its grades; neither
should import the other for it. The readers sit beside the writer so that the sweep, `compare`
and the model export read the files one way (`read_metrics` for a run's `metrics.json`,
`read_task_result` for one `<task>.metrics.json`), not each its own raw dict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fincocktail.errors import ConfigError
from fincocktail.evaluation.bootstrap import Interval


@dataclass
class TaskResult:
    task: str
    version: str
    mode: str
    n: int
    metric: str
    metrics: dict[str, float]
    interval: Interval | None
    parse_failure_rate: float
    ties: int
    examples_per_s: float
    tokens_per_s: float
    seconds: float
    demo_ids: list[str] = field(default_factory=list)
    rescored: int = 0  # choice predictions re-checked in fp32 (dtype auto on bf16 hardware)
    truncated_prompts: int = 0  # prompts cut to max_prompt_tokens (from the left)
    sample: dict[str, Any] = field(default_factory=dict)  # Sample.describe(): method, seed, n, population, sha256



def result_json(r: TaskResult) -> dict[str, Any]:
    d = asdict(r)
    d["interval"] = asdict(r.interval) if r.interval else None
    return d


# What a file written before a field existed meant by its absence (the raw readers' old `.get` defaults).
_ABSENT: dict[str, Any] = {
    "version": "", "mode": "", "n": 0, "metric": "", "metrics": {}, "interval": None, "parse_failure_rate": 0.0,
    "ties": 0, "examples_per_s": 0.0, "tokens_per_s": 0.0, "seconds": 0.0,
}


def result_from_json(d: dict[str, Any], task: str | None = None) -> TaskResult:
    """The inverse of `result_json`, tolerant of files written before a field existed; unknown keys
    are ignored so an older reader still opens a newer file. `task` names it when `d` does not."""
    known = {f.name for f in fields(TaskResult)}
    values = {**_ABSENT, **{k: v for k, v in d.items() if k in known}}
    values["task"] = str(d.get("task") or task or "")
    iv = values["interval"]
    values["interval"] = Interval(low=iv["low"], high=iv["high"], n_resamples=int(iv.get("n_resamples", 0)),
                                  seed=int(iv.get("seed", 0))) if iv else None
    values["metrics"] = dict(values["metrics"] or {})
    values["sample"] = dict(values.get("sample") or {})
    return TaskResult(**values)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as JSON ({exc})") from exc


def read_task_result(path: Path) -> TaskResult:
    """One task's `<task>.metrics.json`, as the runner (or the judge, after grading) wrote it."""
    return result_from_json(_read_json(path))


def read_metrics(path: Path) -> dict[str, TaskResult]:
    """A run's `metrics.json`: every task's result, by task id, in the file's order."""
    return {task: result_from_json(d, task) for task, d in _read_json(path).items()}
