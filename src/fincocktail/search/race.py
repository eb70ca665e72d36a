"""`mix search --race`: proposals start together, are read on their learning curves at rungs, the weakest stop.

A plain search pays a full run for every proposal, loser or winner. Racing (successive halving)
reads every proposal's validation likelihood at a share of its steps and stops the weakest
there, so the budget goes to the proposals still in the race:

- Proposals train on a warmup-stable-decay schedule (`training.scheduler: wsd`): up to the
  decay the learning rate is flat, so a proposal read at 1/4 or 1/2 of its steps is a fair
  partial run, and only the proposals that reach the last rung run the decay.
- A rung is a run paused at that share of its steps (`RunSpec.stop_at`): a checkpoint and a
  learning-curve point (the validation likelihood of every searched task on a fixed sample).
  A survivor continues from its checkpoint exactly; a stopped one stays paused in the store.
- Which proposals stop is optuna's successive-halving pruner's decision (`search.rungs`).
- The surrogate learns from every rung: the share of steps is one more input of the GP, and
  proposals are scored at full length. Repeats (other seeds) tell it the noise.
- The budget is hours (CPU- or GPU-hours of the jobs, as measured), printed as a plan first.
- Before recommending, the incumbent is trained again with other seeds; its seed spread is in
  the outputs, and if its mean falls below the runner-up's score, the runner-up is replicated too.

The state is `OUT/mix/NAME/search.json`, written before each batch of jobs starts and after
their results: a killed search resumes where it stopped (a rung already reached is read back
from its `rung-F.json`, an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.paths import check_name
from fincocktail.search.budget import hours_unit, replicates_hours, round_fits
from fincocktail.search.mixture import IngredientCounts, proposal_run
from fincocktail.search.objective import floors, parse_constraints, parse_objective
from fincocktail.search.propose import Observed, propose
from fincocktail.search.rungs import RungReport, check_rungs_before_decay, expected_cost, pruning_decisions, rung_fractions
from fincocktail.search.search import (STATE_FILE, SEARCH_DIR, Context, RunObs, SearchOptions, SearchRun, context, job_costs,
                                        load_state, search_name)
from fincocktail.sweep.spec import Plan, RunSpec
from fincocktail.sweep.store import ResultsStore

RACE_PREFIX = "race__"
CURVES_ONLY_AT_RUNGS = 1_000_000  # eval_every when the sweep sets none: curve points at the rungs and the end only


@dataclass(frozen=True)
class RaceOptions:
    budget_hours: float
    reduction: int = 2
    rungs: int = 3
    replicates: int = 2  # extra seeds of the incumbent before it is recommended


@dataclass
class RaceRun:
    """What `run_race` hands to the outputs: the search (as a plain search's outputs read it) and the race."""

    search: SearchRun
    fractions: tuple[float, ...]
    unit: str
    per_job: float  # cores (CPU) or GPUs each job holds: seconds x per_job = the budget's unit
    budget_hours: float
    plan_text: str
    train_seed: int  # the proposals' training seed (the sweep's first); replicates add others

    @property
    def state(self) -> dict[str, Any]:
        return self.search.state.data


def race_plan(plan: Plan, tasks: list[str]) -> Plan:
    """The sweep with its training switched to what racing needs: a wsd schedule and learning curves of exactly
    the searched tasks (also those a proposal does not train on, and not its boosters), at the rungs and the end."""
    training = dict(plan.spec.training)
    training["scheduler"] = "wsd"
    training.setdefault("eval_every", CURVES_ONLY_AT_RUNGS)
    training["eval_tasks"] = list(tasks)
    return Plan(plan.spec.model_copy(update={"training": training}), plan.source, plan.runs)


def _fmt_h(hours: float) -> str:
    return f"{hours:.2f}"


def finished_seconds(reports: list[dict[str, Any]], last: int) -> list[float]:
    """What each proposal that reached the last rung cost in all (its rung jobs' seconds together)."""
    finished = {r["run_id"] for r in reports if r["rung"] == last}
    return [sum(r["seconds"] for r in reports if r["run_id"] == rid) for rid in finished]


def plan_text(name: str, race: RaceOptions, fractions: tuple[float, ...], unit: str, per_job: float, costs: dict[str, float],
              why: str, batch: int) -> str:
    expected, worst = expected_cost(fractions, race.reduction, costs["overhead"], costs["train"], costs["eval"], costs["curve"])
    full = sum(costs.values())
    to_h = per_job / 3600
    reserve = replicates_hours(race.replicates, (), sum(costs.values()), per_job)  # a full run: all four parts of `costs`
    n = max(0, int((race.budget_hours - reserve) / max(expected * to_h, 1e-9)))
    rungs = ", ".join(f"{f:g}" for f in fractions)
    return (f"racing search {name}: budget {race.budget_hours:g} {unit} ({per_job:g} per job)\n"
            f"  a full proposal ~{full / 60:.1f} min ({why}); rungs at {rungs} of its steps, reduction {race.reduction} "
            f"(optuna SuccessiveHalvingPruner): a raced proposal costs ~{expected / 60:.1f} min expected, {worst / 60:.1f} at most\n"
            f"  -> about {n} proposals in rounds of {batch}, then {race.replicates} replicate run(s) of the winner "
            f"({_fmt_h(reserve)} {unit} kept for them)")


def run_race(plan: Plan, options: SearchOptions, race: RaceOptions, out_dir: str | os.PathLike | None = None,
             executor: Any = None, runner: Any = "real", data_dir: str | None = None, progress: bool = True,
             say: Any = None) -> RaceRun:
    """Race proposals until `race.budget_hours` are spent, replicate the incumbent; resumable (module docstring)."""
    from fincocktail.sweep.executors import make_executor

    executor = executor or make_executor("local")
    if race.budget_hours <= 0 or options.batch < 1 or race.replicates < 0:
        raise ConfigError(f"--budget-hours {race.budget_hours} / --batch {options.batch} / --replicates {race.replicates}: "
                          "expected hours > 0, batch >= 1, replicates >= 0")
    racer = _Racer(plan, options, race, out_dir, executor, runner, data_dir, progress)
    if say is not None:
        say(racer.text)
    while True:
        round_ = racer.open_round() or racer.new_round()
        if round_ is None:
            break
        racer.advance(round_)
    racer.replicate()
    runs = _full_length_runs(racer.state.data, racer.ctx, racer.fractions, racer.seed0)
    fl, notes = floors(racer.constraints, racer.objectives, {})
    search = SearchRun(racer.ctx, racer.state, racer.objectives, fl, notes, runs, racer.dir, racer.executed)
    return RaceRun(search, racer.fractions, racer.unit, racer.per_job, race.budget_hours, racer.text, racer.seed0)


class _Racer:
    """One racing search's settings, state and steps (`run_race` is the loop over them)."""

    def __init__(self, plan: Plan, options: SearchOptions, race: RaceOptions, out_dir: str | os.PathLike | None,
                 executor: Any, runner: Any, data_dir: str | None, progress: bool):
        tasks = context(plan, out_dir, options.model, options.total).tasks
        self.ctx = ctx = context(race_plan(plan, tasks), out_dir, options.model, options.total)
        self.options, self.race, self.executor, self.runner, self.data_dir, self.progress = (
            options, race, executor, runner, data_dir, progress)
        self.objectives = [parse_objective(o, ctx.tasks) for o in options.objectives]
        self.constraints = parse_constraints(options.constraints, ctx.tasks)
        self.name = options.name or RACE_PREFIX + search_name(self.objectives, self.constraints)
        try:
            check_name(self.name)
        except ValueError as exc:
            raise ConfigError(f"--name: {exc}") from None
        self.fractions = rung_fractions(race.reduction, race.rungs)
        check_rungs_before_decay(self.fractions, "wsd", float(ctx.plan.spec.training.get("decay_fraction", 0.2)))
        header = {"sweep": plan.spec.name, "model": ctx.model, "objectives": list(options.objectives),
                  "constraints": self.constraints, "seed": options.seed, "total": [ctx.space.total_min, ctx.space.total_max],
                  "ingredients": list(ctx.space.names), "race": {"reduction": race.reduction, "fractions": list(self.fractions)}}
        self.dir = ctx.out_dir / SEARCH_DIR / self.name
        self.state = load_state(self.dir / STATE_FILE, header)
        self.state.data.setdefault("reports", [])
        self.state.data.setdefault("replicates", [])
        self.unit, self.per_job = hours_unit(executor)
        existing = ResultsStore.in_dir(ctx.out_dir, create=False) if (ctx.out_dir / "results.sqlite").is_file() else None
        costs, why = job_costs(ctx, existing)
        self.text = plan_text(self.name, race, self.fractions, self.unit, self.per_job, costs, why, options.batch)
        self.expected_s, _ = expected_cost(self.fractions, race.reduction, costs["overhead"], costs["train"], costs["eval"],
                                           costs["curve"])
        self.full_s = sum(costs.values())  # a full proposal's estimated seconds
        self.seed0 = plan.spec.seeds[0]
        self.executed: list[str] = []

    def spent(self) -> float:
        return sum(r["seconds"] for r in self.state.data["reports"] + self.state.data["replicates"]) * self.per_job / 3600

    def reserve(self) -> float:
        return replicates_hours(self.race.replicates, finished_seconds(self.state.data["reports"], len(self.fractions) - 1),
                                self.full_s, self.per_job)

    def run_of(self, p: dict[str, Any], seed: int | None = None) -> RunSpec:
        seed = self.seed0 if seed is None else seed
        ctx = self.ctx
        run = proposal_run(ctx.plan, ctx.space, IngredientCounts(tuple(p["counts"])), ctx.model_index, seed, p["origin"],
                           ctx.settings)
        if seed == self.seed0 and run.run_id != p["run_id"]:
            raise ConfigError(f"{self.state.path}: proposal {p['run_id']} would now be run {run.run_id}: the sweep's training "
                              "or evaluation settings changed since the search started; use another --name or --out")
        return run

    def execute(self, jobs: list[RunSpec]) -> list[tuple[str, dict[str, Any], float]]:
        """Run `jobs`; (run id, rung card, seconds) in the order they arrived."""
        from fincocktail.sweep.executors import run_sweep

        store = ResultsStore.in_dir(self.ctx.out_dir)
        self.ctx.store = store
        summary = run_sweep(Plan(self.ctx.plan.spec, self.ctx.plan.source, self.ctx.plan.runs + jobs), self.ctx.out_dir,
                            self.executor, self.runner, self.data_dir, self.progress, only=[j.run_id for j in jobs])
        self.executed.extend(summary.executed + list(summary.paused))
        if summary.failed:
            first = next(iter(summary.failed.items()))
            raise FincocktailError(f"mix search: {len(summary.failed)} racing job(s) failed ({first[0]}: {first[1]}); "
                                   "rerun the same command to retry them")
        out = []
        for rid in dict.fromkeys([*summary.paused, *summary.executed, *summary.recovered, *summary.skipped]):
            if rid in summary.paused:
                card, seconds = summary.paused[rid]["card"], float(summary.paused[rid].get("wall_time_s") or 0)
            else:
                row = store.run(rid)
                card, seconds = (row.card or {}) if row else {}, float((row.wall_time_s if row else 0) or 0)
            if "rung" not in card:
                raise FincocktailError(f"{rid}: finished without a learning-curve point to race on (training.eval_every)")
            out.append((rid, card["rung"], seconds))
        return out

    def objective_of(self, scores: dict[str, float]) -> float:
        v = self.objectives[0].value(scores)
        return float("nan") if v is None else float(v)

    def validation_of(self, run_id: str) -> dict[str, Any]:
        """A finished run's full evaluation on the selection split (the objective's own metric, e.g. accuracy):
        `validation` scores and their `selection_objective`, what the recommendation ranks by. Empty when the run
        recorded none (then its curve's end stands in)."""
        assert self.ctx.store is not None
        split = self.ctx.settings[0]["selection_split"]
        scores = {m.task: m.value for m in self.ctx.store.metrics(run_id=run_id, split=split, headline_only=True)
                  if m.task in self.ctx.tasks}
        return {"validation": scores, "selection_objective": self.objective_of(scores)} if scores else {}

    def advance(self, round_: dict[str, Any]) -> None:
        """Take the round's proposals through the rungs; a stopped proposal goes no further."""
        data = self.state.data
        for k, f in enumerate(self.fractions):
            reported = {(r["run_id"], r["rung"]) for r in data["reports"]}
            stopped = {r["run_id"] for r in data["reports"] if r["stopped"]}
            pending = [p for p in round_["proposals"] if p["run_id"] not in stopped and (p["run_id"], k) not in reported]
            if not pending:
                continue
            jobs = [self.run_of(p).model_copy(update={"stop_at": f if f < 1 else None}) for p in pending]
            for rid, rung, seconds in self.execute(jobs):
                data["reports"].append({"run_id": rid, "rung": k, "fraction": f, "scores": rung["scores"],
                                        "objective": self.objective_of(rung["scores"]), "seconds": seconds, "stopped": False,
                                        **(self.validation_of(rid) if f >= 1 else {})})
            self.decide()
            self.state.save()

    def decide(self) -> None:
        """Every report's stop decision, replayed through optuna's pruner (`rungs.pruning_decisions`)."""
        reports = self.state.data["reports"]
        decisions = pruning_decisions([RungReport(r["run_id"], r["rung"], r["objective"]) for r in reports],
                                      self.race.reduction, len(self.fractions))
        for r, stop in zip(reports, decisions):
            r["stopped"] = bool(stop)

    def observations(self) -> tuple[np.ndarray, np.ndarray, list[Observed]]:
        """(X with the share of steps as its last column, Y per task, the full-length scores per mixture)."""
        data, ctx = self.state.data, self.ctx
        counts = {p["run_id"]: tuple(p["counts"]) for p in self.state.proposals}
        rows = [(IngredientCounts(counts[r["run_id"]]), r["fraction"], r["scores"]) for r in data["reports"]]
        rows += [(IngredientCounts(tuple(r["counts"])), 1.0, r["scores"]) for r in data["replicates"]]
        if not rows:
            return np.zeros((0, len(ctx.space.names) + 2)), np.zeros((0, len(ctx.tasks))), []
        X = np.hstack([ctx.space.features([m for m, _, _ in rows]), np.array([[f] for _, f, _ in rows])])
        Y = np.array([[s.get(t, np.nan) for t in ctx.tasks] for _, _, s in rows], dtype=float)
        full: dict[IngredientCounts, list[dict[str, float]]] = {}
        for m, f, s in rows:
            if f >= 1:
                full.setdefault(m, []).append(s)
        obs = [Observed(m, {t: float(np.mean([s[t] for s in ss if t in s])) for t in ctx.tasks if any(t in s for s in ss)})
               for m, ss in full.items()]
        return X, Y, obs

    def open_round(self) -> dict[str, Any] | None:
        """The first round with a proposal neither stopped nor finished (a resumed search goes on there)."""
        reports = self.state.data["reports"]
        settled = {r["run_id"] for r in reports if r["stopped"] or r["rung"] == len(self.fractions) - 1}
        return next((r for r in self.state.data["rounds"] if any(p["run_id"] not in settled for p in r["proposals"])), None)

    def new_round(self) -> dict[str, Any] | None:
        """Propose the next round while the budget lasts (None when it is spent or nothing is left to propose)."""
        options, ctx = self.options, self.ctx
        rounds = len(self.state.data["rounds"])
        round_h = (sum(r["seconds"] for r in self.state.data["reports"]) * self.per_job / 3600 / rounds if rounds
                   else options.batch * self.expected_s * self.per_job / 3600)  # what a round measured, once one has run
        if not round_fits(self.race.budget_hours - self.reserve(), self.spent(), round_h):
            return None
        if options.budget and len(self.state.proposals) >= options.budget:
            return None
        X, Y, obs = self.observations()
        round_no = len(self.state.data["rounds"]) + 1
        k = options.batch if not options.budget else min(options.batch, options.budget - len(self.state.proposals))
        exclude = {IngredientCounts(tuple(p["counts"])) for p in self.state.proposals}
        picks = propose(ctx.space, ctx.tasks, obs, X, Y, self.objectives, [], k, seed=options.seed * 1000 + round_no,
                        exclude=exclude, fidelity=True)
        if not picks:
            return None
        proposals = []
        for p in picks:
            origin = f"mix search {self.name}, round {round_no} ({p.how})"
            run = proposal_run(ctx.plan, ctx.space, p.mixture, ctx.model_index, self.seed0, origin, ctx.settings)
            proposals.append({"run_id": run.run_id, "counts": list(p.mixture.counts), "origin": origin, "how": p.how,
                              "acquisition": None if np.isnan(p.acquisition) else p.acquisition,
                              "predicted": {t: list(v) for t, v in p.predicted.items()}, "weights": p.weights})
        round_ = {"round": round_no, "proposals": proposals}
        self.state.data["rounds"].append(round_)
        self.state.save()  # before the jobs start: a kill from here on resumes this round
        return round_

    def replicate(self) -> None:
        """Train the incumbent again with `replicates` other seeds; if its mean falls below the runner-up's
        (single-seed) score, the runner-up too. The recommendation is then the best mean."""
        data, last = self.state.data, len(self.fractions) - 1
        if self.race.replicates <= 0:
            return
        by_id = {p["run_id"]: p for p in self.state.proposals}
        ranked = incumbents(data["reports"], last)
        for position, report in enumerate(ranked[:2]):
            p = by_id[report["run_id"]]
            done = {r["seed"] for r in data["replicates"] if r["of"] == p["run_id"]}
            seeds = [self.seed0 + i for i in range(1, self.race.replicates + 1) if self.seed0 + i not in done]
            jobs = [self.run_of(p, seed) for seed in seeds]
            if jobs:
                seed_of = {j.run_id: j.seed for j in jobs}
                for rid, rung, seconds in self.execute(jobs):
                    data["replicates"].append({"run_id": rid, "of": p["run_id"], "seed": seed_of[rid], "counts": p["counts"],
                                               "scores": rung["scores"], "objective": self.objective_of(rung["scores"]),
                                               "seconds": seconds, **self.validation_of(rid)})
                self.state.save()
            mine = [final_value(report)] + [final_value(r) for r in data["replicates"] if r["of"] == p["run_id"]]
            runner_up = final_value(ranked[position + 1]) if position + 1 < len(ranked) else -math.inf
            if position == 1 or float(np.mean(mine)) >= runner_up:
                break


def _full_length_runs(data: dict[str, Any], ctx: Context, fractions: tuple[float, ...], train_seed: int) -> list[RunObs]:
    """Every run that reached the end (proposals and replicates), with its full validation scores (`final_scores`):
    what the plain search's outputs (table, leave-one-out, recommendation, test comparison) read."""
    by_id = {p["run_id"]: p for r in data["rounds"] for p in r["proposals"]}
    out = []
    for r in data["reports"]:
        if r["rung"] == len(fractions) - 1:
            m = IngredientCounts(tuple(by_id[r["run_id"]]["counts"]))
            out.append(RunObs(r["run_id"], "mixture", "mix " + ctx.space.label(m), train_seed, m, final_scores(r)))
    for r in data["replicates"]:
        m = IngredientCounts(tuple(r["counts"]))
        out.append(RunObs(r["run_id"], "mixture", "mix " + ctx.space.label(m), r["seed"], m, final_scores(r)))
    return out


def final_value(report: dict[str, Any]) -> float:
    """What a finished run is ranked by: the objective of its full evaluation on the selection split (the
    objective's own metric); its curve's end for a run that recorded none (or a state from before).

    Rungs race on the curve's likelihood (continuous, cheap, less noisy on a small sample), but the
    recommendation must not rest on it alone: on the real runs here the best likelihood came with a
    collapsed accuracy on one task (docs/results.md)."""
    return float(report.get("selection_objective", report["objective"]))


def final_scores(report: dict[str, Any]) -> dict[str, float]:
    """Per-task scores beside `final_value`: the full validation evaluation's, else the curve's end."""
    return dict(report.get("validation") or report["scores"])


def incumbents(reports: list[dict[str, Any]], last: int) -> list[dict[str, Any]]:
    """The reports of proposals that reached the last rung, best `final_value` first (NaN ones left out)."""
    finals = [r for r in reports if r["rung"] == last and not math.isnan(final_value(r))]
    return sorted(finals, key=lambda r: -final_value(r))


def best_so_far(data: dict[str, Any], fractions: tuple[float, ...], per_job: float) -> list[dict[str, Any]]:
    """The best full-length objective (`final_value`) found against the hours spent, job by job, in the order they
    were recorded."""
    rows, hours, best, best_id = [], 0.0, None, None
    for r in data["reports"]:
        hours += r["seconds"] * per_job / 3600
        value = final_value(r)
        if r["rung"] == len(fractions) - 1 and not math.isnan(value) and (best is None or value > best):
            best, best_id = value, r["run_id"]
        rows.append({"hours": hours, "best": best, "run_id": best_id, "job": r["run_id"], "fraction": r["fraction"]})
    return rows


__all__ = ["RaceOptions", "RaceRun", "best_so_far", "final_scores", "final_value", "incumbents", "race_plan", "run_race"]
