"""Mixture-search methods side by side on one sweep store, at the CPU time each spent.

Methods: the sweep's hand-built design (its recommendation: the hand-built cocktail with the best
validation objective), and each search named with --search (a folder under OUT/mix/: today's
search run with --fresh, a racing search run with --race). Per method this prints the CPU-hours
its runs or jobs took (measured wall time x cores per job), how many runs or proposals, the
recommendation, and, on test, the objective's paired difference against the best single-task run
per task and against the best hand-built cocktail (95% intervals, the report's Findings contrasts).
It also prints each search surrogate's leave-one-mixture-out Spearman on the validation
likelihood (gold-choice probability), refitted here on that metric for searches that chose on
accuracy; for a racing search, on its rung reports, per rung (`race_rung_loo`).

    .venv/bin/python bench/race_compare.py SWEEP.yaml --out SWEEP_OUT --search mean__fresh --search race__mean [--cores 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def objective_row(an, run_ids, weights):
    from fincocktail.report.mixture_compare import compare

    rows = compare(an, run_ids, weights)
    return rows[-1] if rows and rows[-1].task == "objective" else None


def fmt(diff) -> str:
    return "–" if diff is None else f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"


def numbers(diff) -> dict | None:
    return None if diff is None else {"value": diff.value, "low": diff.low, "high": diff.high}


def likelihood_loo(sweep: Path, out: Path, run_ids: list[str], tasks: list[str]) -> float:
    """Leave-one-mixture-out Spearman of the mean validation gold-choice probability, a GP per task fitted on `run_ids`."""
    import numpy as np

    from fincocktail.search.search import context, matrix
    from fincocktail.search.surrogate import leave_one_out, spearman
    from fincocktail.sweep.spec import load_plan

    ctx = context(load_plan(sweep), out, need_store=True)
    runs = [r for r in ctx.runs() if r.run_id in set(run_ids)]
    likelihood = {(m.run_id, m.task): m.value for m in ctx.store.metrics(split="validation") if m.metric == "gold_prob"}
    for r in runs:
        r.scores = {t: likelihood[(r.run_id, t)] for t in tasks if (r.run_id, t) in likelihood}
    X, Y, groups = matrix(ctx, runs)
    mu, _ = leave_one_out(ctx.tasks, X, Y, groups)
    first = {g: i for i, g in reversed(list(enumerate(groups)))}
    measured = [float(np.nanmean(Y[[i for i, g in enumerate(groups) if g == k]], axis=0).mean()) for k in first]
    predicted = [float(mu[first[k]].mean()) for k in first]
    return spearman(measured, predicted)


def race_rung_loo(sweep: Path, out: Path, state: dict, tasks: list[str]) -> str:
    """A racing search's surrogate checked on what it learns from: leave-one-mixture-out over every rung report
    (the share of steps an input, as in the search), Spearman of measured against predicted mean curve
    likelihood among the mixtures at the same rung ("rung: rho (n)"); across rungs the ranks would mostly
    reflect the rung itself."""
    import numpy as np

    from fincocktail.search.mixture import IngredientCounts
    from fincocktail.search.race import race_plan
    from fincocktail.search.search import context
    from fincocktail.search.surrogate import leave_one_out, spearman
    from fincocktail.sweep.spec import load_plan

    plan = load_plan(sweep)
    ctx = context(race_plan(plan, context(plan, out).tasks), out)
    counts = {p["run_id"]: tuple(p["counts"]) for r in state["rounds"] for p in r["proposals"]}
    rows = [(counts[r["run_id"]], r["fraction"], r["scores"]) for r in state["reports"]]
    rows += [(tuple(r["counts"]), 1.0, r["scores"]) for r in state["replicates"]]
    mixtures = sorted({m for m, _, _ in rows})
    X = np.hstack([ctx.space.features([IngredientCounts(m) for m, _, _ in rows]), np.array([[f] for _, f, _ in rows])])
    Y = np.array([[s.get(t, np.nan) for t in ctx.tasks] for _, _, s in rows], dtype=float)
    mu, _ = leave_one_out(ctx.tasks, X, Y, [mixtures.index(m) for m, _, _ in rows])
    parts = []
    for f in sorted({f for _, f, _ in rows}):
        at = [i for i, (_, g, _) in enumerate(rows) if g == f]
        by_mix: dict[tuple, list[int]] = {}
        for i in at:
            by_mix.setdefault(rows[i][0], []).append(i)
        if len(by_mix) >= 3:
            measured = [float(np.nanmean(Y[ii])) for ii in by_mix.values()]
            predicted = [float(np.nanmean(mu[ii])) for ii in by_mix.values()]
            parts.append(f"{f:g}: {spearman(measured, predicted):.2f} ({len(by_mix)})")
    return "; ".join(parts) or "–"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--search", action="append", default=[])
    p.add_argument("--cores", type=float, default=1.0, help="cores each run held (a local worker's threads)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from fincocktail.report.analysis import Analysis
    from fincocktail.report.mixture_compare import best_on_objective
    from fincocktail.report.records import from_store
    from fincocktail.sweep.store import ResultsStore

    store = ResultsStore.in_dir(args.out, create=False)
    an = Analysis(from_store(store))
    runs = {r.run_id: r for r in store.runs()}
    out = []
    design = [r for r in runs.values() if r.kind in ("single", "cocktail") and r.status == "done"]
    tasks = sorted({t for r in design for t in r.train_tasks})
    weights = {t: 1.0 / len(tasks) for t in tasks}
    cocktails = an.recipes_of("cocktail")  # a design of single-task runs only has no hand-built recommendation
    ref = best_on_objective(an, cocktails, weights) if cocktails else None
    ref_ids = [r.run_id for r in an.data.runs if r.recipe == ref] if ref else []
    row = objective_row(an, ref_ids, weights) if ref_ids else None
    out.append({"method": "hand-built design", "cpu_hours": sum(r.wall_time_s or 0 for r in design) * args.cores / 3600,
                "runs": len(design), "recommended": an.recipe_label(ref) if ref else "– (single-task runs only)",
                "validation": row.recommended["validation"].value if row and row.recommended["validation"] else None,
                "test": row.recommended["test"].value if row and row.recommended["test"] else None,
                "vs_single": fmt(row.diffs.get("best single-task")) if row else "–", "vs_cocktail": "(itself)",
                "vs_single_diff": numbers(row.diffs.get("best single-task")) if row else None,
                "vs_cocktail_diff": {"value": 0.0, "low": 0.0, "high": 0.0} if row else None,
                "loo_search_metric": None,  # the design chose nothing by a surrogate; how well one fitted on it ranks:
                "loo_likelihood": likelihood_loo(args.sweep, args.out, [r.run_id for r in design], tasks)
                if len(design) >= 3 else None})
    for name in args.search:
        summary = json.loads((args.out / "mix" / name / "summary.json").read_text())
        rec = summary.get("recommended") or {}
        row = objective_row(an, rec.get("run_ids", []), summary["weights"][summary["objectives"][0]])
        race = summary.get("race")
        ids = [i for m in summary["mixtures"] for i in m["run_ids"]]
        if race:
            hours, count = race["spent_hours"], f"{len(race['proposals'])} proposals, {race['jobs']} jobs"
        else:
            hours, count = sum(runs[i].wall_time_s or 0 for i in ids) * args.cores / 3600, f"{len(ids)} runs"
        loo = summary["surrogate"]["objectives"][summary["objectives"][0]]["spearman"]
        out.append({"method": name, "cpu_hours": hours, "runs": count,
                    "recommended": " ".join(f"{t}:{c}" for t, c in rec.get("counts", {}).items() if c) or "–",
                    "validation": row.recommended["validation"].value if row and row.recommended["validation"] else None,
                    "test": row.recommended["test"].value if row and row.recommended["test"] else None,
                    "vs_single": fmt(row.diffs.get("best single-task")) if row else "–",
                    "vs_cocktail": fmt(row.diffs.get("best cocktail")) if row else "–",
                    "vs_single_diff": numbers(row.diffs.get("best single-task")) if row else None,
                    "vs_cocktail_diff": numbers(row.diffs.get("best cocktail")) if row else None,
                    "loo_search_metric": loo,
                    "loo_likelihood": (race_rung_loo(args.sweep, args.out, json.loads((args.out / "mix" / name / "search.json")
                                                                                       .read_text()), summary["tasks"])
                                       if race else likelihood_loo(args.sweep, args.out, ids, summary["tasks"]))})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    cols = ["method", "cpu_hours", "runs", "recommended", "validation", "test", "vs_single", "vs_cocktail",
            "loo_search_metric", "loo_likelihood"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for o in out:
        print("| " + " | ".join(f"{o[c]:.3f}" if isinstance(o[c], float) else str(o[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
