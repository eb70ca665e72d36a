"""On test: the recommended mixture beside the best single-task run and the best hand-built cocktail.

Per task of the objective, the baselines are chosen the way the report's main table chooses
them, on *validation*: the task's single-task recipe, and the hand-built cocktail containing the
task (the incremental design, extra cocktails, and their general / math variants) with the best
validation score on it.
Only then are test scores read. The recommended mixture was chosen on validation too, so no
choice here ever sees a test score.

Each difference is the paired contrast of the report's Findings (the same test rows; seed and
test-sample variance; `findings.Tester`), Holm-adjusted over the table. The objective row
weighs per-task differences like the objective (its interval treats tasks as independent: they
are scored on different test sets). There, the cocktail baseline is the one hand-built cocktail
with the best validation objective, chosen exactly as the recommendation was, so the verdict
compares one model with one model; the single-task baseline stays one specialist per task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy.stats import norm

from fincocktail.report.analysis import Analysis, Score
from fincocktail.report.findings import ALPHA, Tester, holm

BASELINES = ("best single-task", "best cocktail")
NOTE = ("Test scores are never used to choose anything: the search proposes and recommends on validation scores, "
        "and each baseline is the recipe with the best validation score on the task; test scores are only read afterwards.")


@dataclass
class Diff:
    value: float
    low: float
    high: float
    p: float
    p_holm: float = float("nan")
    # The recommendation IS the baseline (the same recipe). Why a flag, not a zero-width interval:
    # two different recipes can make identical test predictions, and that is not identity.
    same_recipe: bool = False

    def fmt(self) -> str:
        if math.isnan(self.low):
            return f"{self.value:+.3f}"
        star = "*" if self.p_holm < ALPHA else ""
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]{star}"


@dataclass
class Row:
    task: str  # a task, or "objective"
    recommended: dict[str, Score | None]  # split -> score
    baselines: dict[str, tuple[str, dict[str, Score | None]] | None]  # name -> (label, split -> score)
    diffs: dict[str, Diff | None] = field(default_factory=dict)  # name -> recommended minus baseline, on test


def _recipe_of(an: Analysis, run_ids: Sequence[str]) -> tuple | None:
    for r in an.data.runs:
        if r.run_id in run_ids:
            return r.recipe
    return None


def _pair(tester: Tester, task: str, rec: tuple, ref: tuple) -> Diff | None:
    """Recommended minus `ref` on `task`'s test rows (the Findings contrast), or None when not computable."""
    if ref == rec:  # the recommendation is this baseline itself
        return Diff(0.0, 0.0, 0.0, 1.0, same_recipe=True)
    got = tester.contrast("a", task, rec, ref)
    return None if got is None else Diff(got[0].effect, got[0].low, got[0].high, got[0].p)


def best_on_objective(an: Analysis, pool: Sequence[tuple], weights: Mapping[str, float]) -> tuple | None:
    """The recipe of `pool` with the best validation objective (every weighed task scored on validation)."""
    scored = []
    for recipe in pool:
        vals = [an.score(an.recipes[recipe], t, "validation") for t in weights]
        if all(v is not None for v in vals):
            scored.append((sum(w * v.value for w, v in zip(weights.values(), vals)), recipe))  # type: ignore[union-attr]
    return max(scored, key=lambda x: x[0])[1] if scored else None


def compare(an: Analysis, run_ids: Sequence[str], weights: Mapping[str, float]) -> list[Row]:
    """Rows per weighted task, then the objective row; empty when the recommended runs have no test scores."""
    rec = _recipe_of(an, run_ids)
    if rec is None:
        return []
    tester = Tester(an)
    rows: list[Row] = []
    for task in weights:
        mine = {s: an.score(an.recipes[rec], task, s) for s in ("validation", "test")}
        if mine["test"] is None:
            continue
        row = Row(task, mine, {})
        for name, pool in (
            ("best single-task", an.recipes_of("single", single_of=task, general=False, math_=False)),
            ("best cocktail", an.recipes_of("cocktail", task=task)),
        ):
            best = an.best(pool, task)
            if best is None:
                row.baselines[name], row.diffs[name] = None, None
                continue
            ref = best[0]
            row.baselines[name] = (an.recipe_label(ref), {s: an.score(an.recipes[ref], task, s) for s in ("validation", "test")})
            row.diffs[name] = _pair(tester, task, rec, ref)
        rows.append(row)
    if not rows:
        return rows
    objective = _objective_row(an, tester, rec, rows, weights)
    diffs = [d for r in rows + [objective] for d in r.diffs.values() if d is not None]
    for d, p in zip(diffs, holm([d.p for d in diffs])):
        d.p_holm = p
    return rows + [objective]


