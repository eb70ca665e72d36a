"""`mix search`: the loop. Read what the sweep's store knows, propose, train, refit, until the budget.

Every proposal is an ordinary run of the sweep (`mixture.proposal_run`): it goes through
`run_sweep` into the same store and run folders, on the same executors, so it scales out on
Ray and a killed run resumes from its checkpoint. The search's own state is one file,
`OUT/mix/NAME/search.json`, written (atomically) *before* a round's runs start: a rerun after a
kill reads it, finishes that round's runs (finished ones are skipped by the store), and goes
on. Its run ids are recomputed from the recorded mixtures and checked, so a sweep file whose
training or evaluation changed since is refused instead of mixing two configs.

Which runs it learns from: finished single-task, cocktail and mixture runs of the chosen model
whose training config (all but the cocktail and seed) and validation settings are the sweep's,
scored on the same validation samples (the store's sample hashes). Zero-shot rows are not
mixtures and are left out.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fincocktail.errors import ConfigError, FincocktailError
from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.plumbing.paths import check_name
from fincocktail.search.mixture import IngredientCounts, Space, make_space, proposal_run
from fincocktail.search.objective import Floor, Objective, floors, parse_constraints, parse_objective
from fincocktail.search.propose import Observed, propose
from fincocktail.sweep.spec import Plan, RunSpec, eval_settings, rates
from fincocktail.sweep.store import ResultsStore, check_same_samples

SEARCH_DIR = "mix"
STATE_FILE = "search.json"
STATE_VERSION = 1
TRAINED_KINDS = ("single", "cocktail", "mixture")
# Evaluation settings that decide a validation score: runs that differ in any are not comparable.
_SELECTION_KEYS = ("selection_split", "selection_max_examples", "selection_max_examples_per_task", "max_examples_per_task",
                   "sample", "sample_seed", "mode", "shots", "dtype", "max_new_tokens")


@dataclass(frozen=True)
class SearchOptions:
    objectives: tuple[str, ...] = ("mean",)
    constraints: tuple[str, ...] = ()
    budget: int = 8
    batch: int = 2
    seed: int = 0
    model: str | None = None
    total: tuple[int, int] | None = None
    name: str | None = None
    fresh: bool = False  # learn only from this search's own proposals (not the sweep's runs): a search from scratch
    budget_hours: float | None = None  # stop proposing when these CPU- or GPU-hours are spent (`search.budget`)
    replicates: int = 0  # extra seeds of the incumbent (and the runner-up, if the incumbent falls) before recommending


@dataclass
class RunObs:
    """One finished run the surrogate learns from."""

    run_id: str
    kind: str
    label: str
    seed: int
    mixture: IngredientCounts
    scores: dict[str, float]  # validation headline score per task
    train_tasks: tuple[str, ...] = ()
    boosted: bool = False  # trained with general or math data


@dataclass
class Context:
    """Everything a search (or `mix predict`) derives from the sweep file and its store."""

    plan: Plan
    out_dir: Path
    space: Space
    model_index: int
    tasks: list[str]  # the validation (selection) tasks: what the surrogate predicts
    settings: tuple[dict[str, Any], list[str] | None]
    store: ResultsStore | None

    @property
    def model(self) -> str:
        return self.plan.spec.models[self.model_index].name

    def runs(self) -> list[RunObs]:
        return gather(self) if self.store is not None else []


def context(plan: Plan, out_dir: str | os.PathLike | None, model: str | None = None,
            total: tuple[int, int] | None = None, need_store: bool = False) -> Context:
    spec = plan.spec
    if not spec.models:
        raise ConfigError(f"{plan.source}: models: mix search needs a model to fine-tune")
    names = [m.name for m in spec.models]
    if model is None:
        mi = 0
    elif model in names:
        mi = names.index(model)
    else:
        raise ConfigError(f"--model {model}: not a model of {plan.source} ({', '.join(names)})")
    settings = eval_settings(spec, plan.source)
    tasks = list(settings[0]["selection_tasks"])
    if not settings[0].get("selection_split") or not tasks:
        raise ConfigError(f"{plan.source}: eval.selection_split: mix search chooses on validation scores; "
                          "this sweep has none (set eval.selection_split: validation)")
    out = Path(out_dir) if out_dir is not None else plan.out_dir
    store = ResultsStore.in_dir(out, create=False) if (out / "results.sqlite").is_file() else None
    if store is None and need_store:
        raise FincocktailError(f"{out}: no results store; run `fincocktail sweep run {plan.source}` (or `mix search`) first")
    return Context(plan, out, make_space(plan, total), mi, tasks, settings, store)


def _train_signature(train: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in train.items() if k not in ("cocktail", "seed")}, sort_keys=True)


def _eval_signature(ev: dict[str, Any]) -> str:
    return json.dumps({k: ev.get(k) for k in _SELECTION_KEYS}, sort_keys=True)


def gather(ctx: Context) -> list[RunObs]:
    """The finished runs comparable with the sweep's (see the module docstring), with their validation scores."""
    assert ctx.store is not None
    probe = proposal_run(ctx.plan, ctx.space, ctx.space.make(np.ones(len(ctx.space.names)), ctx.space.total_min),  # type: ignore[arg-type]
                         ctx.model_index, 0, "probe", ctx.settings)
    train_sig, eval_sig = _train_signature(probe.train or {}), _eval_signature(probe.eval)
    split = ctx.settings[0]["selection_split"]
    rows = [m for m in ctx.store.metrics(split=split, headline_only=True) if m.task in ctx.tasks]
    by_run: dict[str, dict[str, Any]] = defaultdict(dict)
    out: list[RunObs] = []
    used = []
    for r in ctx.store.runs(status="done"):
        if r.kind not in TRAINED_KINDS or r.model != ctx.model:
            continue
        train, ev = r.config.get("train") or {}, r.config.get("eval") or {}
        if _train_signature(train) != train_sig or _eval_signature(ev) != eval_sig:
            continue
        mixture = ctx.space.of_run(r.config)
        if mixture is None or mixture.total == 0:
            continue
        by_run[r.run_id] = {}
        out.append(RunObs(r.run_id, r.kind, r.label, r.seed, mixture, {}, r.train_tasks, bool(r.general or r.math)))
    for m in rows:
        if m.run_id in by_run:
            by_run[m.run_id][m.task] = m.value
            used.append(m)
    check_same_samples(used, ctx.store.path)
    for o in out:
        o.scores = by_run[o.run_id]
    return out


