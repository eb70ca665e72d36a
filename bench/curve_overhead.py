"""What learning curves (`training.eval_every`) cost: the same run with and without them.

Trains one config twice per `--every` value (curves off, curves every N steps) in this process
and reports the training time of each (the run card's `train_time_s`: model loading excluded),
the curve points and their seconds (`curve_s` in train_log.jsonl), the overhead (curve seconds
over the training time without curves: steadier on a busy machine than the difference of two
wall times), and what one point costs in training steps. The losses of both runs are compared too: curves must not move
them (training.curves restores the RNG state).

Default: a random tiny model (tests/tiny_model.py) on two fake classification tasks with a
100-row validation split, so it runs in seconds anywhere. `--model NAME --tasks fpb,tfns` runs
a real model on real tasks (each capped at `--cap` training examples).

Usage: .venv/bin/python bench/curve_overhead.py [--steps 60] [--every 20,10] [--examples 64] [--model NAME --tasks fpb,tfns]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def tiny_setup(work: Path) -> tuple[dict[str, Any], Callable[[str], Any] | None, list[Any] | None]:
    """A tiny random model and two fake tasks (their resolver and the contamination check's tasks)."""
    sys.path.insert(0, str(REPO / "tests"))
    from fake_tasks import FakeSentiment, resolver
    from tiny_model import build_tiny_model

    tasks = {t: FakeSentiment(t, {"train": 400, "validation": 100}, seed=i) for i, t in enumerate(("fa", "fb"), 1)}
    model = build_tiny_model(work / "model", hidden=64, layers=4)
    base = {"model": str(model), "cocktail": {"seed": 1, "ingredients": list(tasks)}, "data_dir": str(work)}
    return base, (lambda t: resolver(t, tasks)), list(tasks.values())


def real_setup(model: str, tasks: list[str], cap: int) -> tuple[dict[str, Any], None, None]:
    return {"model": model, "cocktail": {"seed": 1, "ingredients": [{"task": t, "cap": cap} for t in tasks]}}, None, None


def one_run(base: dict[str, Any], over: dict[str, Any], run_dir: Path, resolver: Any, eval_tasks: Any) -> dict[str, Any]:
    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    config = parse_train_config({**base, **over}, source="bench")
    train(config, run_dir, resolver=resolver, eval_tasks=eval_tasks, progress=False)
    lines = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    card = json.loads((run_dir / "run_card.json").read_text())
    return {
        "train_s": card["train_time_s"],
        "steps": card["steps"],
        "losses": [x["loss"] for x in lines if "loss" in x],
        "points": sum("curve" in x for x in lines),
        "curve_s": sum(x.get("curve_s", 0.0) for x in lines),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", default="20,10", help="comma-separated eval_every values")
    ap.add_argument("--examples", type=int, default=64, help="eval_examples")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="a registry name or folder (default: a tiny random model)")
    ap.add_argument("--tasks", default="fpb,tfns", help="with --model: the cocktail's tasks")
    ap.add_argument("--cap", type=int, default=512, help="with --model: training examples per task")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, resolver, eval_tasks = (
            real_setup(args.model, args.tasks.split(","), args.cap) if args.model else tiny_setup(work)
        )
        base.update({"batch_size": args.batch_size, "max_steps": args.steps, "threads": args.threads, "lr": 1e-3,
                     "contamination_check": False})
        one_run(base, {"max_steps": 4}, work / "warmup", resolver, eval_tasks)  # first-call costs out of the timings
        for every in (int(e) for e in args.every.split(",")):
            t0 = time.time()
            off = one_run(base, {}, work / f"off{every}", resolver, eval_tasks)
            on = one_run(base, {"eval_every": every, "eval_examples": args.examples}, work / f"on{every}", resolver, eval_tasks)
            step_s = off["train_s"] / max(off["steps"], 1)
            point_s = on["curve_s"] / max(on["points"], 1)
            print(
                f"eval_every {every}: train {off['train_s']:.2f}s -> {on['train_s']:.2f}s; {on['points']} points, "
                f"{on['curve_s']:.2f}s in curves = +{100 * on['curve_s'] / off['train_s']:.0f}% of the run without, "
                f"a point = {point_s:.3f}s = {point_s / step_s:.1f} training steps; "
                f"losses identical: {off['losses'] == on['losses']} ({time.time() - t0:.0f}s)"
            )


if __name__ == "__main__":
    main()