def _objective_row(an: Analysis, tester: Tester, rec: tuple, rows: list[Row], weights: Mapping[str, float]) -> Row:
    """The objective on test (weights renormalised over the tasks scored). Against single-task runs: one per
    task (a specialist each); against cocktails: the one hand-built cocktail with the best validation objective,
    the study's own way of choosing, so one model is compared with one model."""
    tasks = [r.task for r in rows]
    total = sum(weights[t] for t in tasks)
    w = {t: weights[t] / total for t in tasks}

    def combine(scores: Sequence[Score | None]) -> Score | None:
        if any(s is None for s in scores):
            return None
        return Score(sum(w[t] * s.value for t, s in zip(tasks, scores)), None, None, 1, ())  # type: ignore[union-attr]

    def combine_diffs(diffs: Sequence[Diff | None]) -> Diff | None:
        if any(d is None or math.isnan(d.low) for d in diffs):
            return None
        z = norm.ppf(0.975)
        value = sum(w[t] * d.value for t, d in zip(tasks, diffs))  # type: ignore[union-attr]
        se = math.sqrt(sum((w[t] * (d.high - d.low) / (2 * z)) ** 2 for t, d in zip(tasks, diffs)))  # type: ignore[union-attr]
        p = float(2 * norm.sf(abs(value) / se)) if se > 0 else float(value == 0)
        return Diff(value, value - z * se, value + z * se, p, same_recipe=all(d.same_recipe for d in diffs))  # type: ignore[union-attr]

    out = Row("objective", {s: combine([r.recommended[s] for r in rows]) for s in ("validation", "test")}, {})
    if all(r.baselines.get("best single-task") is not None for r in rows):
        out.baselines["best single-task"] = ("per-task choice", {s: combine([r.baselines["best single-task"][1][s] for r in rows])  # type: ignore[index]
                                                                  for s in ("validation", "test")})
        out.diffs["best single-task"] = combine_diffs([r.diffs.get("best single-task") for r in rows])
    else:
        out.baselines["best single-task"], out.diffs["best single-task"] = None, None
    ref = best_on_objective(an, an.recipes_of("cocktail"), {t: w[t] for t in tasks})
    if ref is None:
        out.baselines["best cocktail"], out.diffs["best cocktail"] = None, None
    else:
        out.baselines["best cocktail"] = (an.recipe_label(ref), {s: combine([an.score(an.recipes[ref], t, s) for t in tasks])
                                                                for s in ("validation", "test")})
        out.diffs["best cocktail"] = combine_diffs([_pair(tester, t, rec, ref) for t in tasks])
    return out


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the comparison, for markdown and HTML."""
    header = ["task", "recommended: validation", "recommended: test"]
    for name in BASELINES:
        header += [f"{name} (chosen on validation)", f"{name}: validation", f"{name}: test", f"recommended minus {name} (test)"]
    out = []
    for r in rows:
        cells = [r.task, _fmt(r.recommended["validation"]), _fmt(r.recommended["test"])]
        for name in BASELINES:
            b = r.baselines.get(name)
            d = r.diffs.get(name)
            cells += [b[0] if b else "–", _fmt(b[1]["validation"]) if b else "–", _fmt(b[1]["test"]) if b else "–",
                      d.fmt() if d else "–"]
        out.append(cells)
    return header, out


def _fmt(s: Score | None) -> str:
    return "–" if s is None else s.fmt()


def verdict(rows: list[Row]) -> str:
    """One plain sentence: did the search beat the hand-built design on the objective, on test?"""
    if not rows or rows[-1].task != "objective":
        return "The recommended mixture has no test scores yet."
    d = rows[-1].diffs.get("best cocktail")
    if d is None:
        return "No paired comparison with the hand-built cocktails was possible (no cocktail, or no per-example predictions)."
    label = rows[-1].baselines["best cocktail"][0]  # type: ignore[index]
    if d.same_recipe:
        return f"The recommendation is the hand-built cocktail {label} itself: the search did not beat the hand-built design."
    if d.value == d.low == d.high == 0.0:
        return (f"The recommendation, a different recipe, made the same test predictions as the hand-built cocktail {label}: "
                "the search did not beat the hand-built design.")
    if d.low > 0:
        return f"The search beat the best hand-built cocktail on test: {d.value:+.3f} on the objective, 95% interval [{d.low:+.3f}, {d.high:+.3f}]."
    if d.high < 0:
        return f"The search did worse than the best hand-built cocktail on test: {d.value:+.3f}, 95% interval [{d.low:+.3f}, {d.high:+.3f}]."
    return (f"The search did not measurably beat the best hand-built cocktail on test: {d.value:+.3f} on the objective, "
            f"95% interval [{d.low:+.3f}, {d.high:+.3f}] (includes 0).")
