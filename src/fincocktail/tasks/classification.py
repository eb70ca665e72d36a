"""A reusable base for fixed-label tasks: label words, correctness, scoring.

Sentiment, headline yes/no, entity-type classification, CFA letters and users' YAML tasks all
share it. Reading the label out of model text is `tasks.answers.extract_label` (and
`extract_letter` for lettered options), so one extractor decides what "the model said
positive" means everywhere, next to every other extractor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from fincocktail.metrics.classification import classification_scores
from fincocktail.tasks.answers import extract_label, extract_letter
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, Task

T = TypeVar("T")


class ClassificationTask(Task):
    """A task whose answer is one of `labels`; subclasses set the labels and implement `load`."""

    kind = "classification"
    labels: tuple[str, ...] = ()
    synonyms: Mapping[str, str] = MappingProxyType({})
    metric = "accuracy"
    generation = GenerationSpec(max_new_tokens=8)

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_label(text, self.labels, self.synonyms, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return prediction is not None and prediction == example.target

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        return classification_scores([e.target for e in examples], list(predictions))

    # helpers for loaders -------------------------------------------------------------------

    def cached(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        """Parsed files, kept on this instance so loading train, validation and test parses once.

        Per instance only: `get_task` builds a fresh instance, so edited files are re-read.
        """
        cache: dict[tuple[str, ...], Any] = self.__dict__.setdefault("_parsed", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def make_example(
        self, id: str, input: str, target: str, group: str | None = None, meta: Mapping[str, Any] | None = None
    ) -> Example:
        return Example(id=id, input=input, target=target, choices=self.labels, group=group, meta=dict(meta or {}))


class MultipleChoiceTask(ClassificationTask):
    """Lettered options (A, B, C ...): the target and every choice is a letter."""

    kind = "multiple_choice"

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_letter(text, self.labels, mode)


def data_path(data_dir: Path, *parts: str) -> Path:
    return Path(data_dir).joinpath(*parts)
