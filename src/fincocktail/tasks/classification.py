"""A reusable base for fixed-label tasks: label words, answer extraction, correctness, scoring.

Sentiment, headline yes/no, entity-type classification, CFA letters and users' YAML tasks all
share it, so one extractor decides what "the model said positive" means everywhere.

Extraction has two modes:

* strict: the whole output, stripped of whitespace, punctuation and case, is exactly one label.
* flexible: the first line that names a label decides. "Positive.", "The sentiment is
  negative", "Bullish" (a synonym) and "Yes, it does" are read; a line that names two
  different labels ("positive/negative", "neither positive nor negative") or negates the label
  ("not positive") is a parse failure (None). Nothing is ever mapped to a default label.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from fincocktail.metrics.classification import classification_scores
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, Task

T = TypeVar("T")

_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026\u2013\u2014"
_ANSWER_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|sentiment|label|output|response|entity\s+type)"
    r"(?:\s+(?:of|for)\s+.{1,80}?)?(?:\s+is|\s+would\s+be|\s*:)?|it\s+is|it's|this\s+is)?$",
    re.IGNORECASE,
)
_LIST_GAP = re.compile(r"^[\s,;/|]*(?:or|and|nor)?[\s,;/|]*$", re.IGNORECASE)
_NEGATION = re.compile(r"(?:\bnot|\bno|n't|\bneither|\bnor|\bnon)\W*(?:\w+\W+)?$", re.IGNORECASE)


def _clean(text: str) -> str:
    return text.strip().strip(_PUNCT + string.whitespace).strip().lower()


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w\-])({alternatives})(?![\w\-])", re.IGNORECASE)


def extract_label(
    text: str | None,
    labels: Sequence[str],
    synonyms: Mapping[str, str] | None = None,
    mode: ExtractMode = "flexible",
) -> str | None:
    """The label named in `text` (canonical spelling from `labels`), or None when unreadable or ambiguous."""
    if text is None:
        return None
    canonical = {label.lower(): label for label in labels}
    cleaned = _clean(text)
    if cleaned in canonical:
        return canonical[cleaned]
    if mode == "strict":
        return None
    words = {word.lower(): label for word, label in (synonyms or {}).items()}
    words.update(canonical)
    if cleaned in words:
        return words[cleaned]
    pattern = _word_pattern(list(words))
    for line in text.splitlines():
        matches = list(pattern.finditer(line))
        if not matches:
            continue
        found = [words[m.group(1).lower()] for m in matches]
        first = matches[0]
        # an echoed option list ("person, organization, location", "Yes/No") is not an answer
        if len(matches) > 1 and found[1] != found[0] and _LIST_GAP.match(line[first.end() : matches[1].start()]):
            return None
        prefix = line[: first.start()].strip().strip(_PUNCT + string.whitespace)
        rest = line[first.end() :]
        # "Yes, there is no doubt" / "Positive. Costs fell but ...": a leading answer word closed
        # by sentence punctuation is the answer, whatever the explanation after it mentions.
        closed = not rest.strip() or rest.lstrip()[:1] in ",.;:!)"
        if _ANSWER_PREFIX.match(prefix) and closed and not _NEGATION.search(line[: first.start()]):
            return found[0]
        if len(set(found)) > 1:
            return None
        if any(_NEGATION.search(line[: m.start()]) for m in matches):
            return None
        return found[0]
    return None


_LETTER_LEAD = r"^[\s\*\"'`]*(?:(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"


def extract_letter(text: str | None, letters: Sequence[str] = ("A", "B", "C"), mode: ExtractMode = "flexible") -> str | None:
    """The option letter in `text`: "C", "(B)", "Answer: A", "The answer is B: liquidity."; else None."""
    if text is None:
        return None
    canonical = {letter.lower(): letter for letter in letters}
    cleaned = _clean(text)
    if cleaned in canonical:
        return canonical[cleaned]
    if mode == "strict":
        return None
    group = "".join(re.escape(letter) for letter in letters)
    # A letter at the start must be closed by punctuation or end the line: "A good answer" is not "A".
    lead = re.compile(_LETTER_LEAD + rf"[\(\[]?([{group}])[\)\]]?(?=$|[.:,;)\]]|\s+[-\u2013:])", re.IGNORECASE)
    keyword = re.compile(rf"\b(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[\(\[]?([{group}])\b(?![\w'])", re.IGNORECASE)
    for line in text.splitlines():
        if not line.strip():
            continue
        m = lead.match(line)
        if m:
            # "A, B or C" / "A or B": a list of options, not an answer
            rest = line[m.end() :]
            if re.match(rf"\s*(?:,|/|\bor\b|\band\b)\s*[\(\[]?[{group}]\b", rest):
                return None
            # "A: 555, B: 563, C: 576": the options echoed, each with its marker
            others = {x.upper() for x in re.findall(rf"(?<![\w])([{group}])[:.)](?=\s|$)", rest)} - {m.group(1).upper()}
            if others:
                return None
            return canonical[m.group(1).lower()]
        found = {
            canonical[k.group(1).lower()]
            for k in keyword.finditer(line)
            # "the answer is a bit unclear": a lowercase letter counts only when it stands alone
            if k.group(1).isupper() or re.match(r"\s*(?:$|[.:,;)\]])", line[k.end() :])
        }
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


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
