"""Mixture search on synthetic objectives (no model): finds a known optimum, respects the simplex and
constraints, resumes after a kill, and its rank correlation agrees with scipy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr
from typer.testing import CliRunner

from fincocktail.cocktail import load_cocktail
from fincocktail.errors import ConfigError
from fincocktail.search.mixture import IngredientCounts, Space, make_space
from fincocktail.search.objective import feasible, floors, parse_constraints, parse_objective
from fincocktail.search.outputs import write_outputs
from fincocktail.search.propose import Observed, propose
from fincocktail.search.search import SearchOptions, run_search
from fincocktail.search.surrogate import Surrogate, calibration, leave_one_out, spearman
from fincocktail.search.synthetic import DEFAULT, Synthetic
from fincocktail.sweep.executors import run_sweep
from fincocktail.sweep.spec import load_plan
from fincocktail.sweep.store import ResultsStore

TASKS = ["fpb", "fiqa_sa", "tfns"]
SWEEP = {
    "name": "mixsim",
    "tasks": TASKS,
    "models": ["smollm2-135m-instruct"],
    "train_caps": {"fpb": 256, "fiqa_sa": 256, "tfns": 256},
    "general": {"task": "general", "fractions": [0, 0.25], "cap": 128},
    "design": {"boosters_on": ["cocktail"]},
    "training": {"max_steps": 2},
    "eval": {"tasks": TASKS, "max_examples": 20},
}  # base + 3 single + 2 incremental x (plain, +general) = 8 runs


def write_sweep(tmp_path: Path, data: dict = SWEEP) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**data, "out": str(tmp_path / "out")}), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# The algorithm against random search, on a function with a known optimum

PEAKY = Synthetic(
    peaks={"fpb": {"fpb": 0.5, "tfns": 0.3, "general": 0.2}, "fiqa_sa": {"fiqa_sa": 0.5, "fpb": 0.3, "general": 0.2},
           "tfns": {"tfns": 0.6, "fiqa_sa": 0.2, "general": 0.2}},
    best_total=300, curvature=2.0, total_curvature=0.2,
)
SPACE = Space(("fpb", "fiqa_sa", "tfns"), "general", None, (None,) * 4, (3268, 826, 8644, 1926), 100, 1000)
# What a sweep already has: the single-task runs, the all-task cocktail, and it with general data.
START = [IngredientCounts((256, 0, 0, 0)), IngredientCounts((0, 256, 0, 0)), IngredientCounts((0, 0, 256, 0)),
         IngredientCounts((256, 256, 256, 0)), IngredientCounts((256, 256, 256, 115))]


def peaky(m: IngredientCounts) -> dict[str, float]:
    counts = dict(zip(SPACE.names, m.counts))
    return {t: PEAKY.score(t, counts) for t in TASKS}


def best_regret(method: str, seed: int, budget: int = 12, batch: int = 3) -> float:
    optimum = PEAKY.optimum(TASKS)
    best = float(np.mean(list(peaky(SPACE.make([optimum[n] for n in SPACE.names], PEAKY.best_total)).values())))
    mixes = list(START)
    scores = [peaky(m) for m in mixes]
    objective = [parse_objective("mean", TASKS)]
    while len(mixes) < len(START) + budget:
        k = min(batch, len(START) + budget - len(mixes))
        if method == "search":
            X = SPACE.features(mixes)
            Y = np.array([[s[t] for t in TASKS] for s in scores])
            picks = [p.mixture for p in propose(SPACE, TASKS, [Observed(m, s) for m, s in zip(mixes, scores)], X, Y,
                                                objective, [], k, seed=seed * 100 + len(mixes), exclude=set(mixes))]
        else:
            picks = [m for m in SPACE.random(k + 4, seed=seed * 100 + len(mixes)) if m not in mixes][:k]
        mixes += picks
        scores += [peaky(m) for m in picks]
    return best - max(float(np.mean(list(s.values()))) for s in scores)


def test_search_finds_the_known_optimum_more_often_than_random_search():
    reps, tolerance = 5, 0.025
    found = {method: sum(best_regret(method, seed) <= tolerance for seed in range(reps)) for method in ("search", "random")}
    assert found["search"] > found["random"], found
    assert found["search"] >= 3, found


# --------------------------------------------------------------------------------------------
# Proposals: on the simplex, within caps and the total range, and meeting floors


def test_mixtures_respect_simplex_caps_and_total_range(tmp_path):
    plan = load_plan(write_sweep(tmp_path))
    space = make_space(plan)
    assert space.names == ("fpb", "fiqa_sa", "tfns", "general")
    assert (space.total_min, space.total_max) == (256, 896)  # a single-task run .. the all-task cocktail + general
    rng = np.random.default_rng(0)
    mixes = space.candidates(2000, rng, around=[IngredientCounts((256, 256, 256, 128))]) + space.random(64, seed=1)
    assert len(mixes) > 500
    for m in mixes:
        assert all(c >= 0 for c in m.counts)
        assert all(lim is None or c <= lim for c, lim in zip(m.counts, space.limits)), m
        assert space.total_min <= m.total <= space.max_total, m
        assert sum(m.counts[:3]) > 0  # boosters are fractions of task data: some task data always
    X = space.features(mixes)
    assert np.allclose(X[:, :4].sum(axis=1), 1) and (X >= 0).all() and (X[:, 4] <= 1).all()
    # the cap water-fills: 90% fpb at 700 examples keeps the total by moving the surplus to the others
    m = space.make([0.9, 0.05, 0.03, 0.02], 700)
    assert m.counts == (256, 222, 133, 89)
    assert space.make([0.9, 0.1, 0.0, 0.0], 700).counts == (256, 256, 0, 0)  # only ingredients in the mix take it
    # the cocktail a proposal trains is exactly the mixture (counts, booster as an exact fraction)
    for m in mixes[:50]:
        assert space.of_cocktail(space.cocktail(m, "x", 0)) == m


def test_proposals_respect_a_floor_constraint(tmp_path):
    plan = load_plan(write_sweep(tmp_path))
    out = tmp_path / "out"
    run_sweep(plan, out, runner=DEFAULT.run, progress=False)
    free = run_search(plan, SearchOptions(budget=6, batch=3), out, runner=DEFAULT.run, progress=False)
    floor = 0.82  # fpb near its own peak: the mean-optimal mixture falls short of it
    bound = run_search(plan, SearchOptions(budget=6, batch=3, constraints=(f"min:fpb={floor}",)), out, runner=DEFAULT.run,
                       progress=False)
    s_free, s_bound = write_outputs(free), write_outputs(bound)
    assert s_free["recommended"]["measured"]["fpb"] < floor
    rec = s_bound["recommended"]
    assert s_bound["recommended_meets_constraints"] and rec["measured"]["fpb"] >= floor
    assert rec["counts"]["fpb"] / rec["total"] > s_free["recommended"]["counts"]["fpb"] / s_free["recommended"]["total"]
    model_driven = [p for p in bound.state.proposals if p["how"] == "acquisition"]
    assert sum(p["predicted"]["fpb"][0] >= floor - 0.05 for p in model_driven) >= len(model_driven) / 2


def test_no_task_below_single_floors_every_weighed_task_at_its_single_task_score():
    objectives = [parse_objective("weights:fpb=1,tfns=1", TASKS)]
    fl, notes = floors(["no-task-below-single"], objectives, {"fpb": 0.7, "fiqa_sa": 0.6})
    assert [(f.task, f.value) for f in fl] == [("fpb", 0.7)]
    assert notes == ["no-task-below-single: tfns has no single-task run with a validation score; no floor"]
    assert feasible({"fpb": 0.71, "tfns": 0.1}, fl) is True and feasible({"fpb": 0.69}, fl) is False
    assert feasible({"tfns": 0.9}, fl) is None


def test_objective_and_constraint_errors_name_the_option():
    assert parse_objective("weights:fpb=2,tfns=1", TASKS).weights == pytest.approx({"fpb": 2 / 3, "tfns": 1 / 3})
    with pytest.raises(ConfigError, match=r"--objective fbp: task 'fbp' has no validation score"):
        parse_objective("fbp", TASKS)
    with pytest.raises(ConfigError, match=r"--objective weights:fpb=x: fpb: weight 'x' is not a number"):
        parse_objective("weights:fpb=x", TASKS)
    with pytest.raises(ConfigError, match=r"--constraint 'at-least-fpb': expected no-task-below-single or min:TASK=VALUE"):
        parse_constraints(["at-least-fpb"], TASKS)


# --------------------------------------------------------------------------------------------
# The loop: reuses the sweep's runs, resumes after a kill, writes its outputs


class Killed(BaseException):
    """Escapes execute_run's `except Exception`, like a kill would."""


