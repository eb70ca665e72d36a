"""What the generate-only tasks (FinNER, FinQA, ConvFinQA, GSM8K, General, FinanceBench) share.

Each reads its original files by default; `source="hub"` reads the public Hugging Face copy
instead, for users with network (needs the `datasets` package; not exercised offline).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal, Sequence

from fincocktail.errors import DataError
from fincocktail.metrics.text import token_f1
from fincocktail.tasks.answers import extract_free_text
from fincocktail.tasks.base import Example, ExtractMode, Task
from fincocktail.tasks.scoring import open_answer_scores

Source = Literal["local", "hub"]


def document_key(text: str, length: int = 200) -> str:
    """A document's fingerprint: a hash of the first `length` lower-case letters and digits of its text.

    PIXIU's FinQA file has no document ids, and ConvFinQA (built from FinQA's documents) renders
    the same page with different spacing and table markup. Letters and digits survive both
    renderings, so FinQA and ConvFinQA agree on the key of every shared document, and one
    document lands on the same side of the split in both tasks. Two different pages that begin
    with the same 200 characters share a key and stay together, which errs on the safe side.
    """
    prefix = re.sub(r"[^a-z0-9]", "", text.lower())[:length]
    return "doc-" + hashlib.sha256(prefix.encode("ascii")).hexdigest()[:16]


def hub_dataset(task_id: str, name: str, config: str | None = None, split: str | None = None) -> Any:
    """`datasets.load_dataset(name, config, split=split)`, with a clear error when unavailable."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"task {task_id!r}: source='hub' needs the 'datasets' package (pip install datasets) to load "
            f"{name}; or use the local files (source='local', see `fincocktail data check`)"
        ) from exc
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, auth, renamed dataset: one line for the user
        raise DataError(f"task {task_id!r}: could not load {name} from the Hugging Face hub ({exc})") from exc


class GenerativeTask(Task):
    """Shared plumbing: the data source choice (split checking is `Task.check_split`)."""

    def __init__(self, source: Source = "local") -> None:
        if source not in ("local", "hub"):
            raise DataError(f"task {self.id!r}: unknown source {source!r}; expected 'local' or 'hub'")
        self.data_source: Source = source


class OpenAnswerTask(GenerativeTask):
    """Free-text answers (FinanceBench, general instructions): read the text as is, score by token overlap.

    `is_correct` uses token F1 >= 0.5 as a per-example pass mark for bootstrap intervals and the
    predictions file; `score` reports the corpus metrics of `open_answer_scores`.
    """

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_free_text(text, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return token_f1(prediction, example.target) >= 0.5

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        return open_answer_scores(predictions, [e.target for e in examples])
