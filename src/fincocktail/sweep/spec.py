"""The sweep file: the study's whole experiment design as one validated config, and its runs.

A sweep names the financial tasks, the models, the seeds and which designs to build from them
(zero-shot base rows, API rows, single-task fine-tunes, incremental cocktails, the general and
math ingredients at given fractions). `expand` turns it into a flat list of `RunSpec`s, each
with the *full* config it will run (training config with its inline cocktail, evaluation
settings) and an id derived from the sha256 of that config's canonical JSON. The id is what
makes reruns skip finished work: the same config always gets the same id, and any change to
what a run computes gives it a new one. Machine-specific things (data folder, throughput
figures, CPU/GPU requests) are deliberately outside the hash.

Every problem is reported at plan time as `FILE: field.path: what was wrong`, before anything
is loaded or trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fincocktail.errors import ConfigError
from fincocktail.evaluation.settings import EvalFields, inherited
from fincocktail.models.dtypes import SweepPrecision
from fincocktail.plumbing.fileio import load_yaml, validate_mapping
from fincocktail.plumbing.paths import check_name
from fincocktail.tasks.builtin import KNOWLEDGE_TASKS, NUMERICAL_TASKS
from fincocktail.tasks.sampling import SampleMethod

if TYPE_CHECKING:
    from fincocktail.evaluation.runner import EvalConfig

# Bump when the meaning of a run config changes (it is part of every run's hash).
RUN_SCHEMA = "fincocktail-run/1"

RunKind = Literal["base", "api", "single", "cocktail", "mixture", "matched"]
# mixture: proposed by `mix search`; matched: a single task trained for its cocktail's steps (design.matched_steps)
MATCHED_SUFFIX = " (matched steps)"

# Fields of the training config the sweep sets itself, per run.
_SWEEP_OWNED_TRAIN_FIELDS = ("model", "cocktail", "seed", "output_dir", "data_dir")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelEntry(_Strict):
    """A base model to fine-tune (and evaluate zero-shot). A bare string is just its name."""

    name: str = Field(min_length=1, description="registry name or local HF folder")
    tokens_per_s: float | None = Field(
        default=None, gt=0,
        description="training throughput with prefix_sharing off, for time estimates (runs with it on: x1.2, measured)",
    )
    eval_examples_per_s: float | None = Field(default=None, gt=0, description="evaluation throughput (choice mode)")
    gpu_tokens_per_s: float | None = Field(
        default=None, gt=0, description="training tokens/s on one GPU: used instead of tokens_per_s when the sweep runs on GPUs"
    )
    gpu_eval_examples_per_s: float | None = Field(
        default=None, gt=0, description="evaluation examples/s on one GPU (choice mode), when the sweep runs on GPUs"
    )
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    training: dict[str, Any] = Field(default_factory=dict, description="per-model training overrides")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ApiModelEntry(_Strict):
    """A model behind an OpenAI-compatible API, evaluated without training (`openai:MODEL`)."""

    name: str = Field(min_length=1, description="e.g. openai:gpt-4o")
    base_url: str | None = None
    eval_examples_per_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _prefixed(cls, value: str) -> str:
        if not value.startswith("openai:"):
            raise ValueError(f"expected 'openai:MODEL' (an OpenAI-compatible endpoint), got {value!r}")
        return value


class BoosterGrid(_Strict):
    """An extra ingredient added to cocktails at each of `fractions` (0 = without it)."""

    task: str
    fractions: list[float] = Field(min_length=1)
    cap: int | None = Field(default=None, ge=0, description="at most this many examples per epoch")

    @field_validator("fractions")
    @classmethod
    def _check(cls, value: list[float]) -> list[float]:
        for i, f in enumerate(value):
            if f < 0:
                raise ValueError(f"fractions.{i}: must be >= 0, got {f:g}")
        if len(set(value)) != len(value):
            raise ValueError(f"fractions: listed twice in {value}")
        return value


class DesignSpec(_Strict):
    """Which runs to build from the tasks. Boosters multiply the trained runs they apply to."""

    base: bool = Field(default=True, description="a zero-shot row per model")
    single: bool = Field(default=True, description="one fine-tune per financial task")
    incremental: bool | list[str] = Field(
        default=True,
        description="add tasks one at a time (cocktails of the first 2, 3, ... tasks); true = the `tasks` order",
    )
    all_tasks: bool = Field(default=True, description="the cocktail of every financial task (if incremental did not already make it)")
    cocktails: list[list[str]] = Field(default_factory=list, description="extra cocktails, each a list of tasks")
    boosters_on: list[Literal["single", "cocktail", "all_tasks"]] = Field(
        default_factory=lambda: ["single", "cocktail"],
        description="which trained runs get the general / math grid; all_tasks: only the cocktail of every task",
    )
    combine_boosters: bool = Field(
        default=True, description="false: general and math are added one at a time, never together"
    )
    incremental_seeds: list[int] | None = Field(
        default=None,
        description="seeds of the incremental cocktails short of every task (default: `seeds`); "
        "single-task runs and the cocktail of every task always get every seed",
    )
    matched_steps: bool = Field(
        default=False,
        description="also train each financial task alone for as many optimizer steps as the largest cocktail "
        "containing it (repeating its own examples: more epochs, the same draw each epoch), so a cocktail's gain "
        "can be told apart from a steps effect; kind `matched`, label '<task> (matched steps)'",
    )
    matched_seeds: list[int] | None = Field(
        default=None,
        description="seeds of the matched-steps runs (default: every seed of the cocktail they match); fewer seeds "
        "cost less, and their seed noise is then the task's pooled between-seed variance (unpaired)",
    )


class SweepEvalFields(EvalFields):
    """What a sweep's evaluation adds to `EvalFields` (a model-selection split, per-task sample
    sizes) and narrows (its dtypes), shared by the sweep file (`EvalSpec`) and a planned run
    (`EvalSettings`). Defaults are the sweep file's: each financial task, the test split and a
    validation split for model selection."""

    dtype: SweepPrecision = inherited(EvalFields, "dtype")  # float16: no use on CPU and no sweep preset
    selection_split: str | None = Field(default="validation", description="model-selection split (null: skip)")
    selection_tasks: list[str] | None = Field(default=None, description="default: the financial tasks")
    max_examples: int | None = Field(default=None, ge=1, description="a sample of N examples of each task (null: all)")
    selection_max_examples: int | None = Field(default=None, ge=1, description="default: max_examples")
    max_examples_per_task: dict[str, int] = Field(default_factory=dict)
    selection_max_examples_per_task: dict[str, int] = Field(default_factory=dict, description="default: max_examples_per_task")


class EvalSpec(_Strict, SweepEvalFields):
    """What every run is evaluated on. Defaults: each financial task + cfa + financebench, test split."""

    tasks: list[str] | None = inherited(EvalFields, "tasks", default=None)  # null: the financial tasks + knowledge tasks
    selection_metric: Literal["primary", "likelihood"] = Field(
        default="primary",
        description="what the report ranks recipes by on validation: the task's primary metric, or the gold answer's "
        "likelihood (less noisy on small selection samples; falls back to primary where a run lacks it). Not part of "
        "run ids: it changes which recipe a report picks, not what a run computes",
    )
    scope: Literal["all", "needed"] = Field(
        default="all",
        description="needed: each run is evaluated on the tasks it trained on plus `always`; zero-shot rows and the "
        "cocktail of every task (with any boosters) on every task",
    )
    always: list[str] | None = Field(
        default=None, description="scope needed: tasks every run is evaluated on (default: the classification tasks)"
    )
    always_seeds: list[int] | None = Field(
        default=None,
        description="scope needed: the seeds whose runs are scored on `always` beyond their own tasks (default: every "
        "seed); the transfer heatmap reads one seed, the verdicts only a run's own tasks",
    )


class Resources(_Strict):
    """What one run asks an executor for (Ray: num_cpus / num_gpus of its task), and the device
    its runs train and evaluate on. None of it is part of run ids: the same run on any machine."""

    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    device: str = Field(
        default="auto",
        description="auto | cpu | cuda | cuda:N | mps (`sweep run --device` overrides); auto: the GPUs when torch sees "
        "any (the local executor then runs one worker per GPU)",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        from fincocktail.models.device import device_field

        return device_field(value)

    def asks_for_gpus(self) -> bool:
        """Whether runs are planned for GPUs: GPUs requested, or a `cuda` device named."""
        return self.num_gpus > 0 or self.device.startswith("cuda")


class TaskEstimate(_Strict):
    train_examples: int | None = Field(default=None, ge=0)
    validation_examples: int | None = Field(default=None, ge=0)
    eval_examples: int | None = Field(default=None, ge=0)
    mean_tokens: float | None = Field(default=None, gt=0)
    eval_cost: float | None = Field(default=None, gt=0, description="seconds of one eval example relative to an FPB one")


class EstimateSpec(_Strict):
    """Throughput figures and per-task sizes used only for the plan's token and time estimates."""

    tokens_per_s: float = Field(default=200.0, gt=0, description="training tokens/s when a model gives none")
    eval_examples_per_s: float = Field(default=10.0, gt=0, description="FPB-like eval examples/s when a model gives none")
    gpu_tokens_per_s: float | None = Field(
        default=None, gt=0, description="on GPUs: training tokens/s when a model gives no gpu_tokens_per_s (default: tokens_per_s)"
    )
    gpu_eval_examples_per_s: float | None = Field(
        default=None, gt=0, description="on GPUs: eval examples/s when a model gives no gpu_eval_examples_per_s (default: eval_examples_per_s)"
    )
    overhead_s: float = Field(default=10.0, ge=0, description="per run: loading, saving, bookkeeping")
    tasks: dict[str, TaskEstimate] = Field(default_factory=dict)


