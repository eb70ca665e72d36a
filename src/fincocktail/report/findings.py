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

How sure (`report.contrast_stats`): the effect is the difference of the two recipes' mean
scores over their seeds. Where both recipes were trained on the same seeds the contrast is
*paired by seed* (the variance of the per-seed differences over the seeds: what one seed does to
both recipes cancels); otherwise (different seed sets, the zero-shot base) each trained side adds
its between-seed variance over its seeds, and a one-seed recipe borrows the task's pooled
between-seed variance. Both add the test-sample part (the per-example paired differences of
seed-averaged values over the examples). The reference is Student's t with Welch-Satterthwaite
degrees of freedom; the p-values of all contrasts of a report form one family, adjusted by
Holm's step-down method. A verdict needs an adjusted p < 0.05 *and* measured seed noise: a
one-seed recipe with nothing to pool from is "inconclusive: seed noise not measured", whatever
its p. Otherwise it is *inconclusive*, with the test examples (or seeds) that would make the
observed effect detectable (80% power at the Bonferroni level, the conservative end of Holm's).

Every contrast is computed on two metrics: the task's primary metric (the study's) and the
likelihood metric (`metrics.likelihood`: the gold choice's probability, or the gold answer's
log-likelihood per token), each in its own Holm family. Verdicts of claims (a)-(c) rest on the
likelihood metric where every run has it (DECISION_METRIC): on real runs its paired seed and
sample parts were several times smaller than accuracy's (docs/results.md), so it decides with
the runs a CPU can afford. Claim (d) rests on the primary metric, whose points its margin is in.

Claim (d) predicts *no gain*, which a non-significant difference cannot show. It is tested
for non-superiority: supported when the gain is shown to be below NON_SUPERIORITY_MARGIN
(one-sided, adjusted in the same family), contradicted when the 95% interval lies above 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from statistics import mean
from typing import Literal, Sequence

from scipy.stats import norm
from scipy.stats import t as student_t

from fincocktail.report.analysis import Analysis, MetricKind
from fincocktail.report.contrast_stats import ContrastStats, contrast
from fincocktail.tasks.builtin import KNOWLEDGE_TASKS, NUMERICAL_TASKS

ALPHA = 0.05
POWER = 0.8
NON_SUPERIORITY_MARGIN = 0.03  # claim (d): a gain below 3 points of the metric counts as "no gain"
Verdict = Literal["supported", "contradicted", "inconclusive"]
DECISION_METRIC: MetricKind = "likelihood"
"""What verdicts of claims (a)-(c) rest on by default (module docstring; docs/results.md measures why)."""

CLAIMS: dict[str, str] = {
    "a": "A cocktail of related tasks beats single-task fine-tuning",
    "a'": "... also at matched optimizer steps (a data effect, not a steps effect)",
    "b": "General instruction data acts as a regularizer",
    "c": "Math data improves numerical reasoning",
    "d": "Task fine-tuning does not raise domain knowledge",
}
METRIC_LABELS = {"gold_prob": "gold prob", "gold_logprob_per_token": "gold log-lik/token"}


@dataclass(frozen=True)
class Contrast:
    """One comparison behind a verdict: recipe A minus recipe B on one task's test rows, on one metric."""

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
    metric: str = ""  # the metric's name (accuracy, gold_prob, ...)
    kind: MetricKind = "primary"
    design: str = "unpaired"  # paired / unpaired / zero-shot (contrast_stats.Design)
    df: float = math.inf
    seed_se: float = 0.0  # the seed part of the standard error
    sample_se: float = 0.0  # the test-sample part
    other: Contrast | None = None  # the same contrast on the other metric (its own Holm family)

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)

    @property
    def why_inconclusive(self) -> str:
        if self.verdict != "inconclusive":
            return ""
        if self.seed_variance == "none":
            return "seed noise not measured"
        if self.same_score is not None:
            return f"floor: every run {self.same_score:.3f} on the same rows"
        if self.needed_examples:
            return f"needs ~{self.needed_examples:,} test examples"
        if self.needed_seeds:
            return f"needs ~{self.needed_seeds} seeds per recipe"
        return "beyond 50 seeds"


@dataclass(frozen=True)
class Findings:
    contrasts: list[Contrast]  # the verdict-bearing contrasts, each with `other` on the other metric
    untested: dict[str, str]  # claim -> why this sweep cannot test it
    family_size: int
    decision: MetricKind = DECISION_METRIC
    families: dict[str, int] = field(default_factory=dict)  # metric kind -> contrasts in its Holm family

    def for_claim(self, claim: str) -> list[Contrast]:
        return [c for c in self.contrasts if c.claim == claim]

    def summary(self, claim: str) -> str:
        if claim in self.untested:
            return f"not tested: {self.untested[claim]}"
        cs = self.for_claim(claim)
        counts = {v: [c.task + (f" (every run {c.same_score:.3f})" if c.same_score is not None else "")
                      + ("" if c.verdict != "inconclusive" or c.seed_variance != "none" else " (seed noise not measured)")
                      for c in cs if c.verdict == v]
                  for v in ("supported", "contradicted", "inconclusive")}
        text = "; ".join(f"{v} on {', '.join(ts)}" for v, ts in counts.items() if ts)
        metrics = sorted({c.metric_label for c in cs})
        others = [c.other for c in cs if c.other is not None]
        if others:
            o = {v: [c.task for c in others if c.verdict == v] for v in ("supported", "contradicted")}
            beside = "; ".join(f"{v} on {', '.join(ts)}" for v, ts in o.items() if ts) or "nothing decided"
            text += f" [on {', '.join(metrics)}; {others[0].metric_label}: {beside}]"
        return text


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


