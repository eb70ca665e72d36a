"""Per-task learning curves during training (`training.eval_every`).

Every N optimizer steps (and at step 0 and at the end) the model scores a fixed validation
sample (test, for tasks that have no other) of every task of the cocktail, plus `eval_tasks_extra`, with the likelihood metric
(`metrics.likelihood`): the gold choice's probability normalised over the choices for choice
tasks, the teacher-forced log-likelihood per answer token for generative ones. Why that metric
and not accuracy: it moves with every example, so a 64-row curve shows a trend where accuracy
on the same rows jumps in steps of 1/64 (issue 29's measurements).

Why the care around the call: a curve must not change the run it watches. Scoring runs in eval
mode under no-grad, and torch's RNG state (which the LoRA dropout draws from) is saved before
and put back after, so a run with curves trains exactly as one without (tested). The samples
are drawn with `tasks.sampling.draw_sample` at a fixed seed that does not depend on the run's
seed, so every step and every run of a sweep is scored on the same rows.

The scoring itself is evaluation's: `models.choice.score_choices` on items built as zero-shot
choice mode builds them, and `models.forward.answer_logprobs` (both below training and
evaluation, so both use the same code).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from fincocktail.errors import ConfigError
from fincocktail.metrics.likelihood import GENERATIVE_LIKELIHOOD_METRIC, LIKELIHOOD_METRIC, gold_probability
from fincocktail.models.choice import ChoiceItem, choice_item, score_choices
from fincocktail.models.forward import Scorer, answer_logprobs
from fincocktail.tasks.prompts import Encoder, encoder_for, render
from fincocktail.tasks.base import Example, Task
from fincocktail.tasks.sampling import CLASSIFICATION_KINDS, draw_sample

CURVE_SPLITS = ("validation", "test")
"""The split a task's curve is drawn from: its validation split, else (tasks scored on a test
split alone, such as cfa and financebench, which only `eval_tasks_extra` names) its test split.
Nothing is selected on a curve, so watching test rows does not leak into a decision."""
CURVE_SAMPLE_SEED = 0  # not the run's seed: every run of a sweep draws the same rows


@dataclass(frozen=True)
class CurveTask:
    """One task's fixed curve sample, tokenized once: choice items or (prompt, answer) rows."""

    task_id: str
    metric: str  # LIKELIHOOD_METRIC (choice tasks) or GENERATIVE_LIKELIHOOD_METRIC
    split: str
    sample_sha256: str
    choice_items: tuple[ChoiceItem, ...] = ()
    choices: tuple[tuple[str, ...], ...] = ()  # each item's choice labels, in the items' order
    golds: tuple[str, ...] = ()
    answer_rows: tuple[tuple[list[int], list[int]], ...] = ()

    @property
    def n(self) -> int:
        return len(self.choice_items) or len(self.answer_rows)


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation: the value per task (mean over its sample) and what it cost."""

    step: int
    values: dict[str, float]
    seconds: float
    metrics: dict[str, str] = field(default_factory=dict)  # task -> metric name (read back from a log)

    def log_entry(self, tasks: tuple[CurveTask, ...]) -> dict[str, Any]:
        """The train_log.jsonl line: `curve` maps task -> value; `loss` lines and curve lines
        share `step`, so a reader picks either kind by its key."""
        return {
            "step": self.step,
            "curve": {k: round(v, 6) for k, v in self.values.items()},
            "curve_metric": {t.task_id: t.metric for t in tasks},
            "curve_n": {t.task_id: t.n for t in tasks},
            "curve_s": round(self.seconds, 3),
        }


def curve_split(task: Task) -> str | None:
    """The split `task`'s curve is drawn from (see CURVE_SPLITS); None when it cannot be scored."""
    return next((split for split in CURVE_SPLITS if task.why_not_evaluable(split) is None), None)


