"""Gold-commodity news headlines (Sinha & Khandait): yes/no questions about each headline.

One example per (headline, question), the FinGPT headline format: "Does the news headline talk
about price going up? Please choose an answer from {Yes/No}." The release we read has six
binary columns (price up / constant / down, past, future, asset comparison), so six questions.

Split: no public test split exists, so one is made by hashing the normalised headline: about
20% of headlines are test (FinGPT's headline set is 80/20), and 10% of the rest validation. All
questions of a headline stay on one side.

Metric, as FinGPT reads its headline results: F1 per question type (weighted over Yes/No, a
parse failure counting as wrong), then the mean over the question types (`avg_f1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from types import MappingProxyType

from fincocktail.errors import DataError
from fincocktail.metrics.classification import accuracy, grouped_f1, parse_failure_rate
from fincocktail.tasks.base import Example, GenerationSpec, versioned
from fincocktail.tasks.classification import ClassificationTask
from fincocktail.tasks.io import field, read_csv, require_file
from fincocktail.tasks.splits import carve_validation, normalize_text, split_by_key

# (question type, column in the release, question); FinGPT's wording where the column matches one.
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("price_up", "Price Direction Up", "Does the news headline talk about price going up?"),
    ("price_constant", "Price Direction Constant", "Does the news headline talk about price staying constant?"),
    ("price_down", "Price Direction Down", "Does the news headline talk about price going down?"),
    ("past", "Past Information", "Does the news headline talk about an event in the past?"),
    ("future", "Future Information", "Does the news headline talk about an event in the future?"),
    ("asset_comparison", "Asset Comparision", "Does the news headline compare gold with any other asset?"),
)
ANSWER_SUFFIX = " Please choose an answer from {Yes/No}."
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1


class Headline(ClassificationTask):
    """Six yes/no questions per gold news headline; split by headline (20% test, 10% of the rest validation)."""

    id = "headline"
    version = versioned("headline@hash-v1")
    description = (
        "Gold news headlines (Sinha & Khandait), 6 yes/no questions each (price up/constant/down, past, future, "
        "asset comparison); split by headline hash"
    )
    instruction = QUESTIONS[0][2] + ANSWER_SUFFIX
    labels = ("Yes", "No")
    synonyms = MappingProxyType({"true": "Yes", "false": "No"})
    metric = "avg_f1"
    generation = GenerationSpec(max_new_tokens=4)
    source = "headline/gold-dataset-sinha-khandait.csv (tab-separated)"
    licence = "no licence stated (research use)"
    FILE = "gold-dataset-sinha-khandait.csv"
    data_files = (f"headline/{FILE}",)

    def _headlines(self, data_dir: Path) -> list[tuple[int, str, dict[str, str]]]:
        path = require_file(Path(data_dir) / "headline" / self.FILE, self.id)
        out = []
        for lineno, row in read_csv(path, delimiter="\t"):
            text = field(row, "News", path, lineno).strip()
            if not text:
                raise DataError(f"{path}:{lineno}: field 'News' is empty")
            answers = {}
            for qtype, column, _ in QUESTIONS:
                value = field(row, column, path, lineno).strip()
                if value not in ("0", "1"):
                    raise DataError(f"{path}:{lineno}: field {column!r} should be 0 or 1, got {value!r}")
                answers[qtype] = "Yes" if value == "1" else "No"
            out.append((lineno, text, answers))
        return out

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        rows = self.cached(("headlines", str(data_dir)), lambda: self._headlines(Path(data_dir)))
        rest, test = split_by_key(rows, key=lambda r: normalize_text(r[1]), fraction=TEST_FRACTION, salt="headline/test")
        if split == "test":
            chosen = test
        else:
            train, validation = carve_validation(
                rest, key=lambda r: normalize_text(r[1]), salt="headline/validation", fraction=VALIDATION_FRACTION
            )
            chosen = train if split == "train" else validation
        examples = []
        for lineno, text, answers in chosen:
            for qtype, _, question in QUESTIONS:
                examples.append(
                    self.make_example(
                        f"headline-{split}-{lineno}-{qtype}",
                        text,
                        answers[qtype],
                        normalize_text(text),
                        {"instruction": question + ANSWER_SUFFIX, "question_type": qtype, "source_line": lineno},
                    )
                )
        return examples

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        gold = [e.target for e in examples]
        preds = list(predictions)
        per_type = grouped_f1(gold, preds, [e.meta.get("question_type", "?") for e in examples], average="weighted")
        out = {
            "avg_f1": mean(per_type.values()) if per_type else 0.0,
            "accuracy": accuracy(gold, preds),
            "parse_failure_rate": parse_failure_rate(preds),
            "n": float(len(gold)),
        }
        out.update({f"f1_{qtype}": value for qtype, value in sorted(per_type.items())})
        return out
