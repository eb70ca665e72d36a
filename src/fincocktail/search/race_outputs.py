"""What a racing search adds to a search's outputs: `race.md` (every proposal at every rung, where it
stopped, the best found against the hours spent, the winner's seed spread), `best_so_far.csv` / `.png`,
and a `race` entry in `summary.json`."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.report.mixture_section import SUMMARY_FILE
from fincocktail.report.tables import md_table
from fincocktail.search.outputs import write_outputs
from fincocktail.search.race import RaceRun, best_so_far


def race_summary(rr: RaceRun, summary: dict[str, Any]) -> dict[str, Any]:
    data, fractions = rr.state, rr.fractions
    last = len(fractions) - 1
    by_run: dict[str, dict[int, float]] = {}
    stopped_at: dict[str, float] = {}
    for r in data["reports"]:
        by_run.setdefault(r["run_id"], {})[r["rung"]] = r["objective"]
        if r["stopped"]:
            stopped_at[r["run_id"]] = r["fraction"]
    proposals = []
    for round_ in data["rounds"]:
        for p in round_["proposals"]:
            values = by_run.get(p["run_id"], {})
            proposals.append({"round": round_["round"], "run_id": p["run_id"], "how": p["how"], "counts": p["counts"],
                              "objective_at": {f"{fractions[k]:g}": v for k, v in sorted(values.items())},
                              "stopped_at": stopped_at.get(p["run_id"]), "finished": last in values})
    curve = {rid: v[last] for rid, v in by_run.items() if last in v} | {r["run_id"]: r["objective"] for r in data["replicates"]}
    seeds = [{**s, "objective": math.nan if s["objective"] is None else s["objective"], "curve_objective": curve[s["run_id"]]}
             for s in (summary.get("recommended") or {}).get("seeds", [])]  # NaN as `final_value` gives a run without scores
    values = [s["objective"] for s in seeds]
    spent = sum(r["seconds"] for r in data["reports"] + data["replicates"]) * rr.per_job / 3600
    return {
        "unit": rr.unit, "budget_hours": rr.budget_hours, "spent_hours": spent, "fractions": list(fractions),
        "reduction": data["race"]["reduction"], "pruner": "optuna.pruners.SuccessiveHalvingPruner",
        "jobs": len(data["reports"]) + len(data["replicates"]), "proposals": proposals,
        "best_so_far": best_so_far(data, fractions, rr.per_job),
        "recommended_seeds": seeds,
        "recommended_mean": float(np.mean(values)) if values else None,
        "recommended_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "metric": "rungs: validation likelihood (the learning curve's value: gold-choice probability for choice tasks); "
                  "finished runs and the recommendation: the full validation evaluation's headline metric; "
                  "objective over the searched tasks",
    }


def write_race_outputs(rr: RaceRun) -> dict[str, Any]:
    """The plain search's outputs for the full-length runs, plus the race's own; returns the summary."""
    summary = write_outputs(rr.search)
    race = race_summary(rr, summary)
    summary["race"] = race
    out = rr.search.dir
    unit = race["unit"]
    fr = [f"{f:g}" for f in race["fractions"]]
    rows = [[str(p["round"]), p["run_id"], " ".join(f"{t}:{c}" for t, c in zip(summary["ingredients"], p["counts"]) if c)]
            + [_num(p["objective_at"].get(f)) for f in fr]
            + [f"{p['stopped_at']:g}" if p["stopped_at"] is not None else ("finished" if p["finished"] else "running")]
            for p in race["proposals"]]
    curve = [[f"{b['hours']:.3f}", _num(b["best"]), b["run_id"] or "–"] for b in race["best_so_far"]]
    seeds = [[str(s["seed"]), s["run_id"], _num(s["objective"]), _num(s["curve_objective"])] for s in race["recommended_seeds"]]
    spread = (f"mean {race['recommended_mean']:.4f}" + (f", sd {race['recommended_sd']:.4f}" if race["recommended_sd"] is not None
                                                          else "") + f" over {len(seeds)} seed(s)") if seeds else "no recommendation"
    text = "\n".join([
        f"# {summary['name']}: racing", "",
        f"Budget {race['budget_hours']:g} {unit}; spent {race['spent_hours']:.3f} {unit} in {race['jobs']} jobs. Rungs at "
        f"{', '.join(fr)} of each proposal's steps, reduction {race['reduction']} ({race['pruner']}). Values: "
        f"{race['metric']}.", "",
        "## Proposals at each rung", "",
        md_table(["round", "run", "mixture (examples per epoch)"] + [f"at {f}" for f in fr] + ["stopped at"], rows), "",
        f"## Best full-length objective found against {unit} spent", "",
        md_table([unit, "best so far", "run"], curve), "",
        "## The recommended mixture over seeds", "",
        (md_table(["seed", "run", "objective (full validation)", "curve's end"], seeds) + "\n\n" + spread) if seeds else spread, "",
    ])
    (out / "race.md").write_text(text, encoding="utf-8")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([unit.lower().replace("-", "_"), "best_objective", "run_id", "job", "fraction"])
    w.writerows([[f"{b['hours']:.4f}", "" if b["best"] is None else f"{b['best']:.5f}", b["run_id"] or "", b["job"], b["fraction"]]
                 for b in race["best_so_far"]])
    (out / "best_so_far.csv").write_text(buf.getvalue(), encoding="utf-8")
    if any(b["best"] is not None for b in race["best_so_far"]):
        (out / "best_so_far.png").write_bytes(_plot(race, summary["name"]))
    summary["files"] = {**summary.get("files", {}), "race": "race.md", "best_so_far": "best_so_far.csv"}
    write_json_atomic(out / SUMMARY_FILE, summary, sort_keys=False)
    return summary


def _num(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _plot(race: dict[str, Any], name: str) -> bytes:
    from fincocktail.report.plots import png_bytes, plt

    pts = [(b["hours"], b["best"]) for b in race["best_so_far"] if b["best"] is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="tab:orange")
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=3, color="tab:orange")
    ax.set_xlabel(race["unit"] + " spent")
    ax.set_ylabel("best validation objective")
    ax.set_title(f"mix search {name}: best found so far", fontsize=9)
    fig.tight_layout()
    return png_bytes(fig)


__all__ = ["race_summary", "write_race_outputs"]
