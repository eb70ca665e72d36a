"""Findings: the study's four claims, each tested per task with a verdict a reader can trust.

The claims (arXiv 2410.01109):
  (a) a cocktail of related tasks beats fine-tuning on the target task alone;
  (b) general instruction data acts as a regularizer (adding it does not hurt, and helps);
  (c) math data improves numerical reasoning (FinQA, ConvFinQA, GSM8K);
  (d) task fine-tuning does not raise broad domain knowledge (CFA, FinanceBench).

Each claim becomes one paired contrast per task: recipe A minus recipe B on the same test rows
(the store refuses scores from different samples). The contrasts are fixed by the design, not
picked after looking at test scores:
  (a) the largest plain cocktail containing the task  vs  the task's single-task recipe;
  (b) the largest cocktail that has a +general variant  vs  the same cocktail without it;
  (c) the largest cocktail that has a +math variant  vs  the same cocktail without it;
  (d) the largest plain cocktail  vs  the zero-shot base model.

How sure: the effect is the difference of the two recipes' mean scores over their seeds. Its
variance adds the two sources of noise: seed to seed (the between-seed variance of each
recipe's score, divided by its number of seeds; a one-seed recipe borrows the pooled
between-seed variance of the task's other recipes; the zero-shot base has no seed and adds none) and test sample (the variance of the
per-example paired differences of seed-averaged correctness, divided by the number of
examples; for metrics that are not a mean over examples, such as headline's average F1, the
per-example correctness stands in for it). A normal approximation gives the 95% interval and a two-sided p-value; the p-values
of all contrasts of a report form one family, adjusted by Holm's step-down method. A verdict
needs an adjusted p < 0.05; otherwise it is *inconclusive*, with the number of test examples
that would make the observed effect detectable (80% power at the Bonferroni level, the
conservative end of Holm's).

Claim (d) predicts *no gain*, which a non-significant difference cannot show. It is tested
for non-superiority: supported when the gain is shown to be below NON_SUPERIORITY_MARGIN
(one-sided, adjusted in the same family), contradicted when the 95% interval lies above 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, variance
from typing import Literal, Sequence

import numpy as np
from scipy.stats import norm

from fincocktail.report.analysis import Analysis, _correct_by_id
from fincocktail.report.records import UNTRAINED_KINDS, RunRecord
from fincocktail.tasks.builtin import KNOWLEDGE_TASKS, NUMERICAL_TASKS

ALPHA = 0.05
POWER = 0.8
NON_SUPERIORITY_MARGIN = 0.03  # claim (d): a gain below 3 points of the metric counts as "no gain"
Verdict = Literal["supported", "contradicted", "inconclusive"]

CLAIMS: dict[str, str] = {
    "a": "A cocktail of related tasks beats single-task fine-tuning",
    "b": "General instruction data acts as a regularizer",
    "c": "Math data improves numerical reasoning",
    "d": "Task fine-tuning does not raise domain knowledge",
}


@dataclass(frozen=True)
class Contrast:
    """One paired comparison behind a verdict: recipe A minus recipe B on one task's test rows."""

    claim: str
    task: str
    recipe: str
    reference: str
    effect: float
    se: float
    low: float
    high: float
    p: float  # the family's p-value: two-sided (a-c), non-superiority (d)
    p_holm: float = float("nan")
    verdict: Verdict = "inconclusive"
    n_examples: int = 0
    seeds: tuple[int, int] = (0, 0)
    runs: tuple[str, ...] = ()
    seed_variance: str = "measured"  # measured / pooled / none (one seed and nothing to pool)
    needed_examples: int | None = None  # inconclusive: test examples that would settle it
    same_score: float | None = None  # every run of both recipes got this score on every row (a floor or ceiling)
    needed_seeds: int | None = None  # inconclusive with seeds the limit: seeds per trained recipe that would settle it


@dataclass(frozen=True)
class Findings:
    contrasts: list[Contrast]
    untested: dict[str, str]  # claim -> why this sweep cannot test it
    family_size: int

    def for_claim(self, claim: str) -> list[Contrast]:
        return [c for c in self.contrasts if c.claim == claim]

    def summary(self, claim: str) -> str:
        if claim in self.untested:
            return f"not tested: {self.untested[claim]}"
        cs = self.for_claim(claim)
        counts = {v: [c.task + (f" (every run {c.same_score:.3f})" if c.same_score is not None else "") for c in cs if c.verdict == v]
                  for v in ("supported", "contradicted", "inconclusive")}
        return "; ".join(f"{v} on {', '.join(ts)}" for v, ts in counts.items() if ts)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_variance(a: list[dict[str, float]], b: list[dict[str, float]]) -> tuple[float, int]:
    """(variance of the mean paired difference over test examples, number of common examples).

    Each side is a list of per-run {example id: correctness}; runs of one recipe are averaged
    per example first, so this is the test-sample part of the variance of mean(A) - mean(B).
    """
    ids = sorted(set.intersection(*(set(r) for r in a + b)))
    if len(ids) < 2:
        return float("nan"), len(ids)
    d = np.array([mean(r[i] for r in a) - mean(r[i] for r in b) for i in ids])
    return float(np.var(d, ddof=1) / len(ids)), len(ids)


