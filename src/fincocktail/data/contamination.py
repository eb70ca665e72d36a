"""N-gram overlap between training data and every evaluation split.

A training example is *contaminated* for an eval split when it shares at least one n-gram
(13 normalised words by default, as in the GPT-3 and Llama-2 reports) with any example of that
split. Texts shorter than n words count as a single n-gram made of all their words, so an exact
duplicate of a short FPB sentence is still caught.

Speed: each eval split becomes one set of 64-bit n-gram hashes (Python's tuple hash: only
compared within one process, never stored); each training example is then a handful of set
lookups. The whole suite's eval splits (~30k examples, 1.4M 13-grams) index in about a second.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fincocktail.tasks.base import Example, Task

EVAL_SPLITS = ("validation", "test")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise_words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation and whitespace differences never hide an overlap."""
    return _WORD.findall(text.lower())


def example_text(example: Example, shared: frozenset[str] | set[str] = frozenset()) -> str:
    """What we compare: the example's own text, its input and target, plus its instruction when
    that instruction is its own (instruction data such as Alpaca). An instruction in `shared` is
    prompt text that many examples of a split carry word for word (FiQA-SA's "What is the
    sentiment of this news? ..."); counting it would mark every example that uses the same
    prompt as overlapping any eval split that uses it too."""
    instruction = str(example.meta.get("instruction", "")) if example.meta else ""
    if instruction in shared:
        instruction = ""
    parts = [instruction, example.input, example.target]
    return "\n".join(p for p in parts if p)


def shared_instructions(examples: Sequence[Example]) -> set[str]:
    """Instructions that more than one example of a split carries: a template, not the example's text."""
    counts: Counter[str] = Counter(
        str(ex.meta["instruction"]) for ex in examples if ex.meta and ex.meta.get("instruction")
    )
    return {text for text, count in counts.items() if count > 1}


def split_hashes(examples: Sequence[Example], n: int) -> list[set[int]]:
    """The n-gram hashes of each example of one split, its shared prompt text left out."""
    shared = shared_instructions(examples)
    return [ngram_hashes(example_text(ex, shared), n) for ex in examples]


def ngram_hashes(text: str, n: int) -> set[int]:
    words = normalise_words(text)
    if not words:
        return set()
    if len(words) < n:
        return {hash(tuple(words))}
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


@dataclass
class PairResult:
    train_task: str
    eval_task: str
    eval_split: str
    train_examples: int
    eval_examples: int
    contaminated_train: int
    contaminated_eval: int

    @property
    def train_fraction(self) -> float:
        return self.contaminated_train / self.train_examples if self.train_examples else 0.0


@dataclass
class ContaminationReport:
    n: int
    pairs: list[PairResult]
    contaminated_ids: dict[str, set[str]]  # train task -> ids overlapping any eval split
    skipped: dict[str, str] = field(default_factory=dict)  # eval task/split -> why it was not checked
    dropped: bool = False

    def to_json(self, max_ids: int = 1000) -> dict[str, Any]:
        return {
            "n": self.n,
            "normalisation": "lower-cased \\w+ words; texts shorter than n words count as one n-gram",
            "compared": "input and target, plus the instruction unless several examples of the split share it",
            "dropped": self.dropped,
            "pairs": [
                {
                    "train_task": p.train_task,
                    "eval_task": p.eval_task,
                    "eval_split": p.eval_split,
                    "train_examples": p.train_examples,
                    "eval_examples": p.eval_examples,
                    "contaminated_train": p.contaminated_train,
                    "contaminated_eval": p.contaminated_eval,
                    "train_fraction": round(p.train_fraction, 6),
                }
                for p in self.pairs
            ],
            "contaminated_train": {
                task: {"count": len(ids), "ids": sorted(ids)[:max_ids], "ids_truncated": len(ids) > max_ids}
                for task, ids in self.contaminated_ids.items()
            },
            "skipped": self.skipped,
        }