def curve_task_objects(
    cocktail_tasks: Mapping[str, Task], extra: list[str], resolver: Callable[[str], Task] | None,
    only: list[str] | None = None,
) -> dict[str, Task]:
    """The tasks whose curves are drawn: the cocktail's scorable ones, then `eval_tasks_extra`; or,
    with `only` (`eval_tasks`), exactly those (a racing search reads its searched tasks and need not
    pay for a booster's generative curve).

    Checked before the data and the model are read: an unknown or unscorable listed task is a
    one-line error naming the field; a cocktail task that cannot be scored (an instruction
    booster) is simply not drawn.
    """
    field_name = "eval_tasks" if only is not None else "eval_tasks_extra"
    out = {} if only is not None else {tid: t for tid, t in cocktail_tasks.items() if curve_split(t) is not None}
    if resolver is None:
        from fincocktail.tasks.registry import get_task as resolver  # type: ignore[no-redef]
    for i, tid in enumerate(only if only is not None else extra):
        try:
            task = cocktail_tasks.get(tid) or resolver(tid)
        except ConfigError as exc:
            raise ConfigError(f"{field_name}.{i}: {exc}") from None
        if curve_split(task) is None:
            raise ConfigError(f"{field_name}.{i}: {task.why_not_evaluable(CURVE_SPLITS[0])}")
        out[tid] = task
    if not out:
        raise ConfigError(
            "eval_every: no task of the cocktail can be scored (instruction data only); name one in eval_tasks_extra"
        )
    return out


def prepare_curve_tasks(
    tasks: Mapping[str, Task], data_dir: Path, n: int, tokenizer: Any, style: str, max_length: int,
    tokens: Any | None = None,
) -> tuple[CurveTask, ...]:
    """Draw each task's fixed sample and tokenize it; prompts lose tokens from the left to fit
    `max_length` with the answer, as training's examples do."""
    encode = encoder_for(tokens)
    out = []
    for tid, task in tasks.items():
        split = curve_split(task) or CURVE_SPLITS[0]
        sample = draw_sample(task.load(split, data_dir), n, task_id=tid, split=split, kind=task.kind, seed=CURVE_SAMPLE_SEED)
        if not sample.examples:
            raise ConfigError(f"eval_every: task {tid!r} has no {split} examples")
        build = _choice_task if _is_choice(task, sample.examples) else _answer_task
        out.append(build(task, sample.examples, split, sample.sha256, tokenizer, style, max_length, encode))
    return tuple(out)


def _is_choice(task: Task, examples: list[Example]) -> bool:
    return task.kind in CLASSIFICATION_KINDS and all(e.choices or task.labels for e in examples)


def _choice_task(
    task: Task, examples: list[Example], split: str, sha: str, tokenizer: Any, style: str, max_length: int, encode: Encoder
) -> CurveTask:
    items, choices = [], []
    for ex in examples:
        item = choice_item(task, ex, style, tokenizer, None, encode)  # type: ignore[arg-type]
        room = max(1, max_length - max(len(c) for c in item.choice_ids))
        items.append(ChoiceItem(item.prompt_ids[-room:], item.choice_ids))
        choices.append(tuple(ex.choices or task.labels or ()))
    return CurveTask(task.id, LIKELIHOOD_METRIC, split, sha, tuple(items), tuple(choices), tuple(e.target for e in examples))


def _answer_task(
    task: Task, examples: list[Example], split: str, sha: str, tokenizer: Any, style: str, max_length: int, encode: Encoder
) -> CurveTask:
    rows = []
    for ex in examples:
        prompt, answer = encode(tokenizer, render(task, ex, style=style, tokenizer=tokenizer), False)  # type: ignore[arg-type]
        if not answer:
            continue  # an empty gold answer has no tokens to score
        answer = answer[: max_length - 1]
        rows.append((prompt[-(max_length - len(answer)) :], answer))
    if not rows:
        raise ConfigError(f"eval_every: task {task.id!r}: no {split} example has a gold answer to score")
    return CurveTask(task.id, GENERATIVE_LIKELIHOOD_METRIC, split, sha, answer_rows=tuple(rows))


