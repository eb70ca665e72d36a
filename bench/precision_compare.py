"""bf16 against fp32 on a real run: loss curves, FPB validation accuracy, and eval agreement.

Trains the same LoRA on FPB three times: fp32 and bf16 with seed 0, and fp32 with seed 1 as the
noise yardstick (a different seed changes batch order, dropout and LoRA init). The fp32 and
bf16 runs go in parallel, one thread each. Then:
- loss: mean training loss per window of steps, and the largest window difference between
  fp32/seed 0 and bf16/seed 0 next to the one between the two fp32 seeds;
- FPB validation accuracy (choice mode, fp32 evaluation for every adapter, so only the
  training precision differs), with 95% bootstrap intervals;
- eval agreement: share of predictions identical to `--dtype float32`, for `--dtype bfloat16`
  and for `--dtype auto` (bf16 with close calls re-checked in fp32), on the first 300 FPB test
  examples, for the base model and the fp32- and bf16-trained adapters (the bar for a bf16
  evaluation default is 99%).
Writes `summary.json`, `loss.png` and the run folders under `--out`.

`--compare prefix` asks the same of shared-prefix training instead (issue 16): bf16 with
`prefix_sharing: auto` against `off` (seed 0), and `off` with seed 1 as the noise yardstick;
loss windows and validation accuracy only (evaluation is the same for both).

    .venv/bin/python bench/precision_compare.py [--steps 150] [--out bench-results/precision] [--compare prefix]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# name -> (precision, seed, prefix_sharing); the first two run in parallel, the third is the noise yardstick
COMPARISONS = {
    "precision": {"fp32-seed0": ("fp32", 0, "off"), "bf16-seed0": ("bf16", 0, "off"), "fp32-seed1": ("fp32", 1, "off")},
    "prefix": {"off-seed0": ("bf16", 0, "off"), "auto-seed0": ("bf16", 0, "auto"), "off-seed1": ("bf16", 1, "off")},
}


def train_cmd(args: argparse.Namespace, precision: str, seed: int, out: Path, sharing: str = "off") -> list[str]:
    sets = [
        f"precision={precision}", f"seed={seed}", f"prefix_sharing={sharing}", f"max_steps={args.steps}", "threads=1", "contamination_check=false",
        f"checkpoint_every={args.steps + 1}", "log_every=1",
    ]
    cmd = [sys.executable, "-m", "fincocktail", "train", args.config, "--model", args.model, "--out", str(out), "--quiet"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def train_all(args: argparse.Namespace, root: Path, runs: dict[str, tuple[str, int, str]]) -> dict[str, float]:
    """The first two runs (seed 0) in parallel, then the yardstick (seed 1); returns train seconds per run."""
    seconds: dict[str, float] = {}
    names = list(runs)
    batches = [names[:2], names[2:]]
    for batch in batches:
        procs = {}
        for name in batch:
            out = root / name
            if (out / "run_card.json").is_file() and json.loads((out / "run_card.json").read_text()).get("status") == "complete":
                continue
            precision, seed, sharing = runs[name]
            print(f"training {name} ({args.steps} steps) ...", file=sys.stderr, flush=True)
            log = open(root / f"{name}.log", "w")
            procs[name] = (subprocess.Popen(train_cmd(args, precision, seed, out, sharing), stdout=log, stderr=subprocess.STDOUT), log)
        for name, (proc, log) in procs.items():
            if proc.wait() != 0:
                raise SystemExit(f"training {name} failed; see {root / (name + '.log')}")
            log.close()
    for name in runs:
        card = json.loads((root / name / "run_card.json").read_text())
        seconds[name] = card["train_time_s"]
    return seconds


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def windows(values: list[float], size: int) -> list[float]:
    return [sum(values[i : i + size]) / len(values[i : i + size]) for i in range(0, len(values), size)]


def evaluate(args, root: Path, adapter: Path | None, split: str, dtype: str, limit: int | None, name: str):
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    out = root / "eval" / name
    run = run_eval(
        EvalConfig(model=args.model, adapter=str(adapter) if adapter else None, tasks=["fpb"], split=split, limit=limit,
                   mode="choice", batch_size=16, dtype=dtype, out=out),
    )
    rows = [json.loads(x) for x in (out / "fpb.predictions.jsonl").read_text().splitlines()]
    return run.results[0], [r["extracted"] for r in rows]


def plot(curves: dict[str, list[float]], size: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        smooth = windows(values, size)
        ax.plot([size * (i + 0.5) for i in range(len(smooth))], smooth, marker="o", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (mean of {size} steps)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--config", default="configs/train/smollm2_fpb_lora.yaml", help="training config (FPB LoRA)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--agreement-n", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench-results/precision"))
    parser.add_argument("--compare", choices=list(COMPARISONS), default="precision",
                        help="precision: fp32 vs bf16; prefix: bf16 with prefix_sharing auto vs off")
    args = parser.parse_args()
    runs = COMPARISONS[args.compare]
    first, second, yardstick = list(runs)
    import torch

    torch.set_num_threads(1)
    root = args.out
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seconds = train_all(args, root, runs)
    curves = {name: losses(root / name) for name in runs}
    win = {name: windows(values, args.window) for name, values in curves.items()}

    def max_gap(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(win[a], win[b]))

    summary: dict = {
        "steps": args.steps, "window": args.window, "train_seconds": seconds,
        "loss_windows": win,
        "compare": args.compare,
        "max_window_gap": {f"{second} vs {first}": max_gap(first, second), f"{yardstick} vs {first}": max_gap(first, yardstick)},
        "final_window_loss": {name: w[-1] for name, w in win.items()},
    }
    summary["validation_accuracy"] = {}
    for name in runs:
        result, _ = evaluate(args, root, root / name, "validation", "float32", None, f"val-{name}")
        iv = result.interval
        summary["validation_accuracy"][name] = {
            "accuracy": result.metrics["accuracy"], "n": result.n,
            "interval": [iv.low, iv.high] if iv is not None else None,
        }
    summary["agreement"] = {}
    agreement_models = (("base", None), (first, root / first), (second, root / second)) if args.compare == "precision" else ()
    for label, adapter in agreement_models:
        r32, p32 = evaluate(args, root, adapter, "test", "float32", args.agreement_n, f"agree-{label}-fp32")
        r16, p16 = evaluate(args, root, adapter, "test", "bfloat16", args.agreement_n, f"agree-{label}-bf16")
        rau, pau = evaluate(args, root, adapter, "test", "auto", args.agreement_n, f"agree-{label}-auto")
        same = sum(a == b for a, b in zip(p32, p16))
        same_auto = sum(a == b for a, b in zip(p32, pau))
        summary["agreement"][label] = {
            "n": len(p32), "identical": same, "share": same / len(p32),
            "identical_auto": same_auto, "share_auto": same_auto / len(p32), "rescored_auto": rau.rescored,
            "accuracy_fp32": r32.metrics["accuracy"], "accuracy_bf16": r16.metrics["accuracy"],
            "examples_per_s_fp32": r32.examples_per_s, "examples_per_s_bf16": r16.examples_per_s,
            "examples_per_s_auto": rau.examples_per_s,
            "ties_fp32": r32.ties, "ties_bf16": r16.ties,
        }
    summary["wall_s"] = time.time() - t0
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    title = "SmolLM2-135M LoRA on FPB: " + ("fp32 vs bf16" if args.compare == "precision" else "bf16, prefix sharing auto vs off")
    plot(curves, args.window, root / "loss.png", title)

    print(f"{args.steps} steps each; train time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print("loss, mean per window of", args.window, "steps:")
    for name, w in win.items():
        print(f"  {name:11s} " + " ".join(f"{x:.3f}" for x in w))
    print("  largest window gap: " + "; ".join(f"{k} {v:.3f}" for k, v in summary["max_window_gap"].items()))
    print("FPB validation accuracy (fp32 eval):")
    for name, v in summary["validation_accuracy"].items():
        iv = v["interval"]
        print(f"  {name:11s} {v['accuracy']:.3f}" + (f"  [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "") + f"  n={v['n']}")
    if not summary["agreement"]:
        print(f"written to {root}")
        return
    print(f"eval agreement with --dtype float32, FPB test first {args.agreement_n} (bfloat16 | auto = bf16 + fp32 re-check):")
    for label, v in summary["agreement"].items():
        print(f"  {label:11s} bf16 {v['identical']}/{v['n']} = {100 * v['share']:.1f}%  auto {v['identical_auto']}/{v['n']} "
              f"({v['rescored_auto']} re-checked)  accuracy {v['accuracy_fp32']:.3f} / {v['accuracy_bf16']:.3f}  "
              f"ex/s fp32 {v['examples_per_s_fp32']:.1f}, bf16 {v['examples_per_s_bf16']:.1f}, auto {v['examples_per_s_auto']:.1f}")
    print(f"written to {root}")


if __name__ == "__main__":
    main()
