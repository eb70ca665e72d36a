"""Three-class financial sentiment: FPB, FiQA-SA and TFNS, on the FinGPT benchmark's test splits.

The test sets are exactly the FinGPT / FinLoRA `fingpt_test` files, so scores line up with the
published anchors. Training data is everything else in the original release, minus any row
whose text (normalised) also occurs in the test set: the original releases contain a few
duplicate sentences, and a duplicate on both sides would leak test answers into training.
Validation is carved from that remainder by hashing the normalised text.

Every loader reads the original file format; `source="hub"` reads the public Hugging Face
copy instead (needs the `datasets` package and network; not exercised offline).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from fincocktail.errors import DataError
from fincocktail.tasks.base import Example, versioned
from fincocktail.tasks.classification import ClassificationTask
from fincocktail.tasks.io import (
    field,
    read_csv,
    read_json,
    read_jsonl,
    read_text,
    require_file,
)
from fincocktail.tasks.splits import carve_validation, normalize_text

SENTIMENT_LABELS = ("negative", "neutral", "positive")
SENTIMENT_SYNONYMS = {"bullish": "positive", "bearish": "negative"}
NEWS_INSTRUCTION = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."
TWEET_INSTRUCTION = "What is the sentiment of this tweet? Please choose an answer from {negative/neutral/positive}."
VALIDATION_FRACTION = 0.1

Source = Literal["local", "hub"]

_CONTEXT = re.compile(r"^Instruction: (?P<instruction>.*?)\nInput: (?P<input>.*)\nAnswer: ?$", re.DOTALL)


@dataclass(frozen=True)
class Row:
    """One labelled text of an original release, with where it came from."""

    key: str  # stable, source-derived id fragment
    text: str
    label: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Partition:
    """How an original release divides: the benchmark's test rows, the rest, and the rest's rows dropped for overlap."""

    test: list[Row]
    rest: list[Row]  # all non-test rows: the published "train" count
    dropped: list[Row]  # rows of `rest` whose normalised text is also a test text

    @property
    def train_pool(self) -> list[Row]:
        dropped = {r.key for r in self.dropped}
        return [r for r in self.rest if r.key not in dropped]


def parse_fingpt_context(context: str, path: Path, lineno: int) -> tuple[str, str]:
    """(instruction, input) of a FinGPT benchmark prompt `Instruction: ...\\nInput: ...\\nAnswer: `."""
    m = _CONTEXT.match(context)
    if not m:
        raise DataError(f"{path}:{lineno}: field 'context' is not 'Instruction: ...\\nInput: ...\\nAnswer: '")
    return m.group("instruction"), m.group("input")


def read_fingpt_test(path: Path, labels: tuple[str, ...]) -> list[tuple[int, str, str, str]]:
    """(line, instruction, input, target) of a `fingpt_test/*.jsonl` file."""
    out = []
    for lineno, row in read_jsonl(path):
        context = field(row, "context", path, lineno)
        target = field(row, "target", path, lineno)
        if target not in labels:
            raise DataError(f"{path}:{lineno}: target {target!r} is not one of {', '.join(labels)}")
        instruction, text = parse_fingpt_context(context, path, lineno)
        out.append((lineno, instruction, text, target))
    return out


def match_test_rows(rows: list[Row], test: list[tuple[str, str]], test_path: Path, release: str) -> tuple[list[Row], list[Row]]:
    """Find each (text, label) of the benchmark test file among `rows` (a multiset match, in file order).

    Returns (test rows in test-file order, the other rows in release order). Exact text: the
    FinGPT files were made from the same releases, so every test sentence must be found.
    """
    pool: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        pool[(row.text, row.label)].append(i)
    taken: list[int] = []
    for n, (text, label) in enumerate(test, start=1):
        slots = pool.get((text, label))
        if not slots:
            raise DataError(
                f"{test_path}: test item {n} ({text[:60]!r}, {label}) is not in {release}; "
                "the benchmark's test file and the original release do not match"
            )
        taken.append(slots.pop(0))
    chosen = set(taken)
    return [rows[i] for i in taken], [r for i, r in enumerate(rows) if i not in chosen]


def partition(rows: list[Row], test: list[tuple[str, str]], test_path: Path, release: str) -> Partition:
    test_rows, rest = match_test_rows(rows, test, test_path, release)
    test_texts = {normalize_text(r.text) for r in test_rows}
    dropped = [r for r in rest if normalize_text(r.text) in test_texts]
    return Partition(test=test_rows, rest=rest, dropped=dropped)


def _hub_dataset(name: str, config: str | None = None) -> Any:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            f"source='hub' needs the 'datasets' package (pip install datasets) to load {name}; "
            "or use the local files (source='local', see `fincocktail data check`)"
        ) from exc
    return datasets.load_dataset(name, config) if config else datasets.load_dataset(name)


class SentimentTask(ClassificationTask):
    """Shared split logic: `_partition` gives test rows and the train pool; validation is carved from the pool."""

    labels = SENTIMENT_LABELS
    synonyms = SENTIMENT_SYNONYMS
    instruction = NEWS_INSTRUCTION
    licence = ""

    def __init__(self, source: Source = "local") -> None:
        if source not in ("local", "hub"):
            raise DataError(f"task {self.id!r}: unknown source {source!r}; expected 'local' or 'hub'")
        self.data_source = source

    def _partition(self, data_dir: Path) -> Partition:
        raise NotImplementedError

    def _example(self, split: str, row: Row) -> Example:
        return self.make_example(f"{self.id}-{split}-{row.key}", row.text, row.label, normalize_text(row.text), row.meta)

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        part = self.cached(("partition", str(data_dir)), lambda: self._partition(Path(data_dir)))
        if split == "test":
            return [self._example(split, r) for r in part.test]
        train, validation = carve_validation(
            part.train_pool, key=lambda r: normalize_text(r.text), salt=f"{self.id}/validation", fraction=VALIDATION_FRACTION
        )
        return [self._example(split, r) for r in (train if split == "train" else validation)]


class FPB(SentimentTask):
    """Financial PhraseBank (Malo et al. 2014), Sentences_50Agree, on FinGPT's test split.

    test: the 1212 sentences of `fingpt_test/fpb_test.jsonl` (FinGPT's `train_test_split(seed=42)`
    of the 4846 rows), matched exactly, row for row, in `fpb/Sentences_50Agree.txt` (latin-1,
    `sentence@label`). The other 3634 rows are the published train pool; 5 of them repeat a test
    sentence (50Agree has duplicate lines) and are dropped, leaving 3629 for train + validation.
    """

    id = "fpb"
    version = versioned("fpb@fingpt")
    description = "Financial PhraseBank 50Agree news sentences, 3-class sentiment; FinGPT benchmark test split"
    source = "fpb/Sentences_50Agree.txt + fingpt_test/fpb_test.jsonl (hub: takala/financial_phrasebank)"
    licence = "CC BY-NC-SA 3.0 (non-commercial)"
    data_files = ("fpb/Sentences_50Agree.txt", "fingpt_test/fpb_test.jsonl")

    def _hub_partition(self) -> Partition:
        """FinGPT's own procedure: `train_test_split(seed=42)` (25% test) of the hub copy's 4846 rows."""
        ds = _hub_dataset("takala/financial_phrasebank", "sentences_50agree")["train"]
        names = ds.features["label"].names
        ds = ds.map(lambda _, i: {"row": i + 1}, with_indices=True)
        parts = ds.train_test_split(seed=42)
        rows = {r["row"]: Row(str(r["row"]), r["sentence"], names[r["label"]], {"source_line": r["row"]}) for r in ds}
        test = [rows[r["row"]] for r in parts["test"]]
        taken = {r.key for r in test}
        rest = [r for r in rows.values() if r.key not in taken]
        texts = {normalize_text(r.text) for r in test}
        return Partition(test=test, rest=rest, dropped=[r for r in rest if normalize_text(r.text) in texts])

    def _rows(self, data_dir: Path) -> list[Row]:
        path = require_file(data_dir / "fpb" / "Sentences_50Agree.txt", self.id)
        rows = []
        for lineno, line in enumerate(read_text(path, encoding="latin-1"), start=1):
            if not line.strip():
                continue
            text, sep, label = line.rpartition("@")
            if not sep or not text.strip():
                raise DataError(f"{path}:{lineno}: expected 'sentence@label', got {line[:60]!r}")
            label = label.strip()
            if label not in self.labels:
                raise DataError(f"{path}:{lineno}: label {label!r} is not one of {', '.join(self.labels)}")
            rows.append(Row(str(lineno), text, label, {"source_line": lineno}))
        return rows

    def _partition(self, data_dir: Path) -> Partition:
        if self.data_source == "hub":
            return self._hub_partition()
        rows = self._rows(data_dir)
        test_path = require_file(data_dir / "fingpt_test" / "fpb_test.jsonl", self.id)
        test = [(text, target) for _, _, text, target in read_fingpt_test(test_path, self.labels)]
        return partition(rows, test, test_path, "fpb/Sentences_50Agree.txt")


class FiQASA(SentimentTask):
    """FiQA 2018 task 1 (aspect sentiment), one row per (sentence, target), on FinGPT's test split.

    Rows as FinGPT built them (via the `pauri32/fiqa-2018` copy): 436 headlines with 498 targets
    plus 675 posts = 1173 rows; the score becomes a label (< -0.1 negative, < 0.1 neutral, else
    positive); the input is the sentence only, instructions say "news" for headlines and "tweet"
    for posts. test: the 235 rows of `fingpt_test/fiqa_test.jsonl`; the other 938 are the train
    pool, minus the 23 that share a headline with a test row (multi-target headlines).
    """

    id = "fiqa_sa"
    version = versioned("fiqa_sa@fingpt")
    description = "FiQA-2018 headlines and microblog posts, 3-class sentiment per target; FinGPT benchmark test split"
    source = "fiqa_sa/task1_{headline,post}_ABSA_train.json + fingpt_test/fiqa_test.jsonl"
    licence = "no licence stated (research use)"
    FILES = (("headline", "task1_headline_ABSA_train.json"), ("post", "task1_post_ABSA_train.json"))
    data_files = tuple(f"fiqa_sa/{name}" for _, name in FILES) + ("fingpt_test/fiqa_test.jsonl",)

    @staticmethod
    def score_to_label(score: float) -> str:
        if score < -0.1:
            return "negative"
        if score < 0.1:
            return "neutral"
        return "positive"

    def _rows(self, data_dir: Path) -> list[Row]:
        if self.data_source == "hub":
            raise DataError(
                "task 'fiqa_sa': no hub copy keeps the per-target rows in release order; download the FiQA 2018 "
                "task 1 files (see `fincocktail data fetch`) and use source='local'"
            )
        rows = []
        for fmt, name in self.FILES:
            path = require_file(data_dir / "fiqa_sa" / name, self.id)
            data = read_json(path)
            if not isinstance(data, dict):
                raise DataError(f"{path}: expected a JSON object mapping ids to {{sentence, info}}")
            for sid, item in data.items():
                where = f"{path}: id {sid}"
                if not isinstance(item, dict) or not isinstance(item.get("sentence"), str):
                    raise DataError(f"{where}: missing field 'sentence'")
                info = item.get("info")
                if not isinstance(info, list) or not info:
                    raise DataError(f"{where}: field 'info' should be a non-empty list")
                for i, target in enumerate(info):
                    try:
                        score = float(target["sentiment_score"])
                    except (KeyError, TypeError, ValueError) as exc:
                        raise DataError(f"{where}: info[{i}].sentiment_score should be a number in [-1, 1]") from exc
                    rows.append(
                        Row(
                            f"{fmt}-{sid}-{i}",
                            item["sentence"],
                            self.score_to_label(score),
                            {"format": fmt, "target": target.get("target"), "sentiment_score": score,
                             "instruction": TWEET_INSTRUCTION if fmt == "post" else NEWS_INSTRUCTION},
                        )
                    )
        return rows

    def _partition(self, data_dir: Path) -> Partition:
        rows = self._rows(data_dir)
        test_path = require_file(data_dir / "fingpt_test" / "fiqa_test.jsonl", self.id)
        test = [(text, target) for _, _, text, target in read_fingpt_test(test_path, self.labels)]
        return partition(rows, test, test_path, "fiqa_sa/task1_*_train.json")


class TFNS(SentimentTask):
    """Twitter Financial News Sentiment (zeroshot/twitter-financial-news-sentiment).

    test: `sent_valid.csv` (2388), the FinGPT benchmark's test set; train pool: `sent_train.csv`
    (9543) minus 1 tweet that repeats a test tweet up to case. Labels follow the dataset card:
    0 Bearish -> negative, 1 Bullish -> positive, 2 Neutral -> neutral. Note: the FinLoRA copy
    `fingpt_test/tfns_test.jsonl` has the same 2388 tweets with labels 1 and 2 swapped (Bullish
    tweets marked "neutral", Neutral ones "positive"); we do not reproduce that.
    """

    id = "tfns"
    version = versioned("tfns@card")
    description = "Twitter Financial News Sentiment tweets, 3-class sentiment; test = the validation release (2388)"
    source = "tfns/sent_train.csv, tfns/sent_valid.csv (hub: zeroshot/twitter-financial-news-sentiment)"
    licence = "MIT (dataset card)"
    data_files = ("tfns/sent_train.csv", "tfns/sent_valid.csv")
    instruction = TWEET_INSTRUCTION
    LABEL_MAP = MappingProxyType({"0": "negative", "1": "positive", "2": "neutral"})

    def _read(self, data_dir: Path, name: str, hub_split: str) -> list[Row]:
        if self.data_source == "hub":
            ds = _hub_dataset("zeroshot/twitter-financial-news-sentiment")[hub_split]
            return [Row(f"{name}-{i + 2}", r["text"], self.LABEL_MAP[str(r["label"])], {"source_line": i + 2})
                    for i, r in enumerate(ds)]
        path = require_file(data_dir / "tfns" / name, self.id)
        rows = []
        for lineno, row in read_csv(path):
            text = field(row, "text", path, lineno)
            raw = field(row, "label", path, lineno).strip()
            if raw not in self.LABEL_MAP:
                raise DataError(f"{path}:{lineno}: label {raw!r} is not one of 0 (Bearish), 1 (Bullish), 2 (Neutral)")
            rows.append(Row(f"{Path(name).stem}-{lineno}", text, self.LABEL_MAP[raw], {"source_line": lineno}))
        return rows

    def _partition(self, data_dir: Path) -> Partition:
        test = self._read(data_dir, "sent_valid.csv", "validation")
        rest = self._read(data_dir, "sent_train.csv", "train")
        test_texts = {normalize_text(r.text) for r in test}
        return Partition(test=test, rest=rest, dropped=[r for r in rest if normalize_text(r.text) in test_texts])