def score_curve_tasks(model: Any, tasks: tuple[CurveTask, ...], pad_id: int, batch_size: int) -> dict[str, float]:
    """Each task's likelihood metric on its sample (the mean over its rows), with `model` as it is.

    A new `Scorer` each time: it keeps a float32 copy of a low-precision head, which full
    fine-tuning changes between points.
    """
    scorer = Scorer(model)
    values: dict[str, float] = {}
    for t in tasks:
        if t.choice_items:
            scores = score_choices(scorer, list(t.choice_items), pad_id, batch_size)
            per_row = [gold_probability(dict(zip(c, s.logprobs)), g) for c, s, g in zip(t.choices, scores, t.golds)]
        else:
            per_row = [total / n for total, n in answer_logprobs(scorer, list(t.answer_rows), pad_id, batch_size)]
        values[t.task_id] = sum(per_row) / len(per_row)
    return values


class Curves:
    """When to score and how, without disturbing training: eval mode, no grad, RNGs restored."""

    def __init__(self, tasks: tuple[CurveTask, ...], every: int, pad_id: int, batch_size: int, autocast: Any):
        self.tasks = tasks
        self.every = every
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.autocast = autocast
        self.last: CurvePoint | None = None

    def describe(self) -> dict[str, Any]:
        """What the run card records: every N steps, and per task its metric and sample (rows and
        their sha256, the same in every run that draws the task)."""
        return {
            "every": self.every, "sample_seed": CURVE_SAMPLE_SEED,
            "tasks": {t.task_id: {"metric": t.metric, "split": t.split, "n": t.n, "sample_sha256": t.sample_sha256} for t in self.tasks},
        }

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def evaluate(self, model: Any, step: int) -> CurvePoint:
        t0 = time.perf_counter()
        with preserved_rng(), evaluation_mode(model), self.autocast:
            values = score_curve_tasks(model, self.tasks, self.pad_id, self.batch_size)
        self.last = CurvePoint(step, values, time.perf_counter() - t0)
        return self.last

    def log(self, model: Any, step: int, log: TextIO) -> CurvePoint:
        """Score at `step` and append the curve line (flushed: a checkpoint's fsync covers it)."""
        point = self.evaluate(model, step)
        log.write(json.dumps(point.log_entry(self.tasks), allow_nan=False) + "\n")
        log.flush()
        return point


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Put torch's (CPU and CUDA) and Python's RNG state back as they were on entry.

    Scoring draws nothing in eval mode today, but a model's forward may (a future sampler, a
    library's own dropout); the training that follows must see the very stream it would have.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    py = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)


@contextmanager
def evaluation_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) and no grad for the duration, then train mode again if it was on."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def read_curves(train_log: Path) -> list[CurvePoint]:
    """The curve points of a run's train_log.jsonl, in step order (none when there is no log).

    Readers outside training (MLflow step metrics, a report's curve plot) use this rather than
    parsing the log's line kinds themselves. A torn last line (a kill mid-write) is skipped.
    """
    if not Path(train_log).is_file():
        return []
    points = []
    for line in Path(train_log).read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        point = curve_point(entry)
        if point is not None:
            points.append(point)
    return sorted(points, key=lambda p: p.step)


def curve_point(entry: dict[str, Any]) -> CurvePoint | None:
    """The curve point one parsed train_log.jsonl line holds, or None for a loss line (a reader
    that follows the log as it grows, like MLflow's live logging, parses line by line)."""
    if "curve" not in entry:
        return None
    return CurvePoint(
        int(entry["step"]), dict(entry["curve"]), float(entry.get("curve_s", 0.0)), dict(entry.get("curve_metric") or {}),
    )


def live_curves(progress: bool, stream: Any = None) -> bool:
    """Whether to show the latest curve point under the progress bar: only on a terminal, so
    logs and CI output never fill with redraws."""
    stream = stream if stream is not None else sys.stdout
    return progress and bool(getattr(stream, "isatty", lambda: False)())


def curve_text(point: CurvePoint | None) -> str:
    if point is None:
        return ""
    return f"curves @ step {point.step}: " + "  ".join(f"{k} {v:.3f}" for k, v in point.values.items())


__all__ = [
    "CURVE_SAMPLE_SEED", "CURVE_SPLITS", "CurvePoint", "CurveTask", "Curves", "curve_split", "curve_task_objects", "curve_text",
    "evaluation_mode", "live_curves", "prepare_curve_tasks", "preserved_rng", "read_curves", "score_curve_tasks",
]