def check_contamination(
    train_sources: Mapping[str, Sequence[Example]],
    eval_sets: Mapping[tuple[str, str], Sequence[Example]],
    n: int = 13,
) -> ContaminationReport:
    """Overlap of every training source with every eval split, per pair."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    train_grams = {task: split_hashes(examples, n) for task, examples in train_sources.items()}
    contaminated: dict[str, set[str]] = {task: set() for task in train_sources}
    pairs: list[PairResult] = []
    for (eval_task, split), eval_examples in eval_sets.items():
        eval_grams = split_hashes(eval_examples, n)
        index: set[int] = set().union(*eval_grams) if eval_grams else set()
        for task, examples in train_sources.items():
            hit_train = 0
            train_union: set[int] = set()
            for ex, grams in zip(examples, train_grams[task]):
                if not index.isdisjoint(grams):
                    hit_train += 1
                    contaminated[task].add(ex.id)
                    train_union |= grams & index
            hit_eval = sum(1 for grams in eval_grams if not train_union.isdisjoint(grams)) if train_union else 0
            pairs.append(
                PairResult(task, eval_task, split, len(examples), len(eval_examples), hit_train, hit_eval)
            )
    return ContaminationReport(n=n, pairs=pairs, contaminated_ids=contaminated)


def check_drop_fraction(
    report: ContaminationReport, train_sources: Mapping[str, Sequence[Example]], max_fraction: float
) -> None:
    """Stop a run whose decontamination would leave an ingredient mostly empty.

    Dropping is silent otherwise: a cocktail that names an ingredient and trains on none of it
    looks like a working run. Raised before anything is drawn, naming the ingredient, so the
    user either fixes the data or raises `decontaminate.max_drop_fraction` knowingly.
    """
    from fincocktail.errors import ConfigError

    for task, examples in train_sources.items():
        lost = len(report.contaminated_ids.get(task, ()))
        if examples and lost / len(examples) > max_fraction:
            raise ConfigError(
                f"decontamination would drop {lost} of {len(examples)} training examples of {task!r} "
                f"(more than {max_fraction:.0%}); see `fincocktail data contamination`, or set "
                f"decontaminate.max_drop_fraction: 1.0 in the cocktail to train on the rest anyway"
            )


def load_eval_sets(
    tasks: Iterable[Task], data_dir: Path, splits: Sequence[str] = EVAL_SPLITS
) -> tuple[dict[tuple[str, str], list[Example]], dict[str, str]]:
    """The validation and test split of every task that defines them; tasks whose data cannot be
    read are listed as skipped (with the reason) instead of failing the whole check."""
    from fincocktail.errors import FincocktailError

    out: dict[tuple[str, str], list[Example]] = {}
    skipped: dict[str, str] = {}
    for task in tasks:
        if getattr(task, "train_only", False):
            continue
        for split in splits:
            if split not in task.splits:
                continue
            try:
                out[(task.id, split)] = list(task.load(split, data_dir))
            except (FincocktailError, OSError) as exc:
                skipped[f"{task.id}/{split}"] = str(exc)
    return out, skipped


def registry_eval_tasks(extra: Iterable[Task] = ()) -> tuple[list[Task], dict[str, str]]:
    """All registered tasks (built-in and user) plus `extra`, skipping any whose module fails to import."""
    from fincocktail.tasks.registry import get_task, task_ids

    tasks: dict[str, Task] = {}
    skipped: dict[str, str] = {}
    for task_id in task_ids():
        try:
            tasks[task_id] = get_task(task_id)
        except Exception as exc:  # a task module not written yet or broken must not block the check
            skipped[task_id] = f"cannot load task: {exc}"
    for task in extra:
        tasks.setdefault(task.id, task)
    return list(tasks.values()), skipped


def contamination_for_cocktail(
    train_sources: Mapping[str, Sequence[Example]],
    data_dir: Path,
    n: int = 13,
    eval_tasks: Iterable[Task] | None = None,
    cocktail_tasks: Iterable[Task] = (),
) -> ContaminationReport:
    """Check a cocktail's sources against the eval splits of `eval_tasks` (default: every task)."""
    skipped: dict[str, str] = {}
    if eval_tasks is None:
        eval_tasks, skipped = registry_eval_tasks(cocktail_tasks)
    eval_sets, skipped_splits = load_eval_sets(eval_tasks, data_dir)
    report = check_contamination(train_sources, eval_sets, n=n)
    report.skipped = {**skipped, **skipped_splits}
    return report
