"""Benchmark: fincocktail eval against lm-evaluation-harness on the same examples and model.

Part 1: FPB test (first N=300), choice mode vs lm-eval `multiple_choice` on the exported task.
Part 2: FinQA (first N=100), generate mode vs lm-eval `generate_until` on the exported task.
Both harnesses get the same loaded model object (float32, CPU; `--dtype bfloat16` gives
fincocktail a bfloat16 copy instead), the same prompts (the export writes fincocktail's
rendered prompts) and the same batch size; model loading is not timed. On a shared machine,
`--threads 1` gives steadier numbers (oversubscribed OpenMP threads spin).
Prints examples/s of each, the speed ratio, and the share of identical predictions.

    .venv/bin/python bench/eval_throughput.py [--model smollm2-135m-instruct] [--batch-size 16] [--dtype bfloat16] [--adapter RUN]

Targets (issue 16): part 1 with `--dtype auto` on a tuned adapter >= 3.5x with 100% identical
predictions (issue 8: >= 3x, >= 99%); part 2 >= 2.5x with >= 99% of extracted answers identical
to fincocktail's own fp32 greedy output. Needs lm-eval installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def _lmeval_run(loaded, export_dir: Path, task_name: str, batch_size: int):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, device="cpu", dtype="float32")
    manager = TaskManager(include_path=str(export_dir), include_defaults=False)
    t0 = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=[task_name], task_manager=manager, log_samples=True, bootstrap_iters=0)
    seconds = time.perf_counter() - t0
    samples = sorted(res["samples"][task_name], key=lambda s: s["doc_id"])
    return samples, seconds


def _ours(loaded, task: str, n: int, mode: str, batch_size: int, data_dir: Path, out: Path):
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    t0 = time.perf_counter()
    run = run_eval(
        EvalConfig(
            model=loaded.path, tasks=[task], limit=n, mode=mode, batch_size=batch_size, out=out, data_dir=data_dir,
            dtype=str(loaded.model.dtype).removeprefix("torch."),
        ),
        loaded=loaded,
    )
    seconds = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / f"{task}.predictions.jsonl").read_text().splitlines()]
    return rows, seconds, run.results[0]


def part1_choice(loaded, reference, args, data_dir: Path, tmp: Path) -> dict:
    from fincocktail.export.lmeval import export_lmeval, lmeval_task_name
    from fincocktail.tasks.registry import get_task

    export_lmeval(tmp / "export", ["fpb"], data_dir, get_task, limit=args.fpb_n)
    ours, s_ours, res = _ours(loaded, "fpb", args.fpb_n, "choice", args.batch_size, data_dir, tmp / "fpb")
    samples, s_lm = _lmeval_run(reference, tmp / "export", lmeval_task_name("fpb"), args.batch_size)
    labels = ("negative", "neutral", "positive")
    theirs = [labels[max(range(3), key=lambda i: s["filtered_resps"][i][0])] for s in samples]
    agree = sum(o["extracted"] == t for o, t in zip(ours, theirs)) / len(ours)
    n = len(ours)
    out = {
        "n": n, "fincocktail_ex_per_s": n / s_ours, "lmeval_ex_per_s": n / s_lm, "ratio": s_lm / s_ours,
        "agreement": agree, "fincocktail_accuracy": res.metrics["accuracy"],
        "lmeval_accuracy": sum(s["acc"] for s in samples) / len(samples),
    }
    print(
        f"FPB choice, {n} ex: fincocktail {out['fincocktail_ex_per_s']:.2f} ex/s, lm-eval {out['lmeval_ex_per_s']:.2f} ex/s, "
        f"ratio {out['ratio']:.2f}x (target >= 3.5 for --dtype auto on a tuned adapter), identical predictions {agree:.1%} (target 100%), "
        f"accuracy {out['fincocktail_accuracy']:.3f} vs {out['lmeval_accuracy']:.3f}"
    )
    return out


def part2_generate(loaded, reference, args, data_dir: Path, tmp: Path) -> dict:
    from fincocktail.export.lmeval import export_lmeval, lmeval_task_name
    from fincocktail.tasks.registry import get_task

    export_lmeval(tmp / "export", ["finqa"], data_dir, get_task, limit=args.finqa_n)
    ours, s_ours, _ = _ours(loaded, "finqa", args.finqa_n, "generate", args.batch_size, data_dir, tmp / "finqa")
    samples, s_lm = _lmeval_run(reference, tmp / "export", lmeval_task_name("finqa"), args.batch_size)
    theirs = [s["filtered_resps"][0] for s in samples]
    same = sum(o["raw_output"].strip() == t.strip() for o, t in zip(ours, theirs)) / len(ours)
    m = len(ours)
    out = {"n": m, "fincocktail_ex_per_s": m / s_ours, "lmeval_ex_per_s": m / s_lm, "ratio": s_lm / s_ours, "identical_outputs": same,
           "rechecked_fp32": sum(bool(o.get("rescored_fp32")) for o in ours)}
    if reference is not loaded:  # fincocktail's own fp32 greedy output, the yardstick for bf16 with re-checks
        fp32, s_fp32, _ = _ours(reference, "finqa", args.finqa_n, "generate", args.batch_size, data_dir, tmp / "finqa32")
        out["identical_extracted_vs_own_fp32"] = sum(o["extracted"] == r["extracted"] for o, r in zip(ours, fp32)) / m
        out["fincocktail_fp32_ex_per_s"] = m / s_fp32
        out["fp32_ratio"] = s_lm / s_fp32
    print(
        f"FinQA generate, {m} ex: fincocktail {out['fincocktail_ex_per_s']:.3f} ex/s ({out['rechecked_fp32']} rows re-decoded in fp32), "
        f"lm-eval {out['lmeval_ex_per_s']:.3f} ex/s, ratio {out['ratio']:.2f}x (target >= 2.5), identical outputs to lm-eval {same:.1%}"
        + (f", extracted answers identical to fincocktail fp32 {out['identical_extracted_vs_own_fp32']:.1%} (target >= 99%; "
           f"fincocktail fp32 {out['fincocktail_fp32_ex_per_s']:.3f} ex/s, ratio {out['fp32_ratio']:.2f}x)" if "identical_extracted_vs_own_fp32" in out else "")
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fpb-n", type=int, default=300)
    parser.add_argument("--finqa-n", type=int, default=100)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-choice", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--dtype", default="float32", help="fincocktail's dtype (lm-eval always runs float32).")
    parser.add_argument("--adapter", default=None, help="a training run (or peft adapter) folder: both harnesses get it merged")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine).")
    parser.add_argument("--json", default=None, help="Also write the numbers to this JSON file.")
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.plumbing.paths import find_data_dir

    data_dir = find_data_dir(args.data_dir)
    loaded = load_for_eval(args.model, args.adapter, dtype=args.dtype)
    reference = loaded if args.dtype == "float32" else load_for_eval(args.model, args.adapter, dtype="float32")
    import os

    print(f"load average {os.getloadavg()[0]:.1f} (a shared machine: compare ratios within one run only); "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(
        f"model {args.model} ({loaded.path}), adapter {args.adapter}, fincocktail {args.dtype}, lm-eval float32, "
        f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}"
    )
    report: dict = {"model": args.model, "adapter": args.adapter, "dtype": args.dtype, "batch_size": args.batch_size, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="fincocktail-bench-") as tmp:
        tmp = Path(tmp)
        # warm-up (first-call allocations, thread pools) on a few examples; the model is shared by both harnesses
        _ours(loaded, "fpb", 8, "choice", args.batch_size, data_dir, tmp / "warm")
        if not args.skip_generate and reference is not loaded:
            _ours(reference, "fpb", 8, "choice", args.batch_size, data_dir, tmp / "warm32")
        if not args.skip_choice:
            report["fpb_choice"] = part1_choice(loaded, reference, args, data_dir, tmp)
        if not args.skip_generate:
            report["finqa_generate"] = part2_generate(loaded, reference, args, data_dir, tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