def needed_seeds(effect: float, seed_variance_sum: float, sample_part: float, z_needed: float, have: int,
                 family: int | None = None) -> int | None:
    """Seeds per trained recipe at which `effect` would be detected, the test rows unchanged.

    `seed_variance_sum` is the seed part of the variance times the number of seeds (the variance
    of the per-seed differences when paired); None when the test sample alone is too noisy, or
    more than MAX_SEEDS would be needed. With `family` (the Holm family's size) the detection
    threshold is read from Student's t at seeds - 1 degrees of freedom, as the verdict reads it;
    otherwise from `z_needed`.
    """
    if effect == 0 or seed_variance_sum <= 0:
        return None
    if (abs(effect) / z_needed) ** 2 - sample_part <= 0:
        return None
    for k in range(have + 1, MAX_SEEDS + 1):
        z = z_needed if family is None else float(
            student_t.ppf(1 - ALPHA / (2 * family), k - 1) + student_t.ppf(POWER, k - 1))
        if math.sqrt(seed_variance_sum / k + sample_part) * z <= abs(effect):
            return k
    return None


class Tester:
    """Turns recipe pairs into contrasts on one metric kind (the runs' values: `Analysis.side`)."""

    def __init__(self, an: Analysis, kind: MetricKind = "primary"):
        self.an = an
        self.kind = kind

    def contrast(self, claim: str, task: str, rec: tuple, ref: tuple) -> tuple[Contrast, ContrastStats] | None:
        """The contrast (before Holm) and the statistics behind it."""
        a = self.an.side(self.an.recipes[rec], task, self.kind)
        b = self.an.side(self.an.recipes[ref], task, self.kind)
        if a is None or b is None:
            return None
        st = contrast(a[1], b[1], self.an.pooled_seed_variance(task, self.kind))
        same: float | None = None
        low, high = st.interval(1 - ALPHA)
        measured = st.n_examples > 0 or st.seed_noise == "measured"
        how = st.seed_noise if measured else "none"
        if not st.se > 0 and not measured:  # no per-example files and no seed spread: nothing to measure the noise by
            p = 1.0
        elif claim == "d":
            p = st.p_below(NON_SUPERIORITY_MARGIN)
        else:
            p = st.p_two_sided()
        if not st.se > 0 and measured and st.effect == 0:  # every run gave the same answers
            same = mean(b[1].scores.values())
        return Contrast(
            claim=claim, task=task, recipe=self.an.recipe_label(rec), reference=self.an.recipe_label(ref),
            effect=st.effect, se=st.se, low=low, high=high, p=p, n_examples=st.n_examples,
            seeds=(len(a[1].scores), len(b[1].scores)), runs=tuple(r.run_id for r in a[2] + b[2]),
            seed_variance=how, same_score=same, metric=a[0], kind=self.kind, design=st.design, df=st.df,
            seed_se=math.sqrt(st.seed_part), sample_se=math.sqrt(st.sample_part),
        ), st


def _largest(an: Analysis, recipes: list[tuple]) -> tuple | None:
    """The recipe with the most training tasks (then the most seeds): the design's main cocktail."""
    if not recipes:
        return None
    return max(recipes, key=lambda r: (len(r[2]), len(an.recipes[r]), r[2]))


def _plain(rec: tuple) -> tuple:
    return (rec[0], rec[1], rec[2], 0.0, 0.0)


