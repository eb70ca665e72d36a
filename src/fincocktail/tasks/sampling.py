"""Evaluation samples: which examples are scored when fewer than all of them are.

The benchmark files are ordered (by label, or by document), so "the first N" measures a
different population than the test set: the first 60 TFNS test tweets hold no neutral one,
though 65% of the set is neutral. Every subset the tool evaluates is therefore drawn here:

* `stratified` (the default): classification tasks keep each gold label's share of the split
  (largest-remainder quotas, so each label is within one example of exact); tasks whose
  examples come in groups (the questions of one headline, the turns of one FinQA document)
  are sampled a whole group at a time, since the examples of one group are not independent;
  other tasks get a simple random sample.
* `random`: a simple random sample.
* `head`: the first N, the old behaviour, available only by name.

The draw depends only on (seed, task id, split), never on the model or run, so every run and
every model of a sweep is scored on the same rows, and test and validation are drawn
independently. `Sample.sha256` identifies the rows; run cards and the results store carry it
so that scores computed on different rows are never compared.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from fincocktail.tasks.base import Example

if TYPE_CHECKING:  # numpy is imported where a sample is drawn: sweep plans and settings only name `SampleMethod`
    import numpy as np

SampleMethod = Literal["stratified", "random", "head"]
SAMPLE_METHODS: tuple[str, ...] = ("stratified", "random", "head")
CLASSIFICATION_KINDS = ("classification", "multiple_choice")


@dataclass(frozen=True)
class Sample:
    """The rows of one (task, split) that are evaluated, and how they were drawn."""

    examples: list[Example]
    method: str  # stratified-label / stratified-group / random / head / all
    seed: int
    population: int

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def sha256(self) -> str:
        return sample_sha256(self.ids)

    def describe(self) -> dict[str, object]:
        """What the run card and metrics files record about the sample."""
        return {"method": self.method, "seed": self.seed, "n": len(self.examples),
                "population": self.population, "sha256": self.sha256}


def sample_sha256(ids: Sequence[str]) -> str:
    """sha256 of the sorted ids: the same rows give the same hash in any order."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode("utf-8")).hexdigest()


def _rng(seed: int, task_id: str, split: str) -> np.random.Generator:
    import numpy as np

    digest = hashlib.sha256(f"fincocktail-sample/{seed}/{task_id}/{split}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


GROUPED_RATIO = 0.8


def _has_groups(examples: Sequence[Example]) -> bool:
    """Whether the split comes in real groups (headlines, documents: 1.25+ examples a group on average).

    A few repeated texts (FPB's duplicate sentences share a group so that they never straddle
    train and test) do not make a task grouped: it is stratified by label instead.
    """
    groups = {e.group for e in examples if e.group is not None}
    return bool(groups) and len(groups) <= GROUPED_RATIO * len(examples)


def label_quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder quotas: each stratum gets floor or ceil of its exact share n * c / N."""
    total = sum(counts.values())
    exact = {k: n * c / total for k, c in counts.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    left = n - sum(quotas.values())
    # ties broken by the stratum name so the allocation is deterministic
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[:left]:
        quotas[k] += 1
    return quotas


def draw_sample(
    examples: Sequence[Example],
    n: int | None,
    *,
    task_id: str,
    split: str,
    kind: str = "",
    seed: int = 0,
    method: SampleMethod = "stratified",
) -> Sample:
    """The `n` examples to evaluate (all of them when `n` is None or not smaller than the split).

    The result keeps the split's order, so a sample reads like the file it came from.
    """
    if method not in SAMPLE_METHODS:
        raise ValueError(f"unknown sample method {method!r}; expected one of {', '.join(SAMPLE_METHODS)}")
    population = len(examples)
    if n is None or n >= population:
        return Sample(list(examples), "all", seed, population)
    if method == "head":
        return Sample(list(examples[:n]), "head", seed, population)
    rng = _rng(seed, task_id, split)
    if method == "random":
        chosen = rng.choice(population, size=n, replace=False)
        label = "random"
    elif _has_groups(examples):
        chosen = _group_sample(examples, n, rng)
        label = "stratified-group"
    elif kind in CLASSIFICATION_KINDS:
        chosen = _label_sample(examples, n, rng)
        label = "stratified-label"
    else:
        chosen = rng.choice(population, size=n, replace=False)
        label = "random"
    return Sample([examples[i] for i in sorted(int(i) for i in chosen)], label, seed, population)


def _label_sample(examples: Sequence[Example], n: int, rng: np.random.Generator) -> list[int]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_label[e.target].append(i)
    quotas = label_quotas({k: len(v) for k, v in by_label.items()}, n)
    chosen: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        chosen.extend(int(i) for i in rng.choice(idx, size=quotas[label], replace=False))
    return chosen


def _group_sample(examples: Sequence[Example], n: int, rng: np.random.Generator) -> list[int]:
    """Whole groups in a seeded random order until `n` examples; the last group may be cut."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_group[e.group if e.group is not None else f"\0{e.id}"].append(i)
    names = sorted(by_group)
    chosen: list[int] = []
    for g in rng.permutation(len(names)):
        chosen.extend(by_group[names[int(g)]][: n - len(chosen)])
        if len(chosen) >= n:
            break
    return chosen
