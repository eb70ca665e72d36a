"""Small deterministic fake tasks for cocktail, contamination and training tests.

They generate their examples from a seed (no data files), so tests control exactly how many
examples exist and which texts overlap. `FAKE_TASKS` maps id -> instance; `resolver` plugs them
into `fincocktail.cocktail.resolve_tasks`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from fincocktail.errors import ConfigError
from fincocktail.tasks.base import Example, Task

WORDS = ["profit", "revenue", "sales", "rose", "fell", "company", "quarter", "net", "operating", "EUR", "million", "percent", "year", "market", "shares", "price", "growth", "loss", "cost", "margin", "dividend", "bank", "interest", "rate", "earnings", "forecast"]
LABELS = ("negative", "neutral", "positive")


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


class FakeSentiment(Task):
    """A classification task with `sizes[split]` examples of 8-20 words each."""

    kind = "classification"
    labels = LABELS
    instruction = "What is the sentiment of this news? Please choose an answer from {negative/neutral/positive}."

    def __init__(self, task_id: str, sizes: dict[str, int], seed: int = 0, planted: dict[str, Sequence[str]] | None = None):
        self.id = task_id
        self.version = f"{task_id}@test"
        self.sizes = sizes
        self.seed = seed
        self.planted = planted or {}  # split -> texts appended as extra examples

    def load(self, split: str, data_dir: Path) -> list[Example]:
        rng = random.Random(f"{self.id}:{split}:{self.seed}")
        out = []
        for i in range(self.sizes.get(split, 0)):
            text = sentence(rng, rng.randint(8, 20))
            out.append(Example(id=f"{self.id}/{split}/{i}", input=text, target=rng.choice(LABELS), choices=LABELS))
        for j, text in enumerate(self.planted.get(split, ())):
            out.append(Example(id=f"{self.id}/{split}/planted{j}", input=text, target="neutral", choices=LABELS))
        return out

    def extract(self, text, mode="flexible"):
        text = text.strip().lower()
        return next((label for label in LABELS if text.startswith(label)), None)

    def is_correct(self, prediction, example):
        return prediction == example.target

    def score(self, predictions, examples):
        correct = sum(self.is_correct(p, e) for p, e in zip(predictions, examples))
        return {"accuracy": correct / max(len(examples), 1), "parse_failure_rate": 0.0}


class FakeInstruction(FakeSentiment):
    """A train-only instruction task (stands in for `general` / `gsm8k`)."""

    kind = "instruction"
    train_only = True
    splits = ("train",)

    def load(self, split: str, data_dir: Path) -> list[Example]:
        rng = random.Random(f"{self.id}:{split}:{self.seed}")
        return [
            Example(
                id=f"{self.id}/{split}/{i}",
                input=sentence(rng, 6),
                target=sentence(rng, 4),
                meta={"instruction": "Summarise the following text."},
            )
            for i in range(self.sizes.get(split, 0))
        ]


def make_fake_tasks() -> dict[str, Task]:
    return {
        "fa": FakeSentiment("fa", {"train": 50, "validation": 10, "test": 20}, seed=1),
        "fb": FakeSentiment("fb", {"train": 30, "validation": 10, "test": 20}, seed=2),
        "gen": FakeInstruction("gen", {"train": 40}, seed=3),
        "mth": FakeInstruction("mth", {"train": 20}, seed=4),
    }


FAKE_TASKS = make_fake_tasks()


def resolver(task_id: str, tasks: dict[str, Task] | None = None) -> Task:
    tasks = tasks if tasks is not None else FAKE_TASKS
    if task_id not in tasks:
        raise ConfigError(f"unknown task {task_id!r}; known tasks: {', '.join(tasks)}")
    return tasks[task_id]