def design_pairs(an: Analysis) -> tuple[list[tuple[str, str, tuple, tuple]], dict[str, str]]:
    """The contrasts the design fixes before any score is seen: (claim, task, recipe, reference), and
    the claims it cannot test with why."""
    pairs: list[tuple[str, str, tuple, tuple]] = []
    untested: dict[str, str] = {}
    financial = an.financial_eval_tasks
    for task in financial:  # (a) cocktail vs single-task, per task
        singles = an.recipes_of("single", single_of=task, general=False, math_=False)
        cocktails = an.recipes_of("cocktail", task=task, general=False, math_=False)
        if singles and cocktails:
            pairs.append(("a", task, _largest(an, cocktails), singles[0]))  # type: ignore[arg-type]
    if not any(p[0] == "a" for p in pairs):
        untested["a"] = "needs a single-task run and a cocktail containing the same task"
    for task in financial:  # (a) at matched steps: the cocktail vs its task trained for as many steps
        for matched in an.recipes_of("matched", single_of=task, general=False, math_=False):
            target = an.recipes[matched][0].matched_to
            cocktail = next((r for r in an.recipes_of("cocktail", task=task, general=False, math_=False)
                             if an.recipe_label(r) == target), None)
            if cocktail is not None:
                pairs.append(("a'", task, cocktail, matched))
    if not any(p[0] == "a'" for p in pairs):
        untested["a'"] = "needs single-task runs trained for the cocktail's steps (design.matched_steps: true)"
    # (b), (c): a booster variant vs the same cocktail without it
    for claim, booster, tasks in (("b", "general", financial), ("c", "math", [t for t in an.eval_tasks if t in NUMERICAL_TASKS])):
        variants = an.recipes_of("cocktail", general=booster == "general", math_=booster == "math")
        boosted = _largest(an, [r for r in variants if _plain(r) in an.recipes])
        if boosted is None or not tasks:
            untested[claim] = (f"needs a cocktail with and without {booster} data" if boosted is None
                               else "needs a numerical-reasoning task (finqa, convfinqa, gsm8k) in the evaluation")
            continue
        pairs += [(claim, task, boosted, _plain(boosted)) for task in tasks]
    # (d) the main cocktail vs the base model on the knowledge tasks
    base = an.recipes_of("base")
    main = _largest(an, an.recipes_of("cocktail", general=False, math_=False)) or _largest(an, an.recipes_of("single"))
    knowledge = [t for t in an.eval_tasks if t in KNOWLEDGE_TASKS]
    if base and main and knowledge:
        pairs += [("d", task, main, base[0]) for task in knowledge]
    return pairs, untested


def _verdicts(raw: list[tuple[Contrast, ContrastStats]]) -> list[Contrast]:
    """Holm over one family, then each contrast's verdict and what would settle it."""
    adjusted = holm([c.p for c, _ in raw]) if raw else []
    m = max(1, len(raw))
    z_needed = norm.ppf(1 - ALPHA / (2 * m)) + norm.ppf(POWER)
    out: list[Contrast] = []
    for (c, st), p_adj in zip(raw, adjusted):
        verdict: Verdict = "inconclusive"
        if c.seed_variance == "none":
            pass  # a verdict whose seed noise was not measured is not a verdict
        elif c.claim == "d":
            if p_adj < ALPHA:
                verdict = "supported"
            elif c.low > 0:
                verdict = "contradicted"
        elif p_adj < ALPHA:
            verdict = "supported" if c.effect > 0 else "contradicted"
        distance = NON_SUPERIORITY_MARGIN - c.effect if c.claim == "d" else c.effect
        needed = seeds = None
        if verdict == "inconclusive" and c.seed_variance != "none" and (c.claim != "d" or distance > 0):
            # more test rows leave the seeds' degrees of freedom as they are: read t there, not z
            z_rows = float(student_t.ppf(1 - ALPHA / (2 * m), st.df) + student_t.ppf(POWER, st.df))
            needed = needed_examples(distance, st.seed_part, st.per_example_variance, z_rows)
            if needed is None and c.n_examples:
                seeds = needed_seeds(distance, st.seed_variance_sum, st.sample_part, z_needed, max(c.seeds), family=m)
        out.append(replace(c, p_holm=p_adj, verdict=verdict, needed_examples=needed, needed_seeds=seeds))
    return out


def findings(an: Analysis, decision: MetricKind = DECISION_METRIC) -> Findings:
    """Every claim's contrasts on both metrics (see the module docstring).

    The verdict-bearing contrasts (the decision metric for (a)-(c), the primary metric for (d), the
    primary metric wherever the runs have no likelihood values) form one Holm family; the same
    contrasts on the other metric form a second family, shown beside them.
    """
    pairs, untested = design_pairs(an)
    testers = {kind: Tester(an, kind) for kind in ("primary", "likelihood")}
    lead_raw: list[tuple[Contrast, ContrastStats]] = []
    other_raw: list[tuple[Contrast, ContrastStats] | None] = []
    for claim, task, rec, ref in pairs:
        got = {kind: testers[kind].contrast(claim, task, rec, ref) for kind in ("primary", "likelihood")}
        lead_kind: MetricKind = "primary" if claim == "d" else decision
        if got[lead_kind] is None:  # no likelihood values (an API model, files from before the metric)
            lead_kind = "primary"
        lead = got[lead_kind]
        if lead is None:
            continue
        lead_raw.append(lead)
        other_raw.append(got["likelihood" if lead_kind == "primary" else "primary"])
    leads = _verdicts(lead_raw)
    present = [o for o in other_raw if o is not None]
    others = iter(_verdicts(present))
    out = [replace(c, other=next(others) if o is not None else None) for c, o in zip(leads, other_raw)]
    for claim in CLAIMS:
        if claim not in untested and not any(c.claim == claim for c in out):
            untested[claim] = {"d": "needs the zero-shot base and a fine-tuned run evaluated on cfa / financebench"}.get(
                claim, "the compared recipes were not evaluated on these tasks")
    return Findings(out, untested, len(out), decision, {"verdicts": len(out), "beside": len(present)})
