"""Reading what `compare` compares: the per-example predictions of eval runs and sweep runs.

An eval run folder (`fincocktail eval --out DIR`) holds `run_card.json` and one
`<task>.predictions.jsonl` per task; a sweep run folder holds one such eval folder per task under
`eval/<split>/<task>/`. Both become a `RunResults`: per task, the prediction rows keyed by the
examples' stable ids, which is what makes a paired comparison possible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fincocktail.errors import ConfigError
from fincocktail.evaluation.results import read_task_result
from fincocktail.plumbing.fileio import safe_name


@dataclass
class TaskPredictions:
    """One task of one run: its prediction rows in file order, and what defines its sample."""

    task: str
    split: str
    version: str
    mode: str
    metric: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    path: Path
    shots: int = 0
    sample_hash: str | None = None

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self.rows]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {str(r["id"]): r for r in self.rows}


@dataclass
class RunResults:
    """One run given to `compare`: where it lies, what model it evaluated, its tasks."""

    path: Path
    model: str
    adapter: str | None
    tasks: dict[str, TaskPredictions] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """"SmolLM2-135M-Instruct + fpb-run": the model's folder name and the adapter's run folder."""
        model = self.model if self.model.startswith("openai:") else Path(self.model.rstrip("/")).name
        if not self.adapter:
            return model
        adapter = Path(self.adapter)
        return f"{model} + {adapter.parent.name if adapter.name == 'adapter' else adapter.name}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as JSON ({exc})") from exc


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; the eval run is incomplete (rerun fincocktail eval into a new --out)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
    return rows


def _load_eval_dir(path: Path, run: RunResults | None = None) -> RunResults:
    card = _read_json(path / "run_card.json")
    if card.get("kind") != "fincocktail-eval":
        raise ConfigError(f"{path / 'run_card.json'}: not an eval run card (kind {card.get('kind')!r}); pass an eval or sweep run folder")
    config = card.get("config") or {}
    run = run or RunResults(path=path, model=str(config.get("model", "?")), adapter=config.get("adapter"))
    for task_id, info in (card.get("tasks") or {}).items():
        metrics_file = path / f"{safe_name(task_id)}.metrics.json"
        result = read_task_result(metrics_file) if metrics_file.is_file() else None
        run.tasks[task_id] = TaskPredictions(
            task=task_id,
            split=str(config.get("split", "test")),
            version=str(info.get("version", "")),
            mode=str(info.get("mode", "")),
            metric=result.metric if result else "",
            metrics=dict(result.metrics) if result else {},
            rows=_read_predictions(path / f"{safe_name(task_id)}.predictions.jsonl"),
            path=path / f"{safe_name(task_id)}.predictions.jsonl",
            shots=int(config.get("shots") or 0),
            sample_hash=(info.get("sample") or (result.sample if result else None) or {}).get("sha256"),
        )
    return run


def load_run(path: str | Path, split: str | None = None) -> RunResults:
    """An eval run folder or a sweep run folder (`split`: which of its eval splits; default test)."""
    root = Path(path).expanduser()
    if (root / "run_card.json").is_file() and not (root / "eval").is_dir():
        run = _load_eval_dir(root)
        other = sorted({t.split for t in run.tasks.values()} - {split}) if split else []
        if other:
            raise ConfigError(f"{root}: this eval run is on split {other[0]!r}, not --split {split}")
        return run
    if (root / "eval").is_dir():
        splits = sorted(p.name for p in (root / "eval").iterdir() if p.is_dir())
        chosen = split or ("test" if "test" in splits else (splits[0] if len(splits) == 1 else None))
        if chosen is None:
            raise ConfigError(f"{root}: the sweep run has splits {', '.join(splits)}; choose one with --split")
        if chosen not in splits:
            raise ConfigError(f"{root}: the sweep run has no eval split {chosen!r} (it has {', '.join(splits) or 'none'})")
        run: RunResults | None = None
        for task_dir in sorted((root / "eval" / chosen).iterdir()):
            if (task_dir / "run_card.json").is_file():
                run = _load_eval_dir(task_dir, run)
        if run is None:
            raise ConfigError(f"{root / 'eval' / chosen}: no finished evaluation (no */run_card.json) in this sweep run")
        run.path = root
        return run
    raise ConfigError(
        f"{root}: neither an eval run (run_card.json) nor a sweep run (eval/<split>/<task>/); "
        "pass a folder written by `fincocktail eval --out` or `fincocktail sweep run`"
    )
