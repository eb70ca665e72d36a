"""What a search maximises and what it must respect, parsed from the command line.

Objectives are weighted means of per-task *validation* scores (`mean`, one task, or
`weights:fpb=2,tfns=1`), so every objective is linear in the task scores: the surrogate's
per-task predictions give its mean and variance directly, and several objectives can be mixed
by weights (the batch's random scalarisations, ParEGO-style). Constraints are floors on a
task's validation score: `no-task-below-single` (every task of the objective at least its
single-task run's score) or `min:TASK=VALUE`. Test scores never enter any of this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fincocktail.errors import ConfigError

NO_TASK_BELOW_SINGLE = "no-task-below-single"


@dataclass(frozen=True)
class Objective:
    text: str  # as given on the command line
    weights: dict[str, float]  # task -> weight, summing to 1

    def vector(self, tasks: Sequence[str]) -> np.ndarray:
        return np.array([self.weights.get(t, 0.0) for t in tasks])

    def value(self, scores: Mapping[str, float]) -> float | None:
        """The objective of measured scores; None when a task it weighs was not scored."""
        if any(t not in scores for t in self.weights):
            return None
        return float(sum(w * scores[t] for t, w in self.weights.items()))

    @property
    def slug(self) -> str:
        return self.text.replace("weights:", "w-").replace("=", "").replace(",", "-").replace(".", "p")


def parse_objective(text: str, tasks: Sequence[str]) -> Objective:
    """`mean` (of the sweep's validation tasks), `TASK`, or `weights:TASK=W,...` (weights >= 0, normalised)."""
    where = f"--objective {text}"
    if text == "mean":
        return Objective(text, {t: 1 / len(tasks) for t in tasks})
    if text.startswith("weights:"):
        raw: dict[str, float] = {}
        for part in text[len("weights:"):].split(","):
            task, sep, value = part.partition("=")
            task = task.strip()
            if not sep:
                raise ConfigError(f"{where}: expected TASK=WEIGHT, got {part!r}")
            try:
                raw[task] = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {task}: weight {value!r} is not a number") from None
            _check_task(task, tasks, where)
            if raw[task] < 0:
                raise ConfigError(f"{where}: {task}: weight must be >= 0")
        total = sum(raw.values())
        if total <= 0:
            raise ConfigError(f"{where}: the weights add up to 0")
        return Objective(text, {t: w / total for t, w in raw.items() if w > 0})
    _check_task(text, tasks, where)
    return Objective(text, {text: 1.0})


def _check_task(task: str, tasks: Sequence[str], where: str) -> None:
    if task not in tasks:
        raise ConfigError(f"{where}: task {task!r} has no validation score in this sweep (validation tasks: {', '.join(tasks)})")


@dataclass(frozen=True)
class Floor:
    """The predicted (for proposals) or measured (for the recommendation) score of `task` must reach `value`."""

    task: str
    value: float
    why: str


def parse_constraints(texts: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """Validate constraint strings early; they are resolved to floors once the single-task scores are known."""
    for text in texts:
        if text == NO_TASK_BELOW_SINGLE:
            continue
        if text.startswith("min:"):
            task, sep, value = text[4:].partition("=")
            try:
                float(value)
            except ValueError:
                raise ConfigError(f"--constraint {text}: expected min:TASK=VALUE") from None
            if not sep:
                raise ConfigError(f"--constraint {text}: expected min:TASK=VALUE")
            _check_task(task, tasks, f"--constraint {text}")
            continue
        raise ConfigError(f"--constraint {text!r}: expected {NO_TASK_BELOW_SINGLE} or min:TASK=VALUE")
    return list(texts)


def floors(constraints: Sequence[str], objectives: Sequence[Objective], single: Mapping[str, float]) -> tuple[list[Floor], list[str]]:
    """(floors, notes): `single` holds each task's single-task validation score (mean over seeds).

    `no-task-below-single` applies to every task an objective weighs; a task without a
    single-task run has no floor, and the notes say so.
    """
    out: list[Floor] = []
    notes: list[str] = []
    for text in constraints:
        if text == NO_TASK_BELOW_SINGLE:
            weighed = sorted({t for o in objectives for t in o.weights})
            for t in weighed:
                if t in single:
                    out.append(Floor(t, single[t], f"single-task {t} (validation {single[t]:.3f})"))
                else:
                    notes.append(f"{NO_TASK_BELOW_SINGLE}: {t} has no single-task run with a validation score; no floor")
        else:
            task, _, value = text[4:].partition("=")
            out.append(Floor(task, float(value), text))
    return out, notes


def feasible(scores: Mapping[str, float], fl: Sequence[Floor]) -> bool | None:
    """Whether measured scores meet every floor; None when a floored task was not scored."""
    if any(f.task not in scores for f in fl):
        return None
    return all(scores[f.task] >= f.value for f in fl)
