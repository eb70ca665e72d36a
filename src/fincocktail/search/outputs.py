"""What a search writes into `OUT/mix/NAME/`, and the numbers behind it.

- `recommended.yaml`: the recommended mixture as a ready-to-train cocktail (configs/cocktails format);
- `mixtures.csv` / `mixtures.md`: every evaluated mixture, measured and predicted validation scores per task;
- `surrogate.json`: leave-one-mixture-out Spearman and calibration, per task and for the objective;
- `predicted_vs_measured.png`;
- `comparison.md`: on test, the recommendation beside the best single-task run and the best hand-built cocktail;
- `summary.json`: all of the above as data (the report's Mixture search section reads it).

The recommendation is the evaluated mixture with the best *measured* validation objective among
those meeting the constraints (measured, not predicted: the surrogate proposes, measurements
decide). Test scores are read only for the comparison.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from fincocktail.cocktail import parse_cocktail
from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.report.mixture_compare import NOTE, compare, table, verdict
from fincocktail.report.mixture_section import SUMMARY_FILE
from fincocktail.report.tables import md_table
from fincocktail.search.objective import Objective, feasible
from fincocktail.search.search import SearchRun, matrix
from fincocktail.search.surrogate import calibration, leave_one_out, spearman



@dataclass
class Group:
    """One evaluated mixture (its runs are repeats with other seeds)."""

    index: int
    run_ids: list[str]
    kind: str
    label: str
    source: str
    measured: dict[str, float]
    loo: dict[str, tuple[float, float]]
    proposed: dict[str, tuple[float, float]] | None
    describe: dict[str, Any]


def _groups(sr: SearchRun, mu: np.ndarray, sd: np.ndarray, groups: list[int]) -> list[Group]:
    proposals = {p["run_id"]: p for p in sr.state.proposals}
    rows: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        rows[g].append(i)
    out = []
    for g, idx in rows.items():
        runs = [sr.runs[i] for i in idx]
        first = runs[0]
        measured = {t: float(np.mean([r.scores[t] for r in runs if t in r.scores]))
                    for t in sr.ctx.tasks if any(t in r.scores for r in runs)}
        loo = {t: (float(mu[idx[0], j]), float(sd[idx[0], j])) for j, t in enumerate(sr.ctx.tasks)}
        prop = proposals.get(first.run_id)
        out.append(Group(
            g, [r.run_id for r in runs], first.kind, first.label,
            prop["origin"].split(", ", 1)[-1] if prop else f"sweep ({first.kind})",
            measured, loo, {t: tuple(v) for t, v in prop["predicted"].items()} if prop and prop["predicted"] else None,  # type: ignore[misc]
            sr.ctx.space.describe(first.mixture),
        ))
    return out


def _objective(o: Objective, tasks: list[str], g: Group) -> tuple[float | None, float, float]:
    """(measured, LOO predicted mean, sd) of objective `o` for a mixture."""
    w = o.vector(tasks)
    m = np.array([g.loo[t][0] for t in tasks])
    s = np.array([g.loo[t][1] for t in tasks])
    return o.value(g.measured), float(m @ w), float(np.sqrt((s**2) @ (w**2)))


def analyse(sr: SearchRun) -> dict[str, Any]:
    """The summary of a finished (or resumed-and-finished) search, as JSON-able data."""
    tasks = sr.ctx.tasks
    if not sr.runs:
        return {"name": sr.dir.name, "error": "no finished training runs with validation scores"}
    X, Y, groups = matrix(sr.ctx, sr.runs)
    mu, sd = leave_one_out(tasks, X, Y, groups, seed=sr.state.data["seed"])
    gs = _groups(sr, mu, sd, groups)
    main = sr.objectives[0]
    per_task = {}
    for j, t in enumerate(tasks):
        ok = np.isfinite(Y[:, j])
        measured = [g.measured[t] for g in gs if t in g.measured]
        predicted = [g.loo[t][0] for g in gs if t in g.measured]
        per_task[t] = {"spearman": spearman(measured, predicted), "mixtures": len(measured),
                       **calibration(Y[ok, j], mu[ok, j], sd[ok, j])}
    objectives = {}
    for o in sr.objectives:
        vals = [(_objective(o, tasks, g)) for g in gs]
        ok = [v for v in vals if v[0] is not None]
        objectives[o.text] = {"spearman": spearman([v[0] for v in ok], [v[1] for v in ok]), "mixtures": len(ok),
                              **calibration([v[0] for v in ok], [v[1] for v in ok], [v[2] for v in ok])}
    rows = []
    for g in gs:
        objs = {o.text: _objective(o, tasks, g) for o in sr.objectives}
        rows.append({"run_ids": g.run_ids, "kind": g.kind, "label": g.label, "source": g.source, **g.describe,
                     "measured": g.measured, "loo": {t: list(v) for t, v in g.loo.items()},
                     "proposed": {t: list(v) for t, v in g.proposed.items()} if g.proposed else None,
                     "objectives": {k: {"measured": v[0], "loo": [v[1], v[2]]} for k, v in objs.items()},
                     "feasible": feasible(g.measured, sr.floors)})
    eligible = [r for r in rows if r["objectives"][main.text]["measured"] is not None]
    ok_rows = [r for r in eligible if r["feasible"] is True]
    pool = ok_rows or eligible
    replicated = {r["run_id"] for r in sr.state.data.get("replicates", [])}
    # confirmed before recommended: when the search replicated, only a mixture it replicated can be recommended
    # (an unreplicated one above a replicated mean is usually a lucky seed, not a better mixture)
    pool = [r for r in pool if replicated & set(r["run_ids"])] or pool
    recommended = max(pool, key=lambda r: r["objectives"][main.text]["measured"]) if pool else None
    if recommended is not None:  # its seeds one by one: a replicated winner's spread
        recommended = {**recommended, "seeds": [{"run_id": r.run_id, "seed": r.seed, "objective": main.value(r.scores)}
                                                for r in sr.runs if r.run_id in recommended["run_ids"]]}
    pareto = None
    if len(sr.objectives) > 1:
        names = [o.text for o in sr.objectives]
        complete = [r for r in rows if all(r["objectives"][n]["measured"] is not None for n in names)]
        pareto = [complete[i]["run_ids"] for i in _pareto(complete, names)]
    return {
        "name": sr.dir.name, "sweep": sr.ctx.plan.spec.name, "model": sr.ctx.model,
        "objectives": [o.text for o in sr.objectives], "weights": {o.text: o.weights for o in sr.objectives},
        "constraints": sr.state.data["constraints"],
        "floors": [{"task": f.task, "value": f.value, "why": f.why} for f in sr.floors], "notes": sr.notes,
        "proposed": len(sr.state.proposals), "rounds": len(sr.state.data["rounds"]),
        "spent": sr.state.data.get("spent"),  # {unit, per_job, hours, budget_hours} of the search's own runs
        "ingredients": list(sr.ctx.space.names), "tasks": tasks,
        "surrogate": {"tasks": per_task, "objectives": objectives, "runs": len(sr.runs), "mixtures": len(gs)},
        "mixtures": rows,
        "recommended": recommended,
        "recommended_meets_constraints": bool(ok_rows) if sr.floors else None,
        "pareto": pareto,
    }


def _pareto(rows: list[dict[str, Any]], names: list[str]) -> list[int]:
    """Indices (into `rows`) of the mixtures no other mixture beats on every objective (measured validation)."""
    vals = [[r["objectives"][n]["measured"] for n in names] for r in rows]
    front = []
    for i, a in enumerate(vals):
        dominated = any(all(b[k] >= a[k] for k in range(len(a))) and any(b[k] > a[k] for k in range(len(a)))
                        for j, b in enumerate(vals) if j != i)
        if not dominated:
            front.append(i)
    return front


# --------------------------------------------------------------------------------------------
# Writing


def write_outputs(sr: SearchRun) -> dict[str, Any]:
    """Write every output of the search into its folder; returns the summary (with `files`)."""
    from fincocktail.sweep.store import SIMULATED_MARK

    summary = analyse(sr)
    summary["simulated"] = bool(sr.ctx.store is not None and sr.ctx.store.simulated())
    mark = f"{SIMULATED_MARK}\n\n" if summary["simulated"] else ""  # fake scores are said to be fake in every file
    out = sr.dir
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    rec = summary.get("recommended")
    if rec:
        store_run = sr.ctx.store.run(rec["run_ids"][0]) if sr.ctx.store else None
        raw = dict((store_run.config.get("train") or {}).get("cocktail") or {}) if store_run else {}
        cocktail = {"name": f"mix-{summary['name']}",
                    **parse_cocktail(raw, "recommended").model_dump(mode="json", exclude_defaults=True, exclude={"name"})}
        header = (("# " + mark if mark else "") + f"# Recommended by `fincocktail mix search` ({summary['name']}) on sweep {summary['sweep']}:\n"
                  f"# run {rec['run_ids'][0]} ({rec['source']}), validation {summary['objectives'][0]} = "
                  f"{rec['objectives'][summary['objectives'][0]]['measured']:.4f}. Chosen on validation scores only.\n")
        (out / "recommended.yaml").write_text(header + yaml.safe_dump(cocktail, sort_keys=False), encoding="utf-8")
        files["cocktail"] = "recommended.yaml"
    header_row, body = mixture_table(summary)
    (out / "mixtures.md").write_text(mark + md_table(header_row, body), encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header_row)
    writer.writerows(body)
    (out / "mixtures.csv").write_text(buf.getvalue(), encoding="utf-8")
    files["table"] = "mixtures.md"
    write_json_atomic(out / "surrogate.json", summary["surrogate"], sort_keys=True)
    if summary.get("mixtures"):
        from fincocktail.search.plot import predicted_vs_measured

        (out / "predicted_vs_measured.png").write_bytes(predicted_vs_measured(summary))
        files["plot"] = "predicted_vs_measured.png"
    comparison_md = ""
    if rec and sr.ctx.store is not None:
        from fincocktail.report.analysis import Analysis
        from fincocktail.report.records import from_store

        an = Analysis(from_store(sr.ctx.store))
        rows = compare(an, rec["run_ids"], summary["weights"][summary["objectives"][0]])
        h, b = table(rows)
        comparison_md = "\n".join([f"# {summary['name']}: recommended mixture on test", "", md_table(h, b), "",
                                   verdict(rows), "", NOTE, ""])
        summary["verdict"] = verdict(rows)
    (out / "comparison.md").write_text(mark + (comparison_md or "No recommendation yet.\n"), encoding="utf-8")
    files["comparison"] = "comparison.md"
    summary["files"] = files
    write_json_atomic(out / SUMMARY_FILE, summary, sort_keys=False)
    return summary


def mixture_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every evaluated mixture: where it came from, its counts, and per task measured vs predicted validation."""
    tasks = summary.get("tasks", [])
    main = summary["objectives"][0]
    header = ["runs", "from", "mixture (examples per epoch)", "total"]
    header += [f"{t} measured" for t in tasks] + [f"{t} predicted (LOO ± sd)" for t in tasks]
    header += [f"{main} measured", f"{main} predicted (LOO ± sd)", "when proposed", "meets constraints"]
    rec_ids = (summary.get("recommended") or {}).get("run_ids")
    body = []
    for r in sorted(summary.get("mixtures", []), key=lambda r: -(r["objectives"][main]["measured"] or -1)):
        mix = " ".join(f"{t}:{c}" for t, c in r["counts"].items() if c)
        objective = r["objectives"][main]
        prop = r.get("proposed")
        if prop:
            w = summary["weights"][main]
            pm = sum(w.get(t, 0) * v[0] for t, v in prop.items())
            ps = float(np.sqrt(sum((w.get(t, 0) * v[1]) ** 2 for t, v in prop.items())))
            when = f"{pm:.3f} ± {ps:.3f}"
        else:
            when = "–"
        body.append(
            [", ".join(r["run_ids"]) + (" **(recommended)**" if r["run_ids"] == rec_ids else ""), r["source"], mix, str(r["total"])]
            + [f"{r['measured'][t]:.3f}" if t in r["measured"] else "–" for t in tasks]
            + [f"{r['loo'][t][0]:.3f} ± {r['loo'][t][1]:.3f}" for t in tasks]
            + [f"{objective['measured']:.3f}" if objective["measured"] is not None else "–",
               f"{objective['loo'][0]:.3f} ± {objective['loo'][1]:.3f}", when,
               {True: "yes", False: "no", None: "–"}[r["feasible"]]]
        )
    return header, body