def test_search_reuses_sweep_runs_and_resumes_after_a_kill_without_repeating_finished_runs(tmp_path):
    plan = load_plan(write_sweep(tmp_path))
    out = tmp_path / "out"
    run_sweep(plan, out, runner=DEFAULT.run, progress=False)
    calls: list[str] = []

    def dies_on_the_fourth(run, ctx):
        calls.append(run.run_id)
        if len(calls) == 4:
            raise Killed()
        return DEFAULT.run(run, ctx)

    options = SearchOptions(budget=6, batch=3)
    with pytest.raises(Killed):
        run_search(plan, options, out, runner=dies_on_the_fourth, progress=False)
    state = json.loads((out / "mix" / "mean" / "search.json").read_text())
    assert [len(r["proposals"]) for r in state["rounds"]] == [3, 3]  # round 2 was recorded before its runs started
    finished_before = calls[:3]

    def counting(run, ctx):
        calls.append(run.run_id)
        return DEFAULT.run(run, ctx)

    result = run_search(plan, options, out, runner=counting, progress=False)
    assert all(c.startswith("mixture-") for c in calls)  # the sweep's own runs were never paid for again
    again = calls[4:]
    assert not set(again) & set(finished_before)
    assert calls[3] in again and len(again) == 3  # the killed run and the rest of its round, once each
    store = ResultsStore.in_dir(out)
    mixture_runs = store.runs(kind="mixture")
    assert len(mixture_runs) == 6 and all(r.status == "done" for r in mixture_runs)
    assert {r.run_id: r.attempts for r in mixture_runs if r.run_id in finished_before} == {i: 1 for i in finished_before}
    assert [p["run_id"] for p in result.state.proposals][:6] == [p["run_id"] for r in state["rounds"] for p in r["proposals"]]
    # a finished search reruns without training anything
    assert run_search(plan, options, out, runner=counting, progress=False).executed == []

    summary = write_outputs(result)
    folder = out / "mix" / "mean"
    cocktail = load_cocktail(folder / "recommended.yaml")
    assert sum(i.count or 0 for i in cocktail.ingredients) > 0
    assert {"mixtures.md", "mixtures.csv", "surrogate.json", "predicted_vs_measured.png", "comparison.md"} <= {
        p.name for p in folder.iterdir()}
    assert summary["surrogate"]["mixtures"] == 7 + 6  # the sweep's trained mixtures + the proposals
    assert "never used to choose" in (folder / "comparison.md").read_text()
    assert summary["verdict"].startswith(("The search beat", "The search did", "The recommendation is the hand-built",
                                          "The recommendation, a different recipe"))