def needed_examples(effect: float, seed_part: float, sample_var_per_example: float, z_needed: float) -> int | None:
    """Test examples at which `effect` would be detected with the given seeds (None: seeds are the limit)."""
    if effect == 0 or sample_var_per_example <= 0:
        return None
    target = (abs(effect) / z_needed) ** 2  # the variance the estimate would need
    room = target - seed_part
    if room <= 0:
        return None
    return int(math.ceil(sample_var_per_example / room))


MAX_SEEDS = 50  # beyond this, "more seeds" is no plan: the contrast is reported without a seed count


def needed_seeds(effect: float, seed_variance_sum: float, sample_part: float, z_needed: float, have: int) -> int | None:
    """Seeds per trained recipe at which `effect` would be detected, the test rows unchanged.

    `seed_variance_sum` is the between-seed variance of one run's score summed over the trained
    sides (the seed part of the variance is that over the number of seeds); None when the test
    sample alone is too noisy, or more than MAX_SEEDS would be needed.
    """
    if effect == 0 or seed_variance_sum <= 0:
        return None
    room = (abs(effect) / z_needed) ** 2 - sample_part
    if room <= 0:
        return None
    k = max(have + 1, math.ceil(seed_variance_sum / room))
    return k if k <= MAX_SEEDS else None


class _Tester:
    def __init__(self, an: Analysis):
        self.an = an
        self._pooled: dict[str, float | None] = {}

    def values(self, runs: list[RunRecord], task: str) -> list[tuple[RunRecord, float, Path | None]]:
        out = []
        for r in runs:
            m = self.an.metric(r.run_id, task)
            if m is not None:
                out.append((r, m.value, m.predictions))
        return out

    def pooled_seed_variance(self, task: str) -> float | None:
        """Between-seed variance of a task's score, pooled over the recipes with 2+ seeds."""
        if task not in self._pooled:
            num = den = 0.0
            for runs in self.an.recipes.values():
                vals = [v for _, v, _ in self.values(runs, task)]
                if len(vals) >= 2:
                    num += variance(vals) * (len(vals) - 1)
                    den += len(vals) - 1
            self._pooled[task] = num / den if den else None
        return self._pooled[task]

    def contrast(self, claim: str, task: str, rec: tuple, ref: tuple) -> tuple[Contrast, tuple[float, float, float]] | None:
        """The contrast, and (seed part of its variance, per-example variance of the paired differences,
        one run's between-seed variance summed over the trained sides)."""
        a = self.values(self.an.recipes[rec], task)
        b = self.values(self.an.recipes[ref], task)
        if not a or not b:
            return None
        effect = mean(v for _, v, _ in a) - mean(v for _, v, _ in b)
        seed_part, seed_sum, how = 0.0, 0.0, "measured"
        pooled = self.pooled_seed_variance(task)
        for side in (a, b):
            if all(r.kind in UNTRAINED_KINDS for r, _, _ in side):
                continue  # nothing was trained: a zero-shot model has no seed to vary, only its test sample
            if len(side) >= 2:
                v = variance([v for _, v, _ in side])
                seed_part += v / len(side)
                seed_sum += v
            elif pooled is not None:
                seed_part += pooled
                seed_sum += pooled
                how = "pooled"
            else:
                how = "none"
        per_run_a = [_correct_by_id(p) for _, _, p in a]
        per_run_b = [_correct_by_id(p) for _, _, p in b]
        if any(x is None for x in per_run_a + per_run_b):
            sample_part, n = float("nan"), 0
        else:
            sample_part, n = paired_variance(per_run_a, per_run_b)  # type: ignore[arg-type]
        se = math.sqrt(seed_part + (sample_part if not math.isnan(sample_part) else 0.0))
        same: float | None = None
        z = norm.ppf(1 - ALPHA / 2)
        measured = n > 0 or how == "measured"
        if not se > 0 and not measured:  # no per-example files and no seed spread: nothing to measure the noise by
            p, how = 1.0, "none"
        elif not se > 0:  # measured, and no noise at all: every run gave the same answers
            p = float(effect >= NON_SUPERIORITY_MARGIN) if claim == "d" else float(effect == 0)
            if effect == 0:
                same = mean(v for _, v, _ in b)
        elif claim == "d":
            p = float(norm.cdf((effect - NON_SUPERIORITY_MARGIN) / se))
        else:
            p = float(2 * norm.sf(abs(effect) / se))
        return Contrast(
            claim=claim, task=task, recipe=self.an.recipe_label(rec), reference=self.an.recipe_label(ref),
            effect=effect, se=se, low=effect - z * se, high=effect + z * se, p=p, n_examples=n,
            seeds=(len(a), len(b)), runs=tuple(r.run_id for r, _, _ in a + b), seed_variance=how, same_score=same,
        ), (seed_part, sample_part * n if n else 0.0, seed_sum)


