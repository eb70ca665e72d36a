"""What a task is: its examples, how answers are read out of model text, and how they are scored.

Every concept downstream (prompts, cocktails, training, evaluation, reports) speaks in
`Example`s and asks a `Task` for extraction and scoring, so a new task (built-in or a user's
YAML) plugs in without touching those layers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from fincocktail.errors import ConfigError
from fincocktail.tasks.answers import ExtractMode  # re-exported: tasks name the mode in their signatures
from fincocktail.tasks.prompts import TEMPLATE_VERSION

TaskKind = Literal[
    "classification",  # fixed label set; choice mode scores each label
    "multiple_choice",  # per-example choices (CFA); choice mode scores each choice
    "extraction",  # NER entity lists; generate only
    "numeric",  # FinQA / ConvFinQA / GSM8K; generate only
    "open_qa",  # FinanceBench; generate only
    "instruction",  # general / math ingredients used for training only
]


def versioned(name: str) -> str:
    """A task version that changes when either its splits (`name`) or the prompt templates change."""
    return f"{name}+prompts.{TEMPLATE_VERSION}"


@dataclass(frozen=True)
class Example:
    """One prompt-able item.

    `id` is stable across runs (task, split and a source-derived key) so predictions from
    different models line up. `choices` is set for classification / multiple choice: the exact
    answer strings choice mode scores. `group` is the unit that must never straddle train and
    test (a headline, a FinQA document).
    """

    id: str
    input: str
    target: str
    choices: tuple[str, ...] | None = None
    group: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationSpec:
    """How generate mode should decode for this task."""

    max_new_tokens: int = 16
    stop: tuple[str, ...] = ("\n",)


@dataclass(frozen=True)
class TaskCard:
    """What a task says about itself, in one shape for built-in and YAML tasks alike.

    Built-ins set these as class attributes, a user task from its YAML spec; `Task.card()`
    reads them back the same way for both, so listings, exports and reports never branch on
    where a task came from.
    """

    id: str
    kind: str
    metric: str
    version: str
    description: str
    splits: tuple[str, ...]
    labels: tuple[str, ...] | None
    instruction: str
    source: str
    licence: str
    eval_only: bool
    train_only: bool
    generation: GenerationSpec
    user_task: str | None = None  # the YAML file of a user task

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("id", "kind", "metric", "version", "description")},
            "splits": list(self.splits),
            "labels": list(self.labels) if self.labels else None,
            **{k: getattr(self, k) for k in ("instruction", "source", "licence", "eval_only", "train_only", "user_task")},
            "generation": {"max_new_tokens": self.generation.max_new_tokens, "stop": list(self.generation.stop)},
        }


class Task(ABC):
    """A task of the suite. Subclasses set the class attributes and implement `load`."""

    id: str
    version: str  # e.g. "fpb@fingpt": bump when splits, prompts or targets change
    kind: TaskKind
    description: str = ""
    instruction: str = ""  # the FinGPT-style instruction line
    labels: tuple[str, ...] | None = None
    metric: str = "accuracy"  # the headline metric reported for this task
    splits: tuple[str, ...] = ("train", "validation", "test")
    generation: GenerationSpec = GenerationSpec()
    eval_only: bool = False
    train_only: bool = False
    source: str = ""  # where the data comes from (file names offline, hub id online)
    licence: str = ""
    data_files: tuple[str, ...] = ()  # files `load` reads, relative to data_dir (all splits)

    def card(self) -> TaskCard:
        spec_path = getattr(self, "spec_path", None)
        return TaskCard(
            id=self.id, kind=self.kind, metric=self.metric, version=self.version, description=self.description,
            splits=tuple(self.splits), labels=tuple(self.labels) if self.labels else None, instruction=self.instruction,
            source=self.source, licence=self.licence, eval_only=self.eval_only, train_only=self.train_only,
            generation=self.generation, user_task=str(spec_path) if spec_path is not None else None,
        )

    @property
    def trainable(self) -> bool:
        """Whether a cocktail can draw training examples from this task."""
        return not self.eval_only and "train" in self.splits

    def why_not_evaluable(self, split: str) -> str | None:
        """Why this task cannot be scored on `split` (None when it can): the one rule every
        caller applies (eval, sweeps, lm-eval export)."""
        if self.train_only or self.kind == "instruction":
            return f"task {self.id!r} is training data only and cannot be evaluated"
        if split not in self.splits:
            return f"task {self.id!r} has no split {split!r}; it has {', '.join(self.splits)}"
        return None

    def check_split(self, split: str) -> None:
        """A ConfigError naming the task and its splits when `split` is not one of them."""
        if split not in self.splits:
            raise ConfigError(f"task {self.id!r} has no split {split!r}; expected one of {', '.join(self.splits)}")

    def check_lengths(self, predictions: Sequence[object], examples: Sequence[Example]) -> None:
        """One prediction per example, or a ValueError: a silent `zip` would score a truncated run."""
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples of task {self.id!r}")

    def source_files(self, data_dir: Path, split: str | None = None) -> list[Path]:
        """The local files `load(split, data_dir)` reads (every split's when `split` is None).

        The cocktail manifest hashes these so a run can be traced to the exact bytes it trained
        on. A task reading the hub copy (`data_source == "hub"`) reads no local file: empty list.
        Tasks whose files differ by split override this.
        """
        if getattr(self, "data_source", "local") == "hub":
            return []
        return [Path(data_dir) / name for name in self.data_files]

    @abstractmethod
    def load(self, split: str, data_dir: Path) -> list[Example]:
        """Read `split` from the original files under `data_dir`, deterministically."""

    @abstractmethod
    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        """Read the answer out of generated text; None means a parse failure."""

    @abstractmethod
    def is_correct(self, prediction: str | None, example: Example) -> bool:
        """Per-example correctness, used for bootstrap intervals and the predictions file."""

    @abstractmethod
    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        """Corpus metrics as the anchors compute them, plus `parse_failure_rate`.

        `predictions[i]` is the extracted answer for `examples[i]` (None = parse failure).
        The dict always contains the key named by `self.metric`.
        """
