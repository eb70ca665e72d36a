"""Mixtures: how many examples of each ingredient a training run draws per epoch, as search points.

A mixture is the per-epoch count of every ingredient of a sweep: its financial tasks plus the
general and math data when the sweep has them. The surrogate sees it as the *share* of each
ingredient and the *total* (log-scaled into [0, 1] over the search's range), which is how the
data-mixing literature (RegMix, Data Mixing Laws) parameterises a mixture. Counts, not shares,
are what is stored and trained, so a proposal trains exactly the mixture that was scored.

Every run the sweep already made (single-task runs, cocktails, boosters) is read back as a
mixture through the cocktail's own arithmetic (`cocktail.planned_counts`), so the search starts
from them and pays for nothing twice. A proposed mixture becomes an ordinary cocktail (counts
with `repeat: true`, general/math as boosters) and an ordinary run of the sweep
(`spec.trained_run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fincocktail.cocktail import parse_cocktail, planned_counts
from fincocktail.errors import ConfigError
from fincocktail.sweep.spec import Plan, RunSpec, SweepSpec, task_estimate


@dataclass(frozen=True)
class IngredientCounts:
    """The examples per epoch of each ingredient of the search's space (in the space's order): a point
    the search scores. The cocktail it becomes is `Space.cocktail`."""

    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def shares(self) -> np.ndarray:
        total = self.total
        return np.array(self.counts, dtype=float) / total if total else np.zeros(len(self.counts))


@dataclass(frozen=True)
class Space:
    """The ingredients a search mixes, their per-epoch limits and the range of totals it explores."""

    tasks: tuple[str, ...]  # the sweep's financial tasks
    general: str | None  # the general-instruction task, if the sweep has one
    math: str | None  # the math task, if the sweep has one
    limits: tuple[int | None, ...]  # at most this many examples per epoch (train_caps / booster cap); None: no limit
    available: tuple[int, ...]  # train examples of each ingredient (the sweep's estimates), to read existing runs
    total_min: int
    total_max: int

    @property
    def names(self) -> tuple[str, ...]:
        return self.tasks + tuple(t for t in (self.general, self.math) if t)

    @property
    def dims(self) -> int:
        return len(self.names) + 1

    @property
    def max_total(self) -> int:
        """The largest total the limits allow (the search never proposes more)."""
        if any(lim is None for lim in self.limits):
            return self.total_max
        return min(self.total_max, sum(lim for lim in self.limits if lim is not None))

    # -- features -------------------------------------------------------------------------

    def features(self, mixtures: Sequence[IngredientCounts]) -> np.ndarray:
        """One row per mixture: each ingredient's share, then log(total) scaled to [0, 1] over the range."""
        lo, hi = math.log(max(1, self.total_min)), math.log(max(1, self.total_max))
        rows = []
        for m in mixtures:
            t = (math.log(max(1, m.total)) - lo) / (hi - lo) if hi > lo else 0.0
            rows.append([*m.shares(), t])
        return np.array(rows, dtype=float).reshape(len(rows), self.dims)

    # -- from runs and cocktails ----------------------------------------------------------

    def of_cocktail(self, cocktail: Mapping[str, Any], source: str = "cocktail") -> IngredientCounts:
        """The mixture a cocktail (a dict in the cocktail format) draws; an ingredient outside the space is an error."""
        config = parse_cocktail(dict(cocktail), source)
        for i, task in enumerate(config.task_ids()):
            if task not in self.names:
                where = next((f"ingredients.{j}.task" for j, ing in enumerate(config.ingredients) if ing.task == task),
                             "general.task" if config.general and config.general.task == task else "math.task")
                raise ConfigError(f"{source}: {where}: task {task!r} is not an ingredient of this sweep "
                                  f"({', '.join(self.names)})")
        available = dict(zip(self.names, self.available))
        counts = planned_counts(config, {t: available[t] for t in config.task_ids()}, source, strict=False)
        return IngredientCounts(tuple(int(counts.get(t, 0)) for t in self.names))

    def of_run(self, config: Mapping[str, Any]) -> IngredientCounts | None:
        """The mixture of a stored run (its RunSpec as JSON), or None when it trained on something else."""
        train = config.get("train")
        if not train or not isinstance(train.get("cocktail"), dict):
            return None
        try:
            return self.of_cocktail(train["cocktail"], source=str(config.get("run_id", "run")))
        except ConfigError:
            return None

    # -- making mixtures ------------------------------------------------------------------

    def make(self, shares: Sequence[float], total: float) -> IngredientCounts | None:
        """The feasible mixture nearest to `shares` x `total`: counts over a limit are cut to it and the rest
        spread over the other ingredients in proportion (so the total is kept while the limits allow).
        None when it would have no financial-task example (boosters are fractions of the task data)."""
        s = np.clip(np.asarray(shares, dtype=float), 0, None)
        if s.sum() <= 0:
            return None
        s = s / s.sum()
        total = float(min(max(total, self.total_min), self.max_total))
        limits = np.array([np.inf if lim is None else lim for lim in self.limits], dtype=float)
        fixed = np.zeros(len(s), dtype=bool)
        counts = s * total
        while True:
            over = (counts > limits + 1e-9) & ~fixed
            if not over.any():
                break
            fixed |= over
            counts[fixed] = limits[fixed]
            left = total - counts[fixed].sum()
            free = ~fixed & (s > 0)
            if not free.any() or left <= 0:
                break
            counts[free] = s[free] / s[free].sum() * left
        ints = _round_keeping_sum(counts)
        ints = np.minimum(ints, limits).astype(int)
        if ints[: len(self.tasks)].sum() == 0:
            return None
        return IngredientCounts(tuple(int(c) for c in ints))

    def random(self, n: int, seed: int) -> list[IngredientCounts]:
        """`n` space-filling mixtures: a scrambled Sobol sequence mapped to uniform shares (Dirichlet(1)) and
        log-uniform totals."""
        from scipy.stats import qmc

        u = qmc.Sobol(self.dims, scramble=True, seed=seed).random_base2(max(0, math.ceil(math.log2(max(1, n)))))
        return [m for m in (self._from_unit(row) for row in u) if m is not None][:n]

    def _from_unit(self, row: np.ndarray) -> IngredientCounts | None:
        e = -np.log(np.clip(row[:-1], 1e-12, 1.0))
        lo, hi = math.log(max(1, self.total_min)), math.log(max(1, self.max_total))
        return self.make(e / e.sum(), math.exp(lo + row[-1] * (hi - lo)))

    def candidates(
        self, n: int, rng: np.random.Generator, around: Sequence[IngredientCounts] = ()
    ) -> list[IngredientCounts]:
        """Mixtures to score with the acquisition: uniform over the simplex, sparse (a random subset of
        ingredients), and local perturbations of `around` (the best mixtures so far). Deduplicated."""
        k = len(self.names)
        lo, hi = math.log(max(1, self.total_min)), math.log(max(1, self.max_total))
        out: list[IngredientCounts | None] = []
        for _ in range(n // 2):
            out.append(self.make(rng.dirichlet(np.ones(k)), math.exp(rng.uniform(lo, hi))))
        for _ in range(n // 4):
            size = int(rng.integers(1, k + 1))
            keep = rng.choice(k, size=size, replace=False)
            s = np.zeros(k)
            s[keep] = rng.dirichlet(np.ones(size))
            out.append(self.make(s, math.exp(rng.uniform(lo, hi))))
        per = max(1, (n - len(out)) // max(1, len(around))) if around else 0
        for m in around:
            base = m.shares()
            for _ in range(per):
                out.append(self.make(rng.dirichlet(30 * base + 0.3), m.total * math.exp(rng.normal(0, 0.25))))
        seen: set[IngredientCounts] = set()
        unique = []
        for m in out:
            if m is not None and m not in seen:
                seen.add(m)
                unique.append(m)
        return unique

    # -- to a cocktail and a run ----------------------------------------------------------

    def cocktail(self, m: IngredientCounts, name: str, seed: int) -> dict[str, Any]:
        """The mixture in the cocktail format: counts (repeat allowed) and general/math as boosters sized exactly."""
        counts = dict(zip(self.names, m.counts))
        task_total = sum(counts[t] for t in self.tasks)
        out: dict[str, Any] = {
            "name": name,
            "seed": seed,
            "ingredients": [{"task": t, "count": counts[t], "repeat": True} for t in self.tasks if counts[t] > 0],
        }
        for key, task in (("general", self.general), ("math", self.math)):
            if task and counts[task] > 0:
                out[key] = {"task": task, "fraction": round(counts[task] / task_total, 6), "cap": counts[task], "repeat": True}
        return out

    def booster_fractions(self, m: IngredientCounts) -> tuple[float, float]:
        counts = dict(zip(self.names, m.counts))
        task_total = sum(counts[t] for t in self.tasks) or 1
        return tuple(round(counts[t] / task_total, 6) if t else 0.0 for t in (self.general, self.math))  # type: ignore[return-value]

    def label(self, m: IngredientCounts) -> str:
        return " ".join(f"{t}:{c}" for t, c in zip(self.names, m.counts) if c)

    def describe(self, m: IngredientCounts) -> dict[str, Any]:
        return {"counts": dict(zip(self.names, m.counts)), "total": m.total,
                "shares": {t: round(float(s), 4) for t, s in zip(self.names, m.shares())}}


def _round_keeping_sum(values: np.ndarray) -> np.ndarray:
    """Integers with the same (rounded) sum: floors, then +1 for the largest remainders."""
    floors = np.floor(values + 1e-9)
    missing = int(round(values.sum() - floors.sum()))
    if missing > 0:
        order = np.argsort(-(values - floors), kind="stable")
        floors[order[:missing]] += 1
    return floors


def make_space(plan: Plan, total_range: tuple[int, int] | None = None) -> Space:
    """The search space of a sweep: its tasks + general + math, limited by `train_caps` and booster caps.

    The range of totals defaults to the smallest and largest training run the sweep plans.
    """
    spec: SweepSpec = plan.spec
    general = spec.general.task if spec.general else None
    math_ = spec.math.task if spec.math else None
    names = list(spec.tasks) + [t for t in (general, math_) if t]
    limits: list[int | None] = []
    for t in names:
        booster = spec.general if t == general else spec.math if t == math_ else None
        if booster is not None and booster.cap is not None:
            limits.append(booster.cap)
        else:
            limits.append(spec.train_caps.get(t))
    available = tuple(int(task_estimate(spec, t).train_examples or 0) for t in names)
    space = Space(tuple(spec.tasks), general, math_, tuple(limits), available, 1, 1)
    if total_range is None:
        totals = [m.total for m in (space.of_run(r.model_dump(mode="json")) for r in plan.training_runs) if m is not None]
        if not totals:
            raise ConfigError(f"{plan.source}: design: the sweep plans no training run; give --total MIN:MAX")
        total_range = (min(totals), max(totals))
    lo, hi = total_range
    if lo < 1 or hi < lo:
        raise ConfigError(f"--total {lo}:{hi}: expected 1 <= MIN <= MAX")
    return Space(tuple(spec.tasks), general, math_, tuple(limits), available, int(lo), int(hi))


# `sweep.spec.eval_settings(...)`: the plan's run-id eval dict and (scope needed) the tasks every run is scored on.
# Not `sweep.spec.EvalSettings` (one run's typed settings), hence its own name.
PlanEval = tuple[dict[str, Any], list[str] | None]


def proposal_run(
    plan: Plan, space: Space, m: IngredientCounts, mi: int, seed: int, origin: str, settings: PlanEval
) -> RunSpec:
    """A proposed mixture as a run of the sweep: its training config, evaluated like the sweep's runs, and on
    the validation split of every selection task (the surrogate learns each task's score from every run).

    `settings` is `spec.eval_settings(...)` of the plan, computed once by the caller.
    """
    from fincocktail.sweep.spec import scoped_eval, trained_run

    ev, always = settings
    trained = [t for t, c in zip(space.names, m.counts) if c > 0 and t in space.tasks]
    run_ev = scoped_eval(ev, always, trained, everything=set(trained) == set(space.tasks))
    run_ev = {**run_ev, "selection_split": ev["selection_split"], "selection_tasks": ev["selection_tasks"]}
    gf, mf = space.booster_fractions(m)
    cocktail = space.cocktail(m, name="mix-" + "-".join(f"{t}{c}" for t, c in zip(space.names, m.counts) if c), seed=seed)
    return trained_run(plan.spec, mi, "mixture", cocktail, label="mix " + space.label(m), train_tasks=trained,
                       general=gf, math=mf, run_ev=run_ev, source=plan.source, origin=origin)
