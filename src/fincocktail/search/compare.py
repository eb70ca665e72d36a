"""On test: the recommended mixture beside the best single-task run and the best hand-built cocktail.

Per task of the objective, the baselines are chosen the way the report's main table chooses
them, on *validation*: the task's single-task recipe, and the plain cocktail containing the
task (the incremental design and any extra cocktails) with the best validation score on it.
Only then are test scores read. The recommended mixture was chosen on validation too, so no
choice here ever sees a test score.

Each difference is the paired contrast of the report's Findings (the same test rows; seed and
test-sample variance; `findings._Tester`), Holm-adjusted over the table. The objective row
weighs the per-task rows like the objective; its interval treats tasks as independent (they
are scored on different test sets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scipy.stats import norm

from fincocktail.report.analysis import Analysis, Score
from fincocktail.report.findings import ALPHA, _Tester, holm

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


def compare(an: Analysis, run_ids: Sequence[str], weights: Mapping[str, float]) -> list[Row]:
    """Rows per weighted task, then the objective row; empty when the recommended runs have no test scores."""
    rec = _recipe_of(an, run_ids)
    if rec is None:
        return []
    tester = _Tester(an)
    rows: list[Row] = []
    raw: list[Diff] = []
    for task in weights:
        runs = an.recipes[rec]
        mine = {s: an.score(runs, task, s) for s in ("validation", "test")}
        if mine["test"] is None:
            continue
        row = Row(task, mine, {})
        for name, pool in (
            ("best single-task", an.recipes_of("single", single_of=task, general=False, math_=False)),
            ("best cocktail", an.recipes_of("cocktail", task=task, general=False, math_=False)),
        ):
            best = an.best(pool, task)
            if best is None:
                row.baselines[name], row.diffs[name] = None, None
                continue
            ref = best[0]
            row.baselines[name] = (an.recipe_label(ref), {s: an.score(an.recipes[ref], task, s) for s in ("validation", "test")})
            got = tester.contrast("a", task, rec, ref) if ref != rec else None
            if got is None:
                row.diffs[name] = None
                continue
            c = got[0]
            row.diffs[name] = Diff(c.effect, c.low, c.high, c.p)
            raw.append(row.diffs[name])  # type: ignore[arg-type]
        rows.append(row)
    for d, p in zip(raw, holm([d.p for d in raw])):
        d.p_holm = p
    if rows:
        rows.append(_objective_row(rows, weights))
    return rows


def _objective_row(rows: list[Row], weights: Mapping[str, float]) -> Row:
    """The objective on test: the weighted per-task scores (weights renormalised over the tasks scored)."""
    tasks = [r.task for r in rows]
    total = sum(weights[t] for t in tasks)
    w = {t: weights[t] / total for t in tasks}

    def combine(scores: Sequence[Score | None]) -> Score | None:
        if any(s is None for s in scores):
            return None
        value = sum(w[t] * s.value for t, s in zip(tasks, scores))  # type: ignore[union-attr]
        return Score(value, None, None, 1, ())

    out = Row("objective", {s: combine([r.recommended[s] for r in rows]) for s in ("validation", "test")}, {})
    for name in BASELINES:
        if any(r.baselines.get(name) is None for r in rows):
            out.baselines[name], out.diffs[name] = None, None
            continue
        out.baselines[name] = ("per-task choice", {s: combine([r.baselines[name][1][s] for r in rows]) for s in ("validation", "test")})  # type: ignore[index]
        diffs = [r.diffs.get(name) for r in rows]
        if any(d is None or math.isnan(d.low) for d in diffs):
            out.diffs[name] = None
            continue
        value = sum(w[r.task] * d.value for r, d in zip(rows, diffs))  # type: ignore[union-attr]
        se = math.sqrt(sum((w[r.task] * (d.high - d.low) / (2 * norm.ppf(0.975))) ** 2 for r, d in zip(rows, diffs)))  # type: ignore[union-attr]
        z = norm.ppf(0.975)
        p = float(2 * norm.sf(abs(value) / se)) if se > 0 else float(value == 0)
        out.diffs[name] = Diff(value, value - z * se, value + z * se, p, p)
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
    if d.low > 0:
        return f"The search beat the best hand-built cocktail on test: {d.value:+.3f} on the objective, 95% interval [{d.low:+.3f}, {d.high:+.3f}]."
    if d.high < 0:
        return f"The search did worse than the best hand-built cocktail on test: {d.value:+.3f}, 95% interval [{d.low:+.3f}, {d.high:+.3f}]."
    return (f"The search did not measurably beat the best hand-built cocktail on test: {d.value:+.3f} on the objective, "
            f"95% interval [{d.low:+.3f}, {d.high:+.3f}] (includes 0).")
