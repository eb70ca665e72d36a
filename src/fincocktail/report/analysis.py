"""The numbers behind the report: selection on validation, scores on test, deltas with intervals.

Rules, stated once here and in the report:
- A "recipe" is a run config without its seed; repeats of a recipe are averaged.
- Whenever the report picks a best recipe (best single-task, best cocktail, ...), it picks on the
  *validation* score of the task in question and reports that recipe's *test* score. If no
  validation score exists it falls back to test and says so.
- A cocktail's effect on task T is its test score on T minus the single-task (T only) recipe's,
  with the interval Findings gives such a pair (`contrast_stats`: seed and test-sample noise,
  paired by seed where both recipes share their seeds).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev
from typing import Iterable, Literal

import numpy as np

from fincocktail.metrics.likelihood import likelihood_by_id
from fincocktail.report.contrast_stats import Side, contrast, pooled_seed_variance
from fincocktail.report.records import UNTRAINED_KINDS, MetricRecord, ReportData, RunRecord
from fincocktail.tasks.builtin import FINANCIAL_TASKS, KNOWLEDGE_TASKS


@dataclass(frozen=True)
class Score:
    """A recipe's score on one task/split: mean over seeds with a 95% interval."""

    value: float
    low: float | None
    high: float | None
    n_seeds: int
    run_ids: tuple[str, ...]
    label: str = ""
    selected_on: str = "validation"  # "test" when recipes were ranked on test; "only" when there was no choice

    @property
    def test_selected(self) -> bool:
        return self.selected_on == "test"

    def fmt(self, digits: int = 3) -> str:
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Delta:
    task: str
    recipe: str
    reference: str
    value: float
    low: float
    high: float
    method: str  # the design: "paired", "unpaired" or "zero-shot" (contrast_stats.Design)
    seed_noise: str = "measured"  # measured / pooled / none (a one-seed side with nothing to pool)

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


SelectionMetric = Literal["primary", "likelihood"]
MetricKind = Literal["primary", "likelihood"]  # the task's primary metric, or the gold answer's likelihood


@dataclass(frozen=True)
class RunValues:
    """One run on one task and metric: the metric's name, the run's score, its per-example values."""

    metric: str
    score: float
    examples: dict[str, float] | None  # None: no per-example file to read