def test_a_failed_proposal_stops_the_search_and_a_rerun_retries_it(tmp_path):
    from fincocktail.errors import FincocktailError

    plan = load_plan(write_sweep(tmp_path))
    out = tmp_path / "out"
    run_sweep(plan, out, runner=DEFAULT.run, progress=False)

    def fails(run, ctx):
        raise RuntimeError("out of memory")

    with pytest.raises(FincocktailError, match=r"mix search: 2 proposed run\(s\) failed \(mixture-\w+: RuntimeError: out of memory\)"):
        run_search(plan, SearchOptions(budget=2, batch=2), out, runner=fails, progress=False)
    result = run_search(plan, SearchOptions(budget=2, batch=2), out, runner=DEFAULT.run, progress=False)
    assert len(result.executed) == 2 and len(result.state.data["rounds"]) == 1


def test_changed_sweep_is_refused_on_resume(tmp_path):
    path = write_sweep(tmp_path)
    plan = load_plan(path)
    out = tmp_path / "out"
    run_sweep(plan, out, runner=DEFAULT.run, progress=False)
    run_search(plan, SearchOptions(budget=2, batch=2), out, runner=DEFAULT.run, progress=False)
    changed = load_plan(write_sweep(tmp_path, {**SWEEP, "training": {"max_steps": 3}}))
    with pytest.raises(ConfigError, match=r"search\.json: proposal mixture-\w+ would now be run mixture-\w+"):
        run_search(changed, SearchOptions(budget=4, batch=2), out, runner=DEFAULT.run, progress=False)


