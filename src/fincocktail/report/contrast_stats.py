"""How sure a contrast between two recipes is: seed noise and test-sample noise, paired by seed.

Two sources of noise move a recipe's test score: the seed (LoRA initialisation, data order,
dropout) and the test sample (which rows were drawn). A contrast of recipe A against recipe B on
the same rows adds both:

- **Paired by seed** (both recipes trained on the same seeds): runs of one seed share their LoRA
  initialisation and each task's example draw, so an unlucky seed drags both recipes down
  together. The seed part is the variance of the per-seed differences over the number of seeds;
  the shared part cancels. Measured on SmolLM2 FPB (issue 29): paired standard error 0.022
  against 0.052 unpaired on the gold probability.
- **Unpaired** (different seed sets, or a zero-shot side with no seed): each trained side adds its
  between-seed variance over its number of seeds; a one-seed side borrows the task's pooled
  between-seed variance when the sweep measured one, and otherwise its seed noise is *not
  measured* (no verdict can rest on it).

The test-sample part is the variance of the per-example paired differences of seed-averaged
values over the number of examples. The reference distribution is Student's t with
Welch-Satterthwaite degrees of freedom over the parts (seeds - 1 for a paired seed part, n - 1
for the sample part), so three seeds are not read as if they were thirty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, variance
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy.stats import t as student_t

Design = Literal["paired", "unpaired", "zero-shot"]
SeedNoise = Literal["measured", "pooled", "none"]


@dataclass(frozen=True)
class Side:
    """One recipe's runs on one task: per seed, the score and the per-example values."""

    scores: Mapping[int, float]  # seed -> the run's score
    examples: Sequence[Mapping[str, float]] | None  # per run {example id: value}; None: no per-example file
    trained: bool = True  # False for a zero-shot model: no seed to vary


@dataclass(frozen=True)
class ContrastStats:
    effect: float
    seed_part: float  # variance of the effect from seed to seed
    sample_part: float  # variance of the effect from the test sample
    n_examples: int
    df: float
    design: Design
    seed_noise: SeedNoise
    seed_variance_sum: float  # seed part x seeds: per-seed differences' variance (paired), or the sides' summed (for needed_seeds)
    per_example_variance: float  # variance of one paired per-example difference (for needed_examples)

    @property
    def se(self) -> float:
        return math.sqrt(self.seed_part + self.sample_part)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if not self.se > 0:
            return self.effect, self.effect
        half = float(student_t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.effect - half, self.effect + half

    def p_two_sided(self) -> float:
        if not self.se > 0:
            return float(self.effect == 0)
        return float(2 * student_t.sf(abs(self.effect) / self.se, self.df))

    def p_below(self, margin: float) -> float:
        """One-sided p of 'the effect is at least `margin`' (non-superiority: small p = shown below it)."""
        if not self.se > 0:
            return float(self.effect >= margin)
        return float(student_t.cdf((self.effect - margin) / self.se, self.df))


def sample_variance(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]]) -> tuple[float, float, int]:
    """(variance of the mean paired difference, variance of one difference, number of common examples).

    Runs of one side are averaged per example first, so this is the test-sample part of the
    variance of mean(A) - mean(B).
    """
    ids = sorted(set.intersection(*(set(r) for r in [*a, *b])))
    if len(ids) < 2:
        return float("nan"), float("nan"), len(ids)
    d = np.array([mean(r[i] for r in a) - mean(r[i] for r in b) for i in ids])
    per = float(np.var(d, ddof=1))
    return per / len(ids), per, len(ids)


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Effective degrees of freedom of a sum of variance parts, each (variance, its df)."""
    total = sum(v for v, _ in parts)
    den = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    if total <= 0 or den <= 0:
        return math.inf
    return total * total / den


def contrast(a: Side, b: Side, pooled: tuple[float, float] | None = None, pair: bool = True) -> ContrastStats:
    """A minus B, paired by seed where both trained on the same two or more seeds (and `pair`).

    `pooled` is the task's (pooled between-seed variance, its df), borrowed by a one-seed side;
    `pair=False` forces the unpaired variance (what the noise bench compares pairing with).
    """
    common = sorted(set(a.scores) & set(b.scores))
    paired = pair and a.trained and b.trained and len(common) >= 2 and set(a.scores) == set(b.scores)
    parts: list[tuple[float, float]] = []
    seed_sum, noise = 0.0, "measured"
    if paired:
        diffs = [a.scores[s] - b.scores[s] for s in common]
        effect = mean(diffs)
        seed_part = variance(diffs) / len(diffs)
        seed_sum = variance(diffs)  # k seeds per recipe: a seed part of this over k
        parts.append((seed_part, len(diffs) - 1))
        design: Design = "paired"
    else:
        effect = mean(a.scores.values()) - mean(b.scores.values())
        seed_part = 0.0
        design = "unpaired" if a.trained and b.trained else "zero-shot"
        for side in (a, b):
            if not side.trained:
                continue  # a zero-shot model has no seed to vary, only its test sample
            vals = list(side.scores.values())
            if len(vals) >= 2:
                v = variance(vals)
                part = (v / len(vals), float(len(vals) - 1))
            elif pooled is not None:
                v = pooled[0]
                part = (v, pooled[1])
                noise = "pooled" if noise == "measured" else noise
            else:
                noise = "none"
                continue
            parts.append(part)
            seed_part += part[0]
            seed_sum += v
    if a.examples is not None and b.examples is not None:
        sample_part, per_example, n = sample_variance(a.examples, b.examples)
    else:
        sample_part, per_example, n = float("nan"), float("nan"), 0
    if not math.isnan(sample_part):
        parts.append((sample_part, n - 1))
    else:
        sample_part = 0.0
    return ContrastStats(
        effect=effect, seed_part=seed_part, sample_part=sample_part, n_examples=n, df=satterthwaite(parts),
        design=design, seed_noise=noise, seed_variance_sum=seed_sum,
        per_example_variance=per_example if not math.isnan(per_example) else 0.0,
    )


def pooled_seed_variance(groups: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """(between-seed variance pooled over the groups with two or more seeds, its df); None if none has."""
    num = den = 0.0
    for vals in groups:
        if len(vals) >= 2:
            num += variance(vals) * (len(vals) - 1)
            den += len(vals) - 1
    return (num / den, den) if den else None


__all__ = ["ContrastStats", "Side", "contrast", "pooled_seed_variance", "sample_variance", "satterthwaite"]
