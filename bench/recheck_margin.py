"""How much room choice mode's `--dtype auto` re-check margin leaves: fp32, bf16 and auto on tuned adapters.

`auto` scores in bf16 and re-scores in fp32 every example whose two best choices are within
`evaluation.runner.CHECK_MARGIN` nats. For each MODEL:TASK pair (MODEL a training run folder,
a peft adapter folder, or `base`), this scores the task's test sample three times and prints,
as one JSON line per pair: how many predictions plain bf16 flips against fp32, the largest
bf16 margin among those flips (a flip above the margin would escape the re-check), how far
bf16 moves a margin (largest, 99th percentile, median), how many examples `auto` re-checked,
whether `auto` matched fp32 everywhere, and how many it would re-check at other margins.

    .venv/bin/python bench/recheck_margin.py base:fpb RUN_DIR:fpb RUN_DIR:tfns [--limit 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def margin(row: dict) -> float:
    """The margin `auto` tests (`models.choice.close_margin`), from a predictions row."""
    from fincocktail.models.choice import close_margin

    return close_margin(list(row["choice_logprobs"].values()), list(row["choice_logprobs_norm"].values()))


def best(row: dict) -> str:
    return max(row["choice_logprobs"], key=row["choice_logprobs"].get)


def score(loaded, task: str, dtype: str, limit: int, data_dir: str | None) -> tuple[list[dict], int]:
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    with tempfile.TemporaryDirectory() as tmp:
        run = run_eval(EvalConfig(model=loaded.path, tasks=[task], limit=limit, mode="choice", batch_size=16, out=Path(tmp),
                                  data_dir=data_dir, dtype=dtype), loaded=loaded)
        rows = [json.loads(x) for x in (Path(tmp) / f"{task}.predictions.jsonl").read_text().splitlines()]
    return rows, run.results[0].rescored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="MODEL:TASK, MODEL a run folder, an adapter folder or `base`")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from fincocktail.evaluation.loading import LoadedModel, load_for_eval
    from fincocktail.models.precision import native_bf16

    if not native_bf16("cpu"):
        raise SystemExit("this CPU has no native bf16: `auto` is plain fp32 here, there is no re-check to measure")
    for pair in args.pairs:
        model, _, task = pair.rpartition(":")
        if not model or not task:
            raise SystemExit(f"{pair!r}: expected MODEL:TASK")
        both = load_for_eval(args.model, None if model == "base" else model, dtype="auto")  # bf16, fp32 reference beside it
        fp32 = LoadedModel(both.reference, both.tokenizer, both.name, both.path, both.adapter)
        bf16 = LoadedModel(both.model, both.tokenizer, both.name, both.path, both.adapter)
        f, _ = score(fp32, task, "float32", args.limit, args.data_dir)
        b, _ = score(bf16, task, "bfloat16", args.limit, args.data_dir)
        a, rescored = score(both, task, "auto", args.limit, args.data_dir)
        shifts = sorted(abs(margin(x) - margin(y)) for x, y in zip(f, b))
        flips = [margin(y) for x, y in zip(f, b) if best(x) != best(y)]
        print(json.dumps({
            "model": model, "task": task, "n": len(f), "bf16_flips": len(flips),
            "largest_bf16_margin_of_a_flip": max(flips, default=None),
            "largest_shift": shifts[-1], "p99_shift": shifts[int(0.99 * (len(shifts) - 1))], "median_shift": shifts[len(shifts) // 2],
            "auto_rechecked": rescored, "auto_identical": sum(best(x) == best(y) for x, y in zip(f, a)),
            "would_recheck": {str(t): sum(margin(y) < t for y in b) for t in (0.25, 0.35, 0.5, 0.75)},
        }), flush=True)


if __name__ == "__main__":
    main()
