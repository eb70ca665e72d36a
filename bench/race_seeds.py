"""Racing, today's search and the hand-built design at equal CPU time, repeated over search seeds.

Per seed s, in OUT/seed{s}/ (its own store, so every arm's baselines are that seed's runs):
1. the sweep file with `seeds: [s]` and the hand-built design (`fincocktail sweep run`);
2. today's search from scratch, `mix search --fresh --budget-hours H --seed s`, H = the CPU-hours the
   design's runs took (measured wall time x the cores each job held);
3. the racing search, `mix search --race --budget-hours H --seed s` (its winner's replicates inside H);
   with `--arms ... replicated`, also today's search confirming its winner over 2 more seeds inside H
   (`--fresh --replicates 2 --name replicated__fresh`);
4. `bench/race_compare.py` on that store: each arm's recommendation on test, paired against the best
   single-task run per task and the best hand-built cocktail (both chosen on validation), and the
   surrogates' leave-one-mixture-out Spearman.

Then across seeds: each arm's mean with a t 95% interval over the seeds (the seed-to-seed spread of a
whole search, which one search's bootstrap intervals do not contain), and per seed which arm won on
test. Resumable: every step skips what its store or state already holds.

    .venv/bin/python bench/race_seeds.py configs/sweeps/race-seeds.yaml --seeds 0 1 2 --out sweeps/race-seeds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

ARMS = {"fresh": "mean__fresh", "race": "race__mean", "replicated": "replicated__fresh"}  # arm -> search folder


def seed_sweep(sweep: Path, seed: int, out: Path) -> Path:
    spec = yaml.safe_load(sweep.read_text(encoding="utf-8"))
    spec["seeds"] = [seed]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def fincocktail(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "fincocktail"), *args]
    print("$ fincocktail " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def design_hours(out: Path, cores: float) -> float:
    from fincocktail.sweep.store import ResultsStore

    runs = ResultsStore.in_dir(out, create=False).runs(status="done")
    return sum(r.wall_time_s or 0.0 for r in runs if r.kind in ("single", "cocktail")) * cores / 3600


def t_interval(values: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def fmt_t(values: list[float], sign: str = "+") -> str:
    m, lo, hi = t_interval(values)
    return f"{m:{sign}.3f}" if math.isnan(lo) else f"{m:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def aggregate(per_seed: dict[int, list[dict]]) -> str:
    lines = ["| seed | arm | CPU-hours | runs | recommended | validation | test | minus best single-task (95%) | "
             "minus best hand-built (95%) | LOO Spearman: search metric / likelihood |", "|" + "---|" * 10]
    for s, rows in per_seed.items():
        for o in rows:
            num = (lambda v: f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else str(v)))
            lines.append(f"| {s} | {o['method']} | {o['cpu_hours']:.2f} | {o['runs']} | {o['recommended']} | "
                         f"{num(o['validation'])} | {num(o['test'])} | {o['vs_single']} | {o['vs_cocktail']} | "
                         f"{num(o['loo_search_metric'])} / {num(o['loo_likelihood'])} |")
    lines += ["", f"Across {len(per_seed)} seeds (mean, t 95% interval over seeds):", "",
              "| arm | CPU-hours | test | minus best single-task | minus best hand-built | won on test |", "|---|---|---|---|---|---|"]
    for arm in ["hand-built design", *ARMS.values()]:
        got = [next((o for o in rows if o["method"] == arm), None) for rows in per_seed.values()]
        got = [o for o in got if o and o["test"] is not None]
        if not got:
            continue
        wins = sum(1 for rows in per_seed.values()
                   if max((o for o in rows if o["test"] is not None), key=lambda o: o["test"])["method"] == arm)
        single = [o["vs_single_diff"]["value"] for o in got if o["vs_single_diff"]]
        cocktail = [o["vs_cocktail_diff"]["value"] for o in got if o["vs_cocktail_diff"]]
        lines.append(f"| {arm} | {sum(o['cpu_hours'] for o in got) / len(got):.2f} | {fmt_t([o['test'] for o in got], sign='')} | "
                     f"{fmt_t(single) if single else '–'} | {fmt_t(cocktail) if cocktail else '–'} | "
                     f"{wins} of {len(per_seed)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--race-batch", type=int, default=4)
    p.add_argument("--plain-batch", type=int, default=2)
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=["fresh", "race"], help="searches beside the design")
    p.add_argument("--compare-only", action="store_true", help="only read what the stores hold")
    args = p.parse_args()
    cores = max(1, (os.cpu_count() or 1) // args.workers)
    per_seed: dict[int, list[dict]] = {}
    for s in args.seeds:
        out = args.out / f"seed{s}"
        sweep = seed_sweep(args.sweep, s, out) if not args.compare_only else out / "sweep.yaml"
        common = ["--workers", str(args.workers), "--out", str(out), "-q"]
        if not args.compare_only:
            fincocktail("sweep", "run", str(sweep), *common)
            hours = round(design_hours(out, cores), 3)
            print(f"seed {s}: the hand-built design took {hours} CPU-hours; each search gets as much", flush=True)
            plain = ["--fresh", "--budget-hours", str(hours), "--batch", str(args.plain_batch), "--seed", str(s), *common]
            if "fresh" in args.arms:
                fincocktail("mix", "search", str(sweep), *plain)
            if "race" in args.arms:
                fincocktail("mix", "search", str(sweep), "--race", "--budget-hours", str(hours), "--batch",
                            str(args.race_batch), "--seed", str(s), *common)
            if "replicated" in args.arms:
                fincocktail("mix", "search", str(sweep), *plain, "--replicates", "2", "--name", ARMS["replicated"])
        searches = [x for a in args.arms for x in ("--search", ARMS[a])]
        got = subprocess.run([sys.executable, str(Path(__file__).with_name("race_compare.py")), str(sweep), "--out", str(out),
                              *searches, "--cores", str(cores), "--json"],
                             check=True, capture_output=True, text=True).stdout
        per_seed[s] = json.loads(got)
        (args.out / "race_seeds.json").write_text(json.dumps(per_seed, indent=2), encoding="utf-8")
    text = aggregate(per_seed)
    (args.out / "race_seeds.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