def observed(runs: list[RunObs]) -> list[Observed]:
    """Runs grouped by mixture (repeats with other seeds), scores averaged per task."""
    groups: dict[IngredientCounts, list[RunObs]] = defaultdict(list)
    for r in runs:
        groups[r.mixture].append(r)
    out = []
    for m, rs in groups.items():
        tasks = sorted({t for r in rs for t in r.scores})
        scores = {t: float(np.mean([r.scores[t] for r in rs if t in r.scores])) for t in tasks}
        out.append(Observed(m, scores, tuple(r.run_id for r in rs)))
    return out


def matrix(ctx: Context, runs: list[RunObs]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(features, scores n x tasks with NaN for missing, group index of each run)."""
    X = ctx.space.features([r.mixture for r in runs])
    Y = np.array([[r.scores.get(t, np.nan) for t in ctx.tasks] for r in runs], dtype=float).reshape(len(runs), len(ctx.tasks))
    index: dict[IngredientCounts, int] = {}
    groups = [index.setdefault(r.mixture, len(index)) for r in runs]
    return X, Y, groups


def single_scores(runs: list[RunObs]) -> dict[str, float]:
    """Each task's single-task validation score (mean over seeds): what `no-task-below-single` compares with."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.kind == "single" and not r.boosted and len(r.train_tasks) == 1 and r.train_tasks[0] in r.scores:
            acc[r.train_tasks[0]].append(r.scores[r.train_tasks[0]])
    return {t: float(np.mean(v)) for t, v in acc.items()}


# --------------------------------------------------------------------------------------------
# State


def search_name(objectives: list[Objective], constraints: list[str]) -> str:
    parts = [o.slug for o in objectives] + [c.replace(":", "-").replace("=", "").replace(".", "p") for c in constraints]
    return "__".join(parts)


@dataclass
class State:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def proposals(self) -> list[dict[str, Any]]:
        return [p for r in self.data["rounds"] for p in r["proposals"]]

    def save(self) -> None:
        write_json_atomic(self.path, self.data, sort_keys=True)


def load_state(path: Path, header: dict[str, Any]) -> State:
    """The search's state, or a new one. A state started with other settings is refused (budget and batch may change)."""
    if not path.is_file():
        return State(path, {**header, "version": STATE_VERSION, "rounds": []})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FincocktailError(f"{path}: unreadable search state ({exc}); move it away to start the search over") from None
    for key, value in header.items():
        if data.get(key) != value:
            raise ConfigError(f"{path}: {key}: this search was started with {data.get(key)!r}, now {value!r}; "
                              "use --name for a second search, or the same options to resume")
    return State(path, data)


@dataclass
class SearchRun:
    """What `run_search` hands to the outputs: the context, the state and the final runs."""

    ctx: Context
    state: State
    objectives: list[Objective]
    floors: list[Floor]
    notes: list[str]
    runs: list[RunObs]
    dir: Path
    executed: list[str] = field(default_factory=list)


def run_search(plan: Plan, options: SearchOptions, out_dir: str | os.PathLike | None = None, executor: Any = None,
               runner: Any = "real", data_dir: str | None = None, progress: bool = True, say: Any = None) -> SearchRun:
    """Propose, train and refit until `options.budget` mixtures have been proposed or `options.budget_hours` spent
    (whichever comes first, when both are given), then replicate the incumbent (`options.replicates`); resumable
    (module docstring)."""
    from fincocktail.search.budget import hours_unit, replicates_hours, round_fits

    if (options.budget < 0 or options.batch < 1 or options.replicates < 0
            or (options.budget_hours is not None and options.budget_hours <= 0)):
        raise ConfigError(f"--budget {options.budget} / --budget-hours {options.budget_hours} / --batch {options.batch} / "
                          f"--replicates {options.replicates}: expected budget >= 0, budget-hours > 0, batch >= 1 and "
                          "replicates >= 0")
    ctx = context(plan, out_dir, options.model, options.total)
    objectives = [parse_objective(o, ctx.tasks) for o in options.objectives]
    constraints = parse_constraints(options.constraints, ctx.tasks)
    name = options.name or search_name(objectives, constraints) + ("__fresh" if options.fresh else "")
    try:
        check_name(name)  # it becomes OUT/mix/<name>: '../../X' would create a folder outside OUT
    except ValueError as exc:
        raise ConfigError(f"--name: {exc}") from None
    sdir = ctx.out_dir / SEARCH_DIR / name
    header = {"sweep": plan.spec.name, "model": ctx.model, "objectives": list(options.objectives),
              "constraints": constraints, "seed": options.seed,
              "total": [ctx.space.total_min, ctx.space.total_max], "ingredients": list(ctx.space.names),
              **({"fresh": True} if options.fresh else {})}
    state = load_state(sdir / STATE_FILE, header)
    state.data.setdefault("replicates", [])
    unit, per_job = hours_unit(executor)
    proposal_s = 0.0
    if options.budget_hours is not None:
        existing = ResultsStore.in_dir(ctx.out_dir, create=False) if (ctx.out_dir / "results.sqlite").is_file() else None
        costs, why = job_costs(ctx, existing)
        proposal_s = costs["overhead"] + costs["train"] + costs["eval"]  # a plain run draws no curve unless the sweep asks
        reserve = replicates_hours(options.replicates, (), proposal_s, per_job)
        if say:
            say(f"search {name}: budget {options.budget_hours:g} {unit} ({per_job:g} per job); a proposal ~"
                f"{proposal_s / 60:.1f} min ({why}) -> about "
                f"{max(0, int((options.budget_hours - reserve) * 3600 / per_job / proposal_s))} proposals in rounds of "
                f"{options.batch}" + (f", then {options.replicates} replicate run(s) of the winner" if options.replicates else ""))
    seed0 = plan.spec.seeds[0]

    def known_runs() -> list[RunObs]:
        own = {p["run_id"] for p in state.proposals} | {r["run_id"] for r in state.data["replicates"]}
        return [r for r in ctx.runs() if not options.fresh or r.run_id in own]

    def recorded_runs() -> list[RunSpec]:
        recorded = [(p, seed0) for p in state.proposals] + [(r, r["seed"]) for r in state.data["replicates"]]
        return [_recorded_run(plan, ctx, p, seed, state.path) for p, seed in recorded]
    executed: list[str] = []

    while True:
        runs = recorded_runs()
        executed += _train(plan, ctx, runs, executor, runner, data_dir, progress)
        if options.budget and len(state.proposals) >= options.budget:
            break
        if options.budget_hours is not None:
            seconds = wall_seconds(ctx.store, runs)
            spent = sum(seconds) * per_job / 3600
            rounds = len(state.data["rounds"])
            round_h = spent / rounds if rounds else options.batch * proposal_s * per_job / 3600
            if not round_fits(options.budget_hours - replicates_hours(options.replicates, seconds, proposal_s, per_job), spent,
                              round_h):
                break
        elif len(state.proposals) >= options.budget:
            break
        obs_runs = known_runs()
        fl, _ = floors(constraints, objectives, single_scores(obs_runs))
        X, Y, _ = matrix(ctx, obs_runs)
        k = min(options.batch, options.budget - len(state.proposals)) if options.budget else options.batch
        exclude = {o.mixture for o in obs_runs} | {IngredientCounts(tuple(p["counts"])) for p in state.proposals}
        round_no = len(state.data["rounds"]) + 1
        picks = propose(ctx.space, ctx.tasks, observed(obs_runs), X, Y, objectives, fl, k,
                        seed=options.seed * 1000 + round_no, exclude=exclude)
        if not picks:
            break
        proposals = []
        for p in picks:
            origin = f"mix search {name}, round {round_no} ({p.how})"
            run = proposal_run(plan, ctx.space, p.mixture, ctx.model_index, seed0, origin, ctx.settings)
            proposals.append({"run_id": run.run_id, "counts": list(p.mixture.counts), "origin": origin, "how": p.how,
                              "acquisition": None if np.isnan(p.acquisition) else p.acquisition,
                              "predicted": {t: list(v) for t, v in p.predicted.items()}, "weights": p.weights})
        state.data["rounds"].append({"round": round_no, "proposals": proposals})
        state.save()  # before the runs start: a kill from here on resumes this round
    if options.replicates and state.data.get("confirmed") != options.replicates:  # a rerun does not go again
        executed += _confirm(plan, ctx, state, options.replicates, objectives[0], name, known_runs,
                             lambda: _train(plan, ctx, recorded_runs(), executor, runner, data_dir, progress))
    final = known_runs()
    fl, notes = floors(constraints, objectives, single_scores(final))
    hours = sum(wall_seconds(ctx.store, recorded_runs())) * per_job / 3600
    state.data["spent"] = {"unit": unit, "per_job": per_job, "hours": hours, "budget_hours": options.budget_hours}
    state.save()
    return SearchRun(ctx, state, objectives, fl, notes, final, sdir, executed)


def job_costs(ctx: Context, store: ResultsStore | None) -> tuple[dict[str, float], str]:
    """Seconds of a typical full proposal (overhead, training, full evaluation, one curve point), from the sweep's
    rates scaled by what its finished runs measured against their estimates."""
    spec = ctx.plan.spec
    probe = proposal_run(ctx.plan, ctx.space, ctx.space.make(np.ones(len(ctx.space.names)),  # type: ignore[arg-type]
                         math.sqrt(ctx.space.total_min * ctx.space.total_max)), ctx.model_index, 0, "probe", ctx.settings)
    token_rate, eval_rate = rates(spec, spec.models[ctx.model_index])
    train_s = probe.est_tokens / (token_rate or 300.0)
    overhead = spec.estimates.overhead_s
    eval_s = max(0.0, probe.est_seconds - overhead - train_s)
    curve_rows = int(spec.training.get("eval_examples", 64)) * len(ctx.tasks)
    curve_s = curve_rows / (eval_rate or 10.0) / 3  # a curve point scores choices (likelihood only): ~3x eval's rate
    scale, why = 1.0, "the sweep's estimates"
    done = [r for r in (store.runs(status="done") if store else []) if r.wall_time_s and r.est_seconds]
    if done:
        scale = sum(r.wall_time_s or 0 for r in done) / sum(r.est_seconds for r in done)
        why = f"the sweep's estimates x {scale:.2f}, as its {len(done)} finished run(s) measured"
    return {"overhead": overhead * scale, "train": train_s * scale, "eval": eval_s * scale, "curve": curve_s * scale}, why


def _confirm(plan: Plan, ctx: Context, state: State, replicates: int, objective: Objective, name: str,
             known_runs: Any, train: Any) -> list[str]:
    """Train the incumbent with `replicates` more seeds; if its mean over seeds is no longer the best, the runner-up
    too (and stop there). Recorded in the state before training, so a kill resumes the same replicates."""
    seed0, executed = plan.spec.seeds[0], []
    for position in range(2):
        runs = known_runs()
        ranked = _ranked_mixtures(runs, objective)
        if position >= len(ranked):
            break
        mixture = ranked[position][0]
        have = {r.seed for r in runs if r.mixture == mixture} | {
            r["seed"] for r in state.data["replicates"] if tuple(r["counts"]) == mixture.counts}
        seed = seed0
        while len(have) < 1 + replicates:
            seed += 1
            if seed not in have:
                origin = f"mix search {name}, replicate"
                run = proposal_run(plan, ctx.space, mixture, ctx.model_index, seed, origin, ctx.settings)
                state.data["replicates"].append({"run_id": run.run_id, "counts": list(mixture.counts), "seed": seed,
                                                 "origin": origin})
                have.add(seed)
        state.save()
        executed += train()
        if position == 1 or _ranked_mixtures(known_runs(), objective)[0][0] == mixture:  # still the best: confirmed
            break
    state.data["confirmed"] = replicates
    return executed


def _recorded_run(plan: Plan, ctx: Context, p: dict[str, Any], seed: int, path: Path) -> RunSpec:
    """A proposal (or replicate) of the state as a run of the sweep; refused when the sweep would now plan another."""
    run = proposal_run(plan, ctx.space, IngredientCounts(tuple(p["counts"])), ctx.model_index, seed, p["origin"], ctx.settings)
    if run.run_id != p["run_id"]:
        raise ConfigError(f"{path}: proposal {p['run_id']} would now be run {run.run_id}: the sweep's training "
                          f"or evaluation settings changed since the search started; use another --name or --out")
    return run


def _train(plan: Plan, ctx: Context, runs: list[RunSpec], executor: Any, runner: Any, data_dir: str | None,
           progress: bool) -> list[str]:
    """Train and evaluate those of `runs` the store has not finished; the ids executed now."""
    from fincocktail.sweep.executors import run_sweep

    store = ResultsStore.in_dir(ctx.out_dir)  # created on the first round when the sweep never ran
    ctx.store = store
    status = {r.run_id: r.status for r in store.runs()}
    todo = [r.run_id for r in runs if status.get(r.run_id) != "done"]
    if not todo:
        return []
    summary = run_sweep(Plan(plan.spec, plan.source, plan.runs + runs), ctx.out_dir, executor, runner, data_dir,
                        progress, only=todo)
    if summary.failed:
        first = next(iter(summary.failed.items()))
        raise FincocktailError(f"mix search: {len(summary.failed)} proposed run(s) failed ({first[0]}: {first[1]}); "
                               "rerun the same command to retry them")
    return list(summary.executed)


def _ranked_mixtures(runs: list[RunObs], objective: Objective) -> list[tuple[IngredientCounts, float]]:
    """Mixtures by their measured objective, the mean over their seeds (what the recommendation reads), best first."""
    by: dict[IngredientCounts, list[float]] = defaultdict(list)
    for r in runs:
        v = objective.value(r.scores)
        if v is not None:
            by[r.mixture].append(float(v))
    return sorted(((m, float(np.mean(v))) for m, v in by.items()), key=lambda mv: -mv[1])


def wall_seconds(store: ResultsStore | None, runs: list[RunSpec]) -> list[float]:
    """The measured wall time of each of `runs` the store holds (x the cores or GPUs a job held: the hours spent)."""
    if store is None:
        return []
    ids = {r.run_id for r in runs}
    return [r.wall_time_s or 0.0 for r in store.runs() if r.run_id in ids]