class Analysis:
    def __init__(self, data: ReportData, primary_metric: dict[str, str] | None = None, seed: int = 0,
                 selection: SelectionMetric = "primary"):
        self.data = data
        self.seed = seed
        self.selection = selection
        self._values: dict[tuple[str, str, str, str], RunValues | None] = {}  # (run, task, kind, split): files read once
        self._pooled: dict[tuple[str, str], tuple[float, float] | None] = {}
        self.primary = dict(primary_metric or {})
        for m in data.metrics:  # tasks without a declared metric use the first one seen
            self.primary.setdefault(m.task, m.metric)
        self._by_run_task: dict[tuple[str, str, str], MetricRecord] = {}
        for m in data.metrics:
            if m.metric == self.primary[m.task]:
                self._by_run_task[(m.run_id, m.task, m.split)] = m
        self.recipes: dict[tuple, list[RunRecord]] = defaultdict(list)
        for r in data.runs:
            self.recipes[r.recipe].append(r)

    # ----- basic lookups -------------------------------------------------------------------
    @property
    def eval_tasks(self) -> list[str]:
        seen = {m.task for m in self.data.metrics}
        ordered = [t for t in FINANCIAL_TASKS + KNOWLEDGE_TASKS if t in seen]
        return ordered + sorted(seen - set(ordered))

    @property
    def financial_eval_tasks(self) -> list[str]:
        return [t for t in self.eval_tasks if t not in KNOWLEDGE_TASKS]

    @property
    def knowledge_eval_tasks(self) -> list[str]:
        return [t for t in self.eval_tasks if t in KNOWLEDGE_TASKS]

    def metric(self, run_id: str, task: str, split: str = "test") -> MetricRecord | None:
        return self._by_run_task.get((run_id, task, split))

    def score(self, runs: Iterable[RunRecord], task: str, split: str = "test") -> Score | None:
        recs = [(r, self.metric(r.run_id, task, split)) for r in runs]
        recs = [(r, m) for r, m in recs if m is not None]
        if not recs:
            return None
        values = [m.value for _, m in recs]
        ids = tuple(r.run_id for r, _ in recs)
        if len(values) >= 2:
            half = _t_quantile(len(values) - 1) * stdev(values) / math.sqrt(len(values))
            return Score(mean(values), mean(values) - half, mean(values) + half, len(values), ids)
        m = recs[0][1]
        return Score(m.value, m.ci_low, m.ci_high, 1, ids)

    def recipe_label(self, recipe: tuple) -> str:
        return self.recipes[recipe][0].cocktail_name

    # ----- selection -----------------------------------------------------------------------
    def best(self, recipes: list[tuple], task: str) -> tuple[tuple, Score] | None:
        """The recipe with the best validation score on `task` (on `self.selection`'s metric), and its test score."""
        scored = []
        for rec in recipes:
            runs = self.recipes[rec]
            test = self.score(runs, task, "test")
            if test is None:
                continue
            val = self.score(runs, task, "validation")
            key = val.value if val is not None else test.value
            scored.append([val is not None, key, rec, test])
        if not scored:
            return None
        if self.selection == "likelihood":  # every candidate on the likelihood metric, or none of them
            liks = [self.validation_likelihood(self.recipes[s[2]], task) for s in scored]
            if all(v is not None for v in liks):
                for s, v in zip(scored, liks):
                    s[1] = v
        # Prefer recipes that have a validation score; never let a test-only score win over them.
        has_val = any(s[0] for s in scored)
        pool = [s for s in scored if s[0]] if has_val else scored
        _, _, rec, test = max(pool, key=lambda s: s[1])
        on = "validation" if has_val else ("test" if len(pool) > 1 else "only")
        return rec, Score(test.value, test.low, test.high, test.n_seeds, test.run_ids,
                          label=self.recipe_label(rec), selected_on=on)

    def validation_likelihood(self, runs: Iterable[RunRecord], task: str) -> float | None:
        """Mean over seeds of the runs' validation likelihood (metrics.likelihood, read from the predictions)."""
        values = [self.run_values(r, task, "likelihood", "validation") for r in runs]
        if not values or any(v is None for v in values):
            return None
        return mean(v.score for v in values)  # type: ignore[union-attr]

    # ----- per-run values on one metric kind (Findings, the delta tables, selection) -------
    def run_values(self, run: RunRecord, task: str, kind: MetricKind = "primary", split: str = "test") -> RunValues | None:
        """The run's score and per-example values on the primary or the likelihood metric.

        Cached: Findings, the delta tables and selection all read the same predictions files, and
        each is read once per metric kind.
        """
        key = (run.run_id, task, kind, split)
        if key not in self._values:
            m = self.metric(run.run_id, task, split)
            got = None
            if m is not None and kind == "primary":
                got = RunValues(m.metric, m.value, _correct_by_id(m.predictions))
            elif m is not None:
                lik = likelihood_by_id(m.predictions)
                if lik is not None:
                    got = RunValues(lik[0], mean(lik[1].values()), lik[1])
            self._values[key] = got
        return self._values[key]

    def side(self, runs: list[RunRecord], task: str, kind: MetricKind = "primary") -> tuple[str, Side, list[RunRecord]] | None:
        """(metric name, the recipe's `contrast_stats.Side`, the runs in it) on one metric kind."""
        got = [(r, v) for r in runs if (v := self.run_values(r, task, kind)) is not None]
        if not got:
            return None
        examples = [v.examples for _, v in got]
        side = Side(scores={r.seed: v.score for r, v in got}, trained=any(r.kind not in UNTRAINED_KINDS for r, _ in got),
                    examples=None if any(e is None for e in examples) else examples)  # type: ignore[arg-type]
        return got[0][1].metric, side, [r for r, _ in got]

    def pooled_seed_variance(self, task: str, kind: MetricKind = "primary") -> tuple[float, float] | None:
        """Between-seed variance of a task's score, pooled over the trained recipes with 2+ seeds (and its df)."""
        if (task, kind) not in self._pooled:
            groups = [[v.score for r in runs if (v := self.run_values(r, task, kind)) is not None]
                      for runs in self.recipes.values() if any(r.kind not in UNTRAINED_KINDS for r in runs)]
            self._pooled[(task, kind)] = pooled_seed_variance(groups)
        return self._pooled[(task, kind)]

    def recipes_of(self, kind: str, task: str | None = None, general: bool | None = None,
                   math_: bool | None = None, single_of: str | None = None) -> list[tuple]:
        out = []
        for rec, runs in self.recipes.items():
            r = runs[0]
            if r.kind != kind:
                continue
            if single_of is not None and r.train_tasks != (single_of,):
                continue
            if task is not None and task not in r.train_tasks:
                continue
            if general is not None and bool(r.general) != general:
                continue
            if math_ is not None and bool(r.math) != math_:
                continue
            out.append(rec)
        return out

    # ----- the report's sections -----------------------------------------------------------
    def main_table(self) -> list[dict]:
        """Per task: base, best single-task, best cocktail, + general, + math, API, published."""
        rows = []
        api_models = sorted({r.model for r in self.data.runs if r.kind == "api"})
        for task in self.eval_tasks:
            row: dict = {"task": task, "metric": self.primary.get(task, "")}
            base = self.recipes_of("base")
            row["base zero-shot"] = self.best(base, task)
            row["best single-task"] = self.best(self.recipes_of("single", single_of=task), task)
            # a knowledge task is never trained on: its cocktail cells are the cocktails scored on it
            on = None if task in KNOWLEDGE_TASKS else task
            row["best cocktail"] = self.best(self.recipes_of("cocktail", task=on, general=False, math_=False), task)
            row["cocktail + general"] = self.best(self.recipes_of("cocktail", task=on, general=True, math_=False), task)
            row["cocktail + math"] = self.best(self.recipes_of("cocktail", task=on, math_=True), task)
            for model in api_models:
                recs = [rec for rec in self.recipes_of("api") if self.recipes[rec][0].model == model]
                row[f"API {model}"] = self.best(recs, task)
            for name, scores in self.data.published.items():
                if task in scores:
                    row[f"{name} (published)"] = scores[task]
            rows.append(row)
        return rows

    def cocktail_effects(self) -> list[Delta]:
        """Each cocktail vs the task's single-task recipe, on every task the cocktail trained on."""
        out: list[Delta] = []
        for task in self.financial_eval_tasks:
            singles = self.recipes_of("single", single_of=task)
            if not singles:
                continue
            ref = singles[0] if len(singles) == 1 else self.best(singles, task)[0]
            for rec in self.recipes_of("cocktail", task=task):
                d = self.delta(rec, ref, task)
                if d is not None:
                    out.append(d)
        return out

    def ablations(self) -> list[Delta]:
        """What adding general data, and adding math data, did to the same cocktail, per task."""
        out: list[Delta] = []
        plain = {rec[:3]: rec for rec in self.recipes if rec[0] in ("single", "cocktail") and not rec[3] and not rec[4]}
        for rec in self.recipes:
            if rec[0] not in ("single", "cocktail") or not (rec[3] or rec[4]):
                continue
            ref = plain.get(rec[:3])
            if ref is None:
                continue
            for task in self.eval_tasks:
                d = self.delta(rec, ref, task)
                if d is not None:
                    out.append(d)
        return out

    def knowledge_check(self) -> list[Delta]:
        """Did task fine-tuning move domain knowledge (CFA, FinanceBench)? Each tuned recipe vs base."""
        out: list[Delta] = []
        for base in self.recipes_of("base"):
            model = base[1]
            for rec in self.recipes:
                if rec[0] in ("single", "cocktail") and rec[1] == model:
                    for task in self.knowledge_eval_tasks:
                        d = self.delta(rec, base, task)
                        if d is not None:
                            out.append(d)
        return out

    def transfer_matrix(self) -> tuple[list[str], list[str], np.ndarray]:
        """Rows: training recipe; columns: evaluation task; cells: test score (NaN if not run)."""
        rows = [rec for rec in self.recipes if rec[0] in ("base", "single", "cocktail")]
        rows.sort(key=lambda rec: (["base", "single", "cocktail"].index(rec[0]), len(rec[2]), rec[2], rec[3], rec[4]))
        cols = self.eval_tasks
        mat = np.full((len(rows), len(cols)), np.nan)
        for i, rec in enumerate(rows):
            for j, task in enumerate(cols):
                s = self.score(self.recipes[rec], task)
                if s is not None:
                    mat[i, j] = s.value
        return [self.recipe_label(r) for r in rows], cols, mat

    def costs(self) -> list[RunRecord]:
        return sorted((r for r in self.data.runs if r.kind in ("single", "cocktail")), key=lambda r: r.run_id)

    # ----- deltas --------------------------------------------------------------------------
    def delta(self, rec: tuple, ref: tuple, task: str) -> Delta | None:
        """Recipe minus reference on the task's primary metric, with the interval Findings gives the
        same pair (`contrast_stats`: paired by seed where both share their seeds)."""
        sides = [self.side(self.recipes[r], task) for r in (rec, ref)]
        if sides[0] is None or sides[1] is None:
            return None
        st = contrast(sides[0][1], sides[1][1], self.pooled_seed_variance(task))
        low, high = st.interval() if st.se > 0 or st.n_examples or st.seed_noise == "measured" else (float("nan"),) * 2
        return Delta(task, self.recipe_label(rec), self.recipe_label(ref), st.effect, low, high, st.design, st.seed_noise)


def any_test_selected(rows: list[dict]) -> bool:
    """Whether some cell of `main_table()` rows had to be chosen on test (no validation scores)."""
    return any(isinstance(v, tuple) and v[1].test_selected for r in rows for v in r.values())


def _t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def _correct_by_id(path: Path | None) -> dict[str, float] | None:
    if path is None or not Path(path).is_file():
        return None
    out: dict[str, float] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out[str(row["id"])] = float(bool(row["correct"]))
    return out