def _largest(an: Analysis, recipes: list[tuple]) -> tuple | None:
    """The recipe with the most training tasks (then the most seeds): the design's main cocktail."""
    if not recipes:
        return None
    return max(recipes, key=lambda r: (len(r[2]), len(an.recipes[r]), r[2]))


def _plain(rec: tuple) -> tuple:
    return (rec[0], rec[1], rec[2], 0.0, 0.0)


def findings(an: Analysis) -> Findings:
    """Every claim's contrasts with Holm-adjusted verdicts (see the module docstring)."""
    tester = _Tester(an)
    raw: list[tuple[Contrast, tuple[float, float, float]]] = []
    untested: dict[str, str] = {}

    def add(claim: str, task: str, rec: tuple | None, ref: tuple | None) -> None:
        if rec is None or ref is None or rec not in an.recipes or ref not in an.recipes:
            return
        got = tester.contrast(claim, task, rec, ref)
        if got is not None:
            raw.append(got)

    financial = an.financial_eval_tasks
    # (a) cocktail vs single-task, per task
    for task in financial:
        singles = an.recipes_of("single", single_of=task, general=False, math_=False)
        cocktails = an.recipes_of("cocktail", task=task, general=False, math_=False)
        if singles and cocktails:
            add("a", task, _largest(an, cocktails), singles[0])
    if not any(c.claim == "a" for c, _ in raw):
        untested["a"] = "needs a single-task run and a cocktail containing the same task"
    # (b), (c): a booster variant vs the same cocktail without it
    for claim, booster, tasks in (("b", "general", financial), ("c", "math", [t for t in an.eval_tasks if t in NUMERICAL_TASKS])):
        variants = an.recipes_of("cocktail", general=booster == "general", math_=booster == "math")
        boosted = _largest(an, [r for r in variants if _plain(r) in an.recipes])
        if boosted is None or not tasks:
            untested[claim] = (f"needs a cocktail with and without {booster} data" if boosted is None
                               else "needs a numerical-reasoning task (finqa, convfinqa, gsm8k) in the evaluation")
            continue
        for task in tasks:
            add(claim, task, boosted, _plain(boosted))
        if not any(c.claim == claim for c, _ in raw):
            untested[claim] = "the boosted cocktail was not evaluated on these tasks"
    # (d) the main cocktail vs the base model on the knowledge tasks
    base = an.recipes_of("base")
    main = _largest(an, an.recipes_of("cocktail", general=False, math_=False)) or _largest(an, an.recipes_of("single"))
    knowledge = [t for t in an.eval_tasks if t in KNOWLEDGE_TASKS]
    if base and main and knowledge:
        for task in knowledge:
            add("d", task, main, base[0])
    if not any(c.claim == "d" for c, _ in raw):
        untested["d"] = "needs the zero-shot base and a fine-tuned run evaluated on cfa / financebench"

    adjusted = holm([c.p for c, _ in raw]) if raw else []
    m = max(1, len(raw))
    z_needed = norm.ppf(1 - ALPHA / (2 * m)) + norm.ppf(POWER)
    out: list[Contrast] = []
    for (c, (seed_part, per_example_var, seed_sum)), p_adj in zip(raw, adjusted):
        verdict: Verdict = "inconclusive"
        if c.claim == "d":
            if p_adj < ALPHA:
                verdict = "supported"
            elif c.low > 0:
                verdict = "contradicted"
            distance = NON_SUPERIORITY_MARGIN - c.effect  # how far the effect is from the margin it must beat
        else:
            if p_adj < ALPHA:
                verdict = "supported" if c.effect > 0 else "contradicted"
            distance = c.effect
        needed = seeds = None
        if verdict == "inconclusive" and (c.claim != "d" or distance > 0):
            needed = needed_examples(distance, seed_part, per_example_var, z_needed)
            if needed is None and c.n_examples:
                seeds = needed_seeds(distance, seed_sum, per_example_var / c.n_examples, z_needed, max(c.seeds))
        out.append(Contrast(**{**c.__dict__, "p_holm": p_adj, "verdict": verdict, "needed_examples": needed,
                               "needed_seeds": seeds}))
    return Findings(out, untested, len(raw))