# --------------------------------------------------------------------------------------------
# The surrogate's checks


def test_spearman_agrees_with_scipy_and_loo_matches_an_independent_refit():
    rng = np.random.default_rng(3)
    for n in (5, 12, 40):
        a = rng.integers(0, 6, n).astype(float)  # ties
        b = a + rng.normal(0, 2, n)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    X = SPACE.features(START + SPACE.random(8, seed=0))
    Y = np.array([[v for v in peaky(m).values()] for m in START + SPACE.random(8, seed=0)])
    groups = list(range(len(X)))
    groups[1] = 0  # rows 0 and 1 leave together
    mu, sd = leave_one_out(TASKS, X, Y, groups)
    alone = Surrogate(TASKS, restarts=0).fit(X[2:], Y[2:]).predict(X[:2])
    assert np.allclose(mu[:2], alone[0]) and np.allclose(sd[:2], alone[1])
    cal = calibration([0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert cal["coverage50"] == pytest.approx(2 / 3) and cal["coverage90"] == 1 and cal["z_rms"] == pytest.approx(np.sqrt(1 / 3))


# --------------------------------------------------------------------------------------------
# The command line and the report


def test_mix_cli_search_predict_and_report_section(tmp_path):
    from fincocktail.cli import app
    from fincocktail.report.build import build_report

    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    run_sweep(load_plan(path), out, runner=DEFAULT.run, progress=False)
    cli = CliRunner()
    res = cli.invoke(app, ["mix", "search", str(path), "--budget", "3", "--objective", "mean", "--objective", "tfns",
                           "--runner", "fincocktail.search.synthetic:run", "-q"])
    assert res.exit_code == 0, res.output
    assert "recommended:" in res.output and "Spearman" in res.output
    folder = out / "mix" / "mean__tfns"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["pareto"] and all(ids in [r["run_ids"] for r in summary["mixtures"]] for ids in summary["pareto"])

    res = cli.invoke(app, ["mix", "predict", str(path), str(folder / "recommended.yaml")])
    assert res.exit_code == 0, res.output
    assert all(t in res.output for t in TASKS) and "objective mean" in res.output and "95% interval" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingredients: [fpb, headline]\n")
    res = cli.invoke(app, ["mix", "predict", str(path), str(bad)])
    assert res.exit_code != 0 and "ingredients.1.task: task 'headline' is not an ingredient of this sweep" in str(res.exception)

    built = build_report(out)
    md = built.md.read_text()
    assert "## Mixture search: mean__tfns" in md and "never used to choose" in md
    assert "recommended mixture (mix search mean__tfns)" in md.split("## Main table")[1].split("\n")[2]
    assert (built.md.parent / "plots" / "mix_mean__tfns.png").is_file()