class SweepSpec(_Strict):
    """A sweep file. See configs/sweeps/*.yaml and docs/sweeps.md."""

    name: str = Field(min_length=1)
    description: str = ""
    tasks: list[str] = Field(description="the financial tasks, in the order incremental cocktails add them")
    models: list[ModelEntry] = Field(default_factory=list)
    api_models: list[ApiModelEntry] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])
    train_caps: dict[str, int] = Field(default_factory=dict, description="at most N train examples per epoch, per task")
    general: BoosterGrid | None = None
    math: BoosterGrid | None = None
    design: DesignSpec = DesignSpec()
    training: dict[str, Any] = Field(default_factory=dict, description="training config fields shared by every run")
    eval: EvalSpec = EvalSpec()
    resources: Resources = Resources()
    estimates: EstimateSpec = EstimateSpec()
    data_dir: str | None = Field(default=None, description="not part of run ids: the same runs on any machine")
    out: str | None = Field(default=None, description="output folder (default: sweeps/<name>)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)  # it becomes sweeps/<name>: '..' would write into the working folder

    @field_validator("train_caps")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        for task, cap in value.items():
            if cap < 1:  # 0 would pass the plan and fail every run with an empty cocktail
                raise ValueError(f"{task}: must be >= 1, got {cap}; to train without {task}, drop it from tasks")
        return value


# --------------------------------------------------------------------------------------------
# Runs


class EvalSettings(SweepEvalFields):
    """One run's resolved evaluation settings, typed, as executors read them.

    The run's spec keeps them as the plain dict `run_id_eval_dict` makes of them, because that
    dict is part of the run id's hash and must stay byte for byte what earlier sweeps hashed;
    this model is how code reads it. Defaults are what a key's absence meant when the run spec
    was written: specs from before samples existed took the first N rows, from before `dtype`
    were float32. Where that differs from the sweep file's default, the field is redeclared below.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Always written, so a spec without it is damaged rather than old: required (no constraint to inherit).
    split: str = Field(description=EvalFields.model_fields["split"].description)
    selection_split: str | None = inherited(SweepEvalFields, "selection_split", default=None)  # resolved: None = none
    selection_tasks: list[str] = inherited(SweepEvalFields, "selection_tasks", default=[])  # resolved: a list
    sample: SampleMethod = inherited(EvalFields, "sample", default="head")  # before samples existed: the first N rows

    def limit(self, task: str, test: bool) -> int | None:
        """How many examples of `task` the run evaluates, on the test split or the selection split."""
        default = self.max_examples if test else self.selection_max_examples
        if not test and task in self.selection_max_examples_per_task:
            return self.selection_max_examples_per_task[task]
        return self.max_examples_per_task.get(task, default)

    def splits(self) -> list[tuple[str, list[str]]]:
        """(split, tasks) pairs: the test split, then the selection split if there is one."""
        out = [(self.split, list(self.tasks))]
        if self.selection_split:
            out.append((self.selection_split, list(self.selection_tasks)))
        return out

    def eval_config(self, split: str, task: str, **context: Any) -> EvalConfig:
        """What evaluating `task` on `split` (one of `splits()`) runs with: every `EvalFields`
        setting copied by name, the task's limit on that split, and `context`, what the run
        spec does not hold (model, adapter, device, folders; an API run's batch size), which
        may override a setting."""
        from fincocktail.evaluation.runner import EvalConfig

        shared = {name: getattr(self, name) for name in EvalFields.model_fields}
        limit = self.limit(task, test=split == self.split)
        return EvalConfig(**{**shared, "tasks": [task], "split": split, "limit": limit, **context})


# Keys added to a run's eval dict after sweeps had run without them. Each is left out of the dict
# a run id hashes while it holds EvalSettings' default (what its absence means), so the runs of
# those sweeps keep their ids, and a spec read back means what was planned.
_LATE_EVAL_KEYS = ("selection_max_examples_per_task", "dtype", "max_prompt_tokens")


def run_id_eval_dict(settings: EvalSettings) -> dict[str, Any]:
    """A run's evaluation settings as the plain dict its spec stores and its id hashes.

    The one place that decides which keys are written: every field, except a `_LATE_EVAL_KEYS`
    key at its default. Its output must stay byte for byte what earlier sweeps hashed, so a
    new field joins `_LATE_EVAL_KEYS` with the default that reproduces the behaviour from
    before it existed.
    """
    out = settings.model_dump(mode="json")
    for key in _LATE_EVAL_KEYS:
        if out[key] == EvalSettings.model_fields[key].get_default(call_default_factory=True):
            del out[key]
    return out


class RunSpec(BaseModel):
    """One run of a sweep: everything an executor needs, as plain data (it crosses to workers)."""

    run_id: str
    sweep: str
    kind: RunKind
    label: str
    model: str
    train_tasks: list[str] = Field(default_factory=list)
    general: float = 0.0
    math: float = 0.0
    seed: int = 0
    train: dict[str, Any] | None = None  # a TrainConfig as JSON (with its inline cocktail), None for base/api
    eval: dict[str, Any]  # resolved evaluation settings (concrete task lists)
    api: dict[str, Any] | None = None
    config_sha256: str
    resources: Resources = Resources()
    est_tokens: int = 0
    est_eval_examples: int = 0
    est_seconds: float = 0.0
    origin: str = ""  # the sweep-file field this run came from
    matched_to: str | None = None  # kind matched: the label of the cocktail whose optimizer steps it matches
    stop_at: float | None = None  # racing: train to this share of the steps and pause (not part of the run id)

    @property
    def trains(self) -> bool:
        return self.train is not None

    @property
    def eval_settings(self) -> EvalSettings:
        return EvalSettings.model_validate(self.eval)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


# Sizes of the built-in tasks' splits (offline data) and mean prompt+target tokens, measured with
# the SmolLM2 tokenizer in the instruction style; `eval_cost` is the time of one evaluation
# example relative to one FPB example in choice mode (generation and long prompts cost more).
# Only estimates read them; a sweep can override any entry under `estimates.tasks`.
def _est(train: int, validation: int, test: int, tokens: float, cost: float) -> TaskEstimate:
    return TaskEstimate(train_examples=train, validation_examples=validation, eval_examples=test, mean_tokens=tokens, eval_cost=cost)


DEFAULT_TASK_ESTIMATES: dict[str, TaskEstimate] = {
    "fpb": _est(3268, 361, 1212, 70, 1),
    "fiqa_sa": _est(826, 89, 235, 46, 1),
    "tfns": _est(8644, 898, 2388, 51, 1),
    "headline": _est(45738, 4830, 12852, 47, 1),
    "finner": _est(464, 47, 98, 98, 8),
    "ner_cls": _est(715, 87, 3502, 90, 2),
    "finqa": _est(506, 100, 277, 1071, 30),
    "convfinqa": _est(863, 191, 436, 1121, 30),
    "general": _est(1926, 102, 0, 535, 20),
    "gsm8k": _est(7052, 421, 1319, 189, 20),
    "cfa": _est(0, 0, 1032, 104, 2),
    "financebench": _est(0, 0, 150, 718, 40),
}
_FALLBACK_ESTIMATE = _est(1000, 100, 200, 150, 2)


@dataclass(frozen=True)
class Plan:
    """A validated sweep and its runs."""

    spec: SweepSpec
    source: str
    runs: list[RunSpec]

    @property
    def training_runs(self) -> list[RunSpec]:
        return [r for r in self.runs if r.trains]

    @property
    def out_dir(self) -> Path:
        return default_out_dir(self.spec, self.source)

    def totals(self) -> dict[str, float]:
        return {
            "runs": len(self.runs),
            "training_runs": len(self.training_runs),
            "est_tokens": sum(r.est_tokens for r in self.runs),
            "est_seconds": sum(r.est_seconds for r in self.runs),
            **({"est_gpu_hours": self.gpu_hours()} if any(r.resources.asks_for_gpus() for r in self.runs) else {}),
        }

    def gpu_hours(self) -> float:
        """GPU-hours of the whole plan: each run's estimated time (at the GPU rates) times the GPUs
        it holds (its `num_gpus`, one where a `cuda` device asks for none); API runs hold none."""
        total = 0.0
        for r in self.runs:
            if r.kind != "api" and r.resources.asks_for_gpus():
                total += r.est_seconds * (r.resources.num_gpus or 1.0)
        return round(total / 3600, 2)


def default_out_dir(spec: SweepSpec, source: str = "") -> Path:
    """`out` from the sweep file, else `sweeps/<name>`; relative to the working directory."""
    return Path(spec.out).expanduser() if spec.out else Path("sweeps") / spec.name


# --------------------------------------------------------------------------------------------
# Loading and validation


def parse_sweep(data: Any, source: str = "sweep") -> SweepSpec:
    return validate_mapping(SweepSpec, data, source, "name, tasks, models, ...")


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    path = Path(path)
    return parse_sweep(load_yaml(path), source=str(path))


def load_plan(path: str | os.PathLike, check_tasks: bool = True) -> Plan:
    """Read, validate and expand a sweep file."""
    spec = load_sweep(path)
    return expand(spec, source=str(path), check_tasks=check_tasks)


# --------------------------------------------------------------------------------------------
# Expansion


class _Checker:
    """Task and model checks with the field path in every message."""

    def __init__(self, source: str, check_tasks: bool):
        self.source = source
        self.check_tasks = check_tasks
        self._known: list[str] | None = None
        self._tasks: dict[str, Any] = {}

    def fail(self, where: str, msg: str) -> None:
        raise ConfigError(f"{self.source}: {where}: {msg}")

    def known(self) -> list[str]:
        if self._known is None:
            from fincocktail.tasks.registry import task_ids

            self._known = task_ids()
        return self._known

    def task(self, task_id: str, where: str) -> Any | None:
        """The Task object when it can be loaded (None when checks are off or the module is missing)."""
        if not self.check_tasks:
            return None
        if task_id not in self.known():
            import difflib

            close = difflib.get_close_matches(task_id, self.known(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f"; known tasks: {', '.join(self.known())}"
            self.fail(where, f"unknown task {task_id!r}{hint}")
        if task_id not in self._tasks:
            from fincocktail.tasks.registry import get_task

            try:
                self._tasks[task_id] = get_task(task_id)
            except (ImportError, AttributeError):
                self._tasks[task_id] = None  # registered but its loader is not importable: checked at run time
        return self._tasks[task_id]

    def trainable(self, task_id: str, where: str) -> None:
        task = self.task(task_id, where)
        if task is not None and not task.trainable:
            self.fail(where, f"task {task_id!r} is evaluation-only (it has no train split)")

    def evaluable(self, task_id: str, split: str, where: str, explicit: bool) -> bool:
        task = self.task(task_id, where)
        if task is None:
            return True
        problem = task.why_not_evaluable(split)
        if problem is not None and explicit:
            self.fail(where, problem)
        return problem is None

    def model(self, name: str, where: str) -> None:
        if not self.check_tasks:
            return
        if Path(name).expanduser().is_dir():
            return
        from fincocktail.models.registry import close_names, get_model_spec

        if get_model_spec(name) is None:
            close = close_names(name)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            self.fail(where, f"unknown model {name!r}: not a registry name nor a local folder{hint}; see `fincocktail models list`")


def _unique(items: list[Any], where: str, checker: _Checker) -> None:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        key = canonical_json(item) if not isinstance(item, (str, int, float)) else item
        if key in seen:
            checker.fail(f"{where}.{i}", f"{item!r} is already listed at {where}.{seen[key]}")
        seen[key] = i


def _estimate(spec: SweepSpec, task_id: str) -> TaskEstimate:
    base = DEFAULT_TASK_ESTIMATES.get(task_id, _FALLBACK_ESTIMATE)
    over = spec.estimates.tasks.get(task_id)
    if over is None:
        return base
    return base.model_copy(update={k: v for k, v in over.model_dump().items() if v is not None})


def _eval_plan(spec: SweepSpec, checker: _Checker) -> dict[str, Any]:
    ev = spec.eval
    explicit = ev.tasks is not None
    tasks = ev.tasks if explicit else list(spec.tasks) + [t for t in KNOWLEDGE_TASKS if t not in spec.tasks]
    if explicit and not tasks:
        checker.fail("eval.tasks", "empty: list at least one task to evaluate on")
    _unique(list(tasks), "eval.tasks", checker)
    where = "eval.tasks" if explicit else "tasks"
    test_tasks = []
    for i, t in enumerate(tasks):
        field_path = f"{where}.{i}" if explicit else (f"tasks.{spec.tasks.index(t)}" if t in spec.tasks else "eval.tasks")
        if checker.evaluable(t, ev.split, field_path, explicit):
            test_tasks.append(t)
    if not test_tasks:
        checker.fail("eval.tasks", f"no task can be evaluated on split {ev.split!r}")
    selection: list[str] = []
    if ev.selection_split:
        explicit_sel = ev.selection_tasks is not None
        candidates = ev.selection_tasks if explicit_sel else list(spec.tasks)
        for i, t in enumerate(candidates):
            field_path = f"eval.selection_tasks.{i}" if explicit_sel else f"tasks.{i}"
            if checker.evaluable(t, ev.selection_split, field_path, explicit_sel):
                selection.append(t)
    for t in ev.max_examples_per_task:
        if t not in test_tasks and t not in selection:
            checker.fail(f"eval.max_examples_per_task.{t}", f"task {t!r} is not evaluated by this sweep")
    for t in ev.selection_max_examples_per_task:
        if t not in selection:
            checker.fail(f"eval.selection_max_examples_per_task.{t}", f"task {t!r} is not a selection task of this sweep")
    shared = {name: getattr(ev, name) for name in EvalSettings.model_fields}  # the sweep file's values, then resolved:
    return run_id_eval_dict(EvalSettings(**{
        **shared,
        "tasks": test_tasks,
        "selection_split": ev.selection_split if selection else None,
        "selection_tasks": selection,
        "selection_max_examples": ev.selection_max_examples or ev.max_examples,
        "max_examples_per_task": dict(sorted(ev.max_examples_per_task.items())),
        "selection_max_examples_per_task": dict(sorted(ev.selection_max_examples_per_task.items())),
    }))


def _always_tasks(spec: SweepSpec, ev: dict[str, Any], checker: _Checker) -> list[str]:
    """Scope `needed`: the tasks every run is evaluated on (by default the cheap classification ones)."""
    if spec.eval.always is not None:
        for i, t in enumerate(spec.eval.always):
            if t not in ev["tasks"]:
                checker.fail(f"eval.always.{i}", f"task {t!r} is not in the evaluated tasks ({', '.join(ev['tasks'])})")
        return list(spec.eval.always)
    out = []
    for t in ev["tasks"]:
        task = checker.task(t, "eval.tasks")
        if task is not None and task.kind == "classification" and t not in KNOWLEDGE_TASKS:
            out.append(t)
    return out


def _scoped_eval(ev: dict[str, Any], always: list[str] | None, trained: list[str], everything: bool,
                 boosted: bool = False, math_only: bool = False) -> dict[str, Any]:
    """One run's evaluation settings: all tasks, or (scope needed) only those its comparisons use.

    The knowledge tasks serve only claim (d), the plain cocktail against the zero-shot model, so a
    cocktail with general or math data is not scored on them (they are the slowest to generate).
    A cocktail with math data alone serves claim (c), so beyond `always` it is scored on the
    numerical-reasoning tasks only (when the sweep evaluates any)."""
    if always is None:
        return ev
    if everything:
        if not boosted:
            return ev
        tasks = [t for t in ev["tasks"] if t not in KNOWLEDGE_TASKS]
        numerical = [t for t in tasks if t in NUMERICAL_TASKS]
        if math_only and numerical:
            tasks = [t for t in tasks if t in numerical or t in always]
            selection = [t for t in ev["selection_tasks"] if t in tasks]
            return {**ev, "tasks": tasks, "selection_tasks": selection, "selection_split": ev["selection_split"] if selection else None}
        return {**ev, "tasks": tasks}
    keep = set(trained) | set(always)
    tasks = [t for t in ev["tasks"] if t in keep]
    selection = [t for t in ev["selection_tasks"] if t in trained]  # selection picks among runs trained on the task
    return {**ev, "tasks": tasks, "selection_tasks": selection, "selection_split": ev["selection_split"] if selection else None}


def _eval_count(spec: SweepSpec, ev: dict[str, Any]) -> tuple[int, float]:
    """(examples, FPB-equivalent cost) of one run's evaluation."""
    n_total = 0
    cost = 0.0
    settings = EvalSettings.model_validate(ev)
    for test, tasks in ((True, settings.tasks), (False, settings.selection_tasks)):
        for t in tasks:
            est = _estimate(spec, t)
            n = (est.eval_examples if test else est.validation_examples) or 0
            lim = settings.limit(t, test)
            if lim is not None:
                n = min(n, lim)
            n_total += n
            cost += n * (est.eval_cost or 1.0)
    return n_total, cost


def _train_tokens(spec: SweepSpec, train: dict[str, Any]) -> int:
    """Training tokens of a run, from the cocktail's own arithmetic (counts, weights, caps, boosters) on the
    estimated split sizes."""
    from fincocktail.cocktail import parse_cocktail, planned_counts

    config = parse_cocktail(train["cocktail"], "training.cocktail")
    counts = planned_counts(config, {t: _estimate(spec, t).train_examples or 0 for t in config.task_ids()}, strict=False)
    per_epoch_examples = sum(counts.values())
    per_epoch_tokens = sum(n * (_estimate(spec, t).mean_tokens or 0) for t, n in counts.items())
    epochs = train.get("epochs", 1)
    tokens = per_epoch_tokens * epochs
    max_steps = train.get("max_steps")
    if max_steps and per_epoch_examples:
        per_step = train.get("batch_size", 8) * train.get("grad_accum", 1)
        tokens = min(tokens, max_steps * per_step * per_epoch_tokens / per_epoch_examples)
    return int(tokens)


def planned_steps(spec: SweepSpec, train: dict[str, Any]) -> int:
    """Optimizer steps of a run as `training.data.Schedule` will count them, from the cocktail's
    arithmetic on the estimated split sizes (the built-in tasks' real sizes; `estimates.tasks`
    for others), capped by max_steps.

    Mixed-task batches: ceil(ceil(examples / batch) / grad_accum) per epoch. With
    `prefix_sharing` batches are cut within each task inside every mega-batch; how many there
    are depends on the seeded shuffle and each item's task, not on lengths, so the trainer's own
    `plan_batches` is run on the planned tasks with dummy lengths: exact as well.
    """
    from fincocktail.cocktail import parse_cocktail, planned_counts
    from fincocktail.training.data import plan_batches

    config = parse_cocktail(train["cocktail"], "training.cocktail")
    counts = planned_counts(config, {t: _estimate(spec, t).train_examples or 0 for t in config.task_ids()}, strict=False)
    n, batch, accum = sum(counts.values()), train.get("batch_size", 8), train.get("grad_accum", 1)
    epochs = train.get("epochs", 1)
    if train.get("prefix_sharing", "off") != "off" and train.get("batching", "length_grouped") == "length_grouped":
        groups = [task for task, k in counts.items() for _ in range(k)]  # the draw's order: ingredients, then boosters
        steps = sum(
            ceil(len(plan_batches([1] * n, batch, train.get("seed", 0), epoch, "length_grouped", groups)) / accum)
            for epoch in range(epochs)
        )
    else:
        steps = ceil(ceil(n / batch) / accum) * epochs
    return min(steps, train["max_steps"]) if train.get("max_steps") else steps


def _cocktail_label(tasks: list[str], general: float, math: float) -> str:
    label = "+".join(tasks)
    if general:
        label += f" +general{general:g}"
    if math:
        label += f" +math{math:g}"
    return label


def _eval_seconds(spec: SweepSpec, rate: float | None, cost: float) -> float:
    return cost / (rate or spec.estimates.eval_examples_per_s)


def rates(spec: SweepSpec, m: ModelEntry) -> tuple[float | None, float | None]:
    """(training tokens/s, eval examples/s) of model `m` where the sweep runs: its GPU rates when
    its runs ask for GPUs (`num_gpus`, the sweep's or its own, or a `cuda` device; falling back to the sweep's GPU defaults, then to the CPU figures)."""
    if not _resources(spec, m).asks_for_gpus():
        return m.tokens_per_s, m.eval_examples_per_s
    est = spec.estimates
    return (m.gpu_tokens_per_s or est.gpu_tokens_per_s or m.tokens_per_s,
            m.gpu_eval_examples_per_s or est.gpu_eval_examples_per_s or m.eval_examples_per_s)


def _resources(spec: SweepSpec, m: ModelEntry) -> Resources:
    return Resources(
        num_cpus=m.num_cpus if m.num_cpus is not None else spec.resources.num_cpus,
        num_gpus=m.num_gpus if m.num_gpus is not None else spec.resources.num_gpus,
        device=spec.resources.device,
    )


def trained_run(
    spec: SweepSpec,
    mi: int,
    kind: RunKind,
    cocktail: dict[str, Any],
    label: str,
    train_tasks: list[str],
    general: float,
    math: float,
    run_ev: dict[str, Any],
    source: str,
    origin: str,
    eval_cost: tuple[int, float] | None = None,
    train_overrides: dict[str, Any] | None = None,
    matched_to: str | None = None,
) -> RunSpec:
    """One training run of model `models[mi]` on the inline `cocktail`, evaluated with `run_ev`.

    The one place a trained run's config, id and estimates are made: the sweep's own designs
    (`expand`) and the mixtures `mix search` proposes are built alike, so a proposal trains with
    exactly the sweep's training config and is evaluated on the same samples. `train_overrides`
    (a matched-steps run's epochs and max_steps) apply over the sweep's training settings.
    """
    from fincocktail.training.config import parse_train_config
    from fincocktail.training.prefix import ESTIMATED_SPEEDUP

    m = spec.models[mi]
    seed = int(cocktail.get("seed", 0))
    data = {**spec.training, **m.training, **(train_overrides or {}), "model": m.name, "cocktail": cocktail, "seed": seed}
    tc = parse_train_config(data, source=f"{source}: training (models.{mi})")
    train = tc.model_dump(mode="json", exclude={"output_dir", "data_dir"})
    config = {"schema": RUN_SCHEMA, "kind": kind, "model": m.name, "train": train, "eval": run_ev}
    h = config_hash(config)
    tokens = _train_tokens(spec, train)
    train_rate, eval_rate = rates(spec, m)
    rate = (train_rate or spec.estimates.tokens_per_s) * (ESTIMATED_SPEEDUP if tc.prefix_sharing != "off" else 1.0)
    n_eval, cost = eval_cost if eval_cost is not None else _eval_count(spec, run_ev)
    return RunSpec(
        run_id=f"{kind}-{h[:12]}", sweep=spec.name, kind=kind, label=label, model=m.name, train_tasks=list(train_tasks),
        general=general, math=math, seed=seed, train=train, eval=run_ev, config_sha256=h,
        resources=_resources(spec, m), est_tokens=tokens, est_eval_examples=n_eval,
        est_seconds=round(spec.estimates.overhead_s + tokens / rate + _eval_seconds(spec, eval_rate, cost), 1),
        origin=origin, matched_to=matched_to,
    )


def _run_eval(spec: SweepSpec, ev: dict[str, Any], always: list[str] | None, mix: list[str], gf: float, mf: float,
              seed: int) -> dict[str, Any]:
    """One trained run's evaluation settings under the sweep's scope and `eval.always_seeds`."""
    run_always = always
    if always is not None and spec.eval.always_seeds is not None and seed not in spec.eval.always_seeds:
        run_always = []
    return _scoped_eval(ev, run_always, mix, everything=set(mix) == set(spec.tasks), boosted=bool(gf or mf),
                        math_only=bool(mf and not gf))


def _sweep_cocktail(spec: SweepSpec, mix: list[str], gf: float, mf: float, seed: int) -> dict[str, Any]:
    """The inline cocktail of a sweep run: the tasks (with their `train_caps`) and the boosters at these fractions."""
    cocktail: dict[str, Any] = {
        "name": _cocktail_label(mix, gf, mf).replace(" ", ""),
        "seed": seed,
        "ingredients": [{"task": t, **({"cap": spec.train_caps[t]} if t in spec.train_caps else {})} for t in mix],
    }
    for key, frac in (("general", gf), ("math", mf)):
        booster = getattr(spec, key)
        if booster is not None and frac > 0:
            cap = booster.cap if booster.cap is not None else spec.train_caps.get(booster.task)
            cocktail[key] = {"task": booster.task, "fraction": frac, **({"cap": cap} if cap is not None else {})}
    return cocktail


def matched_runs(
    spec: SweepSpec, mi: int, model_runs: list[RunSpec], ev: dict[str, Any], always: list[str] | None, source: str
) -> list[RunSpec]:
    """`design.matched_steps`: for each financial task, and each run of the largest cocktail that
    contains it (the cocktail of every task when there is one), the task alone trained for that
    run's optimizer steps, with the same boosters and seed (for the booster fractions the
    one-epoch single runs have: those are what the matched runs are compared with).

    Why: a 7-task cocktail takes 7x the steps of a single task, so "the cocktail beats the single
    task" may be a steps effect, not a data effect. The matched run repeats its own draw (more
    epochs, `resample_each_epoch: false`, `max_steps` = the cocktail's), so its only difference
    from the one-epoch single is the number of steps. Its steps equal the cocktail's as
    `planned_steps` counts them (exactly, for mixed-task batches).
    """
    seeds = spec.design.matched_seeds
    cocktails = [r for r in model_runs if r.kind == "cocktail" and r.train and (seeds is None or r.seed in seeds)]
    singles = {(r.train_tasks[0], r.general, r.math) for r in model_runs if r.kind == "single"}
    out: list[RunSpec] = []
    for t in spec.tasks:
        holding = [r for r in cocktails if t in r.train_tasks]
        if not holding:
            continue
        widest = max(len(r.train_tasks) for r in holding)
        target = next(r.train_tasks for r in holding if len(r.train_tasks) == widest)
        for c_run in (r for r in holding if r.train_tasks == target):
            if (t, c_run.general, c_run.math) in singles:  # only where a one-epoch single is compared with it
                out.append(_matched_run(spec, mi, t, c_run, ev, always, source))
    return out


def _matched_run(spec: SweepSpec, mi: int, task: str, c_run: RunSpec, ev: dict[str, Any], always: list[str] | None,
                 source: str) -> RunSpec:
    """One task trained for `c_run`'s planned steps (see `matched_runs`)."""
    assert c_run.train is not None
    steps = planned_steps(spec, c_run.train)
    cocktail = {**_sweep_cocktail(spec, [task], c_run.general, c_run.math, c_run.seed), "resample_each_epoch": False}
    one_epoch = max(planned_steps(spec, {**c_run.train, "cocktail": cocktail, "epochs": 1, "max_steps": None}), 1)
    epochs = ceil(steps / one_epoch)
    while planned_steps(spec, {**c_run.train, "cocktail": cocktail, "epochs": epochs, "max_steps": None}) < steps:
        epochs += 1  # task-grouped batches (prefix_sharing) vary a little from epoch to epoch
    overrides = {"epochs": epochs, "max_steps": steps}
    run_ev = _run_eval(spec, ev, always, [task], c_run.general, c_run.math, c_run.seed)
    return trained_run(
        spec, mi, "matched", cocktail, label=_cocktail_label([task], c_run.general, c_run.math) + MATCHED_SUFFIX,
        train_tasks=[task], general=c_run.general, math=c_run.math, run_ev=run_ev, source=source,
        origin=f"design.matched_steps ({task} to {c_run.label}), models.{mi}, seeds={c_run.seed}",
        eval_cost=_eval_count(spec, run_ev), train_overrides=overrides, matched_to=c_run.label,
    )


def eval_settings(spec: SweepSpec, source: str = "sweep", check_tasks: bool = True) -> tuple[dict[str, Any], list[str] | None]:
    """The sweep's resolved evaluation settings and (scope `needed`) the tasks every run is scored on."""
    c = _Checker(source, check_tasks)
    ev = _eval_plan(spec, c)
    return ev, (_always_tasks(spec, ev, c) if spec.eval.scope == "needed" else None)


def scoped_eval(ev: dict[str, Any], always: list[str] | None, trained: list[str], everything: bool,
                boosted: bool = False) -> dict[str, Any]:
    """Public name of one run's evaluation settings under the sweep's scope (see `_scoped_eval`)."""
    return _scoped_eval(ev, always, trained, everything, boosted)


def task_estimate(spec: SweepSpec, task_id: str) -> TaskEstimate:
    """A task's sizes as the sweep's estimates see them (built-in figures, overridden by `estimates.tasks`)."""
    return _estimate(spec, task_id)


def _check_grid_lists(spec: SweepSpec, c: _Checker) -> None:
    """The grid's lists: non-empty, no duplicates, known tasks and models, no sweep-owned training keys."""
    if not spec.tasks:
        c.fail("tasks", "empty grid: list at least one financial task")
    _unique(spec.tasks, "tasks", c)
    for i, t in enumerate(spec.tasks):
        c.task(t, f"tasks.{i}")
    if not spec.seeds:
        c.fail("seeds", "empty grid: list at least one seed")
    _unique(spec.seeds, "seeds", c)
    for i, seed in enumerate(spec.eval.always_seeds or []):
        if seed not in spec.seeds:
            c.fail(f"eval.always_seeds.{i}", f"seed {seed} is not one of the sweep's seeds ({', '.join(map(str, spec.seeds))})")
    _unique([m.name for m in spec.models], "models", c)
    _unique([m.name for m in spec.api_models], "api_models", c)
    for i, m in enumerate(spec.models):
        c.model(m.name, f"models.{i}.name")
        for key in m.training:
            if key in _SWEEP_OWNED_TRAIN_FIELDS:
                c.fail(f"models.{i}.training.{key}", "set by the sweep for each run; remove it here")
    _check_training_keys(spec, c)


def _check_training_keys(spec: SweepSpec, c: _Checker) -> None:
    """Training settings the sweep owns (device, per-run fields), train caps and boosters."""
    for where, training in [("training", spec.training)] + [(f"models.{i}.training", m.training) for i, m in enumerate(spec.models)]:
        if training.get("device", "auto") != "auto":
            c.fail(f"{where}.device", "the device is not part of a run (the same run id on any machine): set resources.device "
                   "or pass `sweep run --device`")
    for key in spec.training:
        if key in _SWEEP_OWNED_TRAIN_FIELDS:
            c.fail(f"training.{key}", "set by the sweep for each run (model, cocktail, seed, folders); remove it here")
    for t, _ in spec.train_caps.items():
        if t not in spec.tasks and t not in [b.task for b in (spec.general, spec.math) if b]:
            c.fail(f"train_caps.{t}", f"task {t!r} is not trained on by this sweep")
    for key in ("general", "math"):
        booster = getattr(spec, key)
        if booster is not None:
            c.trainable(booster.task, f"{key}.task")
            if booster.task in spec.tasks:
                c.fail(f"{key}.task", f"task {booster.task!r} is already a financial task of this sweep (tasks)")


def _incremental_mixes(spec: SweepSpec, c: _Checker) -> tuple[list[str], list[tuple[list[str], str]]]:
    """The order `design.incremental` adds tasks in, and its cocktails (the first k tasks, k >= 2)."""
    d = spec.design
    order: list[str] = []
    mixes: list[tuple[list[str], str]] = []
    if d.incremental:
        order = list(spec.tasks) if d.incremental is True else list(d.incremental)  # type: ignore[arg-type]
        if isinstance(d.incremental, list):
            if not order:
                c.fail("design.incremental", "empty grid: list tasks in the order to add them, or use true")
            _unique(order, "design.incremental", c)
            for i, t in enumerate(order):
                c.task(t, f"design.incremental.{i}")
        for k in range(2, len(order) + 1):
            mixes.append((order[:k], f"design.incremental (first {k})"))
    return order, mixes


def _design_mixes(spec: SweepSpec, c: _Checker) -> list[tuple[list[str], str]]:
    """The cocktails (lists of financial tasks) the design trains, each with the field it came from,
    in plan order: single, incremental, all_tasks, then the listed cocktails."""
    d = spec.design
    mixes: list[tuple[list[str], str]] = []
    if d.single:
        for i, t in enumerate(spec.tasks):
            c.trainable(t, f"tasks.{i}")
            mixes.append(([t], f"design.single (tasks.{i})"))
    order, incremental = _incremental_mixes(spec, c)
    mixes += incremental
    if d.all_tasks and not (d.incremental and set(order) == set(spec.tasks)):
        if len(spec.tasks) >= 2 or not d.single:
            mixes.append((list(spec.tasks), "design.all_tasks"))
    for i, mix in enumerate(d.cocktails):
        if not mix:
            c.fail(f"design.cocktails.{i}", "empty cocktail: list at least one task")
        _unique(mix, f"design.cocktails.{i}", c)
        for j, t in enumerate(mix):
            c.task(t, f"design.cocktails.{i}.{j}")
        mixes.append((list(mix), f"design.cocktails.{i}"))
    for mix, where in mixes:
        for t in mix:
            c.trainable(t, where)
    _check_matched_steps(spec, mixes, c)
    return mixes


def _check_matched_steps(spec: SweepSpec, mixes: list[tuple[list[str], str]], c: _Checker) -> None:
    """`design.matched_steps` / `matched_seeds` need single-task runs, a cocktail to match and known seeds."""
    d = spec.design
    if d.matched_seeds is not None and not d.matched_steps:
        c.fail("design.matched_seeds", "needs design.matched_steps: true")
    if d.matched_seeds is not None and not set(d.matched_seeds) <= set(spec.seeds):
        c.fail("design.matched_seeds", f"{sorted(set(d.matched_seeds) - set(spec.seeds))} not in seeds {spec.seeds}")
    if d.matched_steps and not d.single:
        c.fail("design.matched_steps", "needs design.single: matched-steps runs are compared with the one-epoch single-task runs")
    if d.matched_steps and not any(len(mix) > 1 for mix, _ in mixes):
        c.fail("design.matched_steps", "no cocktail to match: it adds single-task runs trained for a cocktail's steps; "
               "switch on incremental, all_tasks or cocktails")


@dataclass
class _PlanRuns:
    """The runs planned so far, refusing a second run with the same config (the same run id)."""

    c: _Checker
    runs: list[RunSpec] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)

    def add(self, run: RunSpec) -> None:
        if run.config_sha256 in self.seen:
            self.c.fail(run.origin, f"duplicate run {run.label!r} ({run.model}): the same run as {self.seen[run.config_sha256]}")
        self.seen[run.config_sha256] = run.origin
        self.runs.append(run)


def _base_run(spec: SweepSpec, mi: int, ev: dict[str, Any], n_eval: int, eval_cost: float) -> RunSpec:
    """The zero-shot run of `spec.models[mi]` (design.base)."""
    m = spec.models[mi]
    config = {"schema": RUN_SCHEMA, "kind": "base", "model": m.name, "train": None, "eval": ev}
    h = config_hash(config)
    return RunSpec(
        run_id=f"base-{h[:12]}", sweep=spec.name, kind="base", label="zero-shot", model=m.name,
        eval=ev, config_sha256=h, resources=_resources(spec, m), est_eval_examples=n_eval,
        est_seconds=round(spec.estimates.overhead_s + _eval_seconds(spec, rates(spec, m)[1], eval_cost), 1),
        origin=f"design.base (models.{mi})",
    )


def _trained_runs(spec: SweepSpec, mi: int, mixes: list[tuple[list[str], str]], ev: dict[str, Any],
                  always: list[str] | None, source: str) -> Iterator[RunSpec]:
    """The trained runs of `spec.models[mi]`: every cocktail x booster fractions x seed, in plan order."""
    d = spec.design
    g_fracs = spec.general.fractions if spec.general else [0.0]
    m_fracs = spec.math.fractions if spec.math else [0.0]
    for mix, where in mixes:
        kind: RunKind = "single" if len(mix) == 1 else "cocktail"
        every_task = len(spec.tasks) > 1 and set(mix) == set(spec.tasks)
        boosted = kind in d.boosters_on or ("all_tasks" in d.boosters_on and every_task)
        seeds = spec.seeds
        if d.incremental_seeds is not None and kind == "cocktail" and not every_task and where.startswith("design.incremental"):
            seeds = d.incremental_seeds
        for gf in g_fracs if boosted else [0.0]:
            for mf in m_fracs if boosted else [0.0]:
                if gf and mf and not d.combine_boosters:
                    continue
                for seed in seeds:
                    run_ev = _run_eval(spec, ev, always, mix, gf, mf, seed)
                    yield trained_run(
                        spec, mi, kind, _sweep_cocktail(spec, mix, gf, mf, seed), label=_cocktail_label(mix, gf, mf),
                        train_tasks=mix, general=gf, math=mf, run_ev=run_ev, source=source,
                        origin=f"{where}, models.{mi}, seeds={seed}, general={gf:g}, math={mf:g}",
                        eval_cost=_eval_count(spec, run_ev),
                    )


def _api_run(spec: SweepSpec, ai: int, ev: dict[str, Any], n_eval: int) -> RunSpec:
    """The zero-shot run of `spec.api_models[ai]`, generated through its OpenAI-compatible endpoint."""
    a = spec.api_models[ai]
    api = {"base_url": a.base_url, "concurrency": a.concurrency}
    api_ev = {**ev, "mode": "generate"}
    config = {"schema": RUN_SCHEMA, "kind": "api", "model": a.name, "train": None, "eval": api_ev, "api": api}
    h = config_hash(config)
    return RunSpec(
        run_id=f"api-{h[:12]}", sweep=spec.name, kind="api", label="zero-shot (API)", model=a.name,
        eval=api_ev, api=api, config_sha256=h, resources=Resources(num_cpus=spec.resources.num_cpus, num_gpus=0),
        est_eval_examples=n_eval,
        est_seconds=round(spec.estimates.overhead_s + n_eval / (a.eval_examples_per_s or 2.0), 1),
        origin=f"api_models.{ai}",
    )


def expand(spec: SweepSpec, source: str = "sweep", check_tasks: bool = True) -> Plan:
    """All runs of `spec`, validated. Raises ConfigError naming `source` and the field."""
    c = _Checker(source, check_tasks)
    _check_grid_lists(spec, c)
    mixes = _design_mixes(spec, c)
    ev = _eval_plan(spec, c)
    always = _always_tasks(spec, ev, c) if spec.eval.scope == "needed" else None
    n_eval, eval_cost = _eval_count(spec, ev)
    plan = _PlanRuns(c)
    for mi, m in enumerate(spec.models):
        if spec.design.base:
            plan.add(_base_run(spec, mi, ev, n_eval, eval_cost))
        for run in _trained_runs(spec, mi, mixes, ev, always, source):
            plan.add(run)
        if spec.design.matched_steps:
            for run in matched_runs(spec, mi, [r for r in plan.runs if r.model == m.name], ev, always, source):
                plan.add(run)
    for ai in range(len(spec.api_models)):
        plan.add(_api_run(spec, ai, ev, n_eval))
    if not plan.runs:
        if not spec.models and not spec.api_models:
            c.fail("models", "empty grid: list at least one model (or api_models)")
        c.fail("design", "empty grid: every design is switched off (base, single, incremental, all_tasks, cocktails)")
    return Plan(spec=spec, source=source, runs=plan.runs)
