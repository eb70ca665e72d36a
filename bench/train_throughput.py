"""Training throughput: fincocktail's loop against trl's SFTTrainer at its defaults.

Both train the same LoRA (r, alpha, dropout, target modules) on the same data (the FPB train
split, rendered by `fincocktail.tasks.prompts`) with the same base model for the same number of
optimizer steps at the same batch size. Each runs in its own subprocess so peak RSS is measured
separately. Reported: real (non-padding) tokens per second of the training loop (model loading
excluded), the ratio, peak RSS, and fincocktail's FLOP utilisation against the measured matmul
peak of this machine in the precision the run computes in (fp32 or bf16 2048^3 GEMMs).
fincocktail runs once per `--precision` (default: fp32 and bf16).

FLOPs counted per computed token (real tokens less the prefix tokens a shared prefix saved), for LoRA: 4 x frozen body params (forward + the input-gradient
half of backward; frozen weights get no weight gradient) + 6 x LoRA params; plus, per *answer*
token only, 4 x vocab x hidden for the LM head (fincocktail applies it to answer positions
only). Attention score FLOPs (~4 x layers x seq x hidden per token) are left out: for FPB's
~70-token sequences they are a few percent. Embedding lookups cost no FLOPs.

The anchor is what a sensible user runs on this CPU: trl at its defaults (bf16 autocast,
gradient checkpointing, no length grouping) where the CPU has native bf16 (AVX-512 BF16 or
AMX), and at its defaults with `bf16=False` elsewhere, since emulated bf16 autocast on an
AVX2-only CPU is ~20x slower than fp32 (measured ~100 s per step, ~4.5 tokens/s) and would
make any ratio meaningless. The bench prints which, with torch's CPU capability. Plus
`use_cpu=True` on a machine without CUDA (transformers refuses bf16 on CPU without it),
`save_strategy="no"` and `report_to=[]` (no disk or tracker I/O inside the timing).
`--tasks fpb,fiqa_sa,tfns` trains both on a cocktail (fincocktail: its mixture; trl: the
same examples, shuffled by its sampler).

Usage: .venv/bin/python bench/train_throughput.py [--steps 20] [--batch-size 8] [--model NAME] [--precision fp32,bf16] [--tasks fpb]
Needs trl for the comparison: VIRTUAL_ENV=.venv uv pip install --find-links /opt/wheels -c constraints.txt trl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
RESULT_PREFIX = "BENCH_RESULT "


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_peak_flops(dtype: str = "float32", size: int = 2048, seconds: float = 3.0) -> float:
    """Best matmul FLOP/s in `dtype` over a few seconds, with the current thread count."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    torch.mm(a, b)
    best = 0.0
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t))
    return best


def task_pairs(data_dir: Path, tasks: list[str]) -> list:
    """The rendered train pairs of every task, as fincocktail's trainer renders them."""
    from fincocktail.tasks.prompts import render
    from fincocktail.tasks.registry import get_task

    pairs = []
    for name in tasks:
        task = get_task(name)
        pairs += [render(task, ex) for ex in task.load("train", data_dir)]
    return pairs


def trl_anchor_bf16() -> tuple[bool, str]:
    """Whether trl runs at its bf16 default here, and why: only where bf16 is native, not emulated."""
    import torch

    from fincocktail.models.precision import cpu_features, native_bf16

    if torch.cuda.is_available():
        return True, "CUDA"
    cap = torch.backends.cpu.get_cpu_capability()
    flags = ", ".join(k for k, v in cpu_features().items() if v) or "none"
    if native_bf16("cpu"):
        return True, f"CPU capability {cap}, native bf16 ({flags}): trl at its defaults (bf16 autocast)"
    return False, f"CPU capability {cap}, no native bf16: trl at its defaults with bf16=False (emulated bf16 is ~20x slower)"


def worker_fincocktail(args: argparse.Namespace) -> dict:
    import torch

    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    cfg = parse_train_config(
        {
            "model": args.model_path,
            "cocktail": {"ingredients": args.tasks.split(",")},
            "data_dir": args.data_dir,
            "lora": {**LORA, "target_modules": args.targets},
            "lr": args.lr,
            "batch_size": args.batch_size,
            "max_steps": args.steps,
            "checkpoint_every": 10**9,
            "contamination_check": False,
            "precision": args.precision,
            "prefix_sharing": args.prefix_sharing,
            **({"max_batch_tokens": args.max_batch_tokens} if args.max_batch_tokens else {}),
        },
        source="bench",
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, Path(tmp) / "run", progress=False)
        card = json.loads((Path(tmp) / "run" / "run_card.json").read_text())
        log = [json.loads(x) for x in (Path(tmp) / "run" / "train_log.jsonl").read_text().splitlines()]
    train_s = log[-1]["elapsed_s"]
    return {
        "tokens": result.tokens_seen,
        "answer_tokens": sum(e["target_tokens"] for e in log),
        "train_s": train_s,
        "tokens_per_s": result.tokens_seen / train_s,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "peak_rss_mb": peak_rss_mb(),
        "run_card_tokens_per_s": card.get("tokens_per_s"),
        "base_dtype": card.get("base_dtype"),
        "shared_prefix_tokens": card.get("shared_prefix_tokens"),
        "threads": torch.get_num_threads(),
    }


def worker_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    pairs = task_pairs(Path(args.data_dir), args.tasks.split(","))
    ds = Dataset.from_list([{"prompt": p.prompt, "completion": p.target} for p in pairs])
    out = tempfile.mkdtemp()
    bf16, _ = trl_anchor_bf16()
    sft = SFTConfig(
        output_dir=out, use_cpu=not torch.cuda.is_available(), max_steps=args.steps, learning_rate=args.lr, save_strategy="no", report_to=[],
        per_device_train_batch_size=args.batch_size, **({} if bf16 else {"bf16": False}),
    )
    peft_config = LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=args.targets,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=args.model_path, args=sft, train_dataset=ds, peft_config=peft_config)
    counted = {"tokens": 0}
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        counted["tokens"] += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting
    t = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t
    return {
        "tokens": counted["tokens"],
        "train_s": train_s,
        "tokens_per_s": counted["tokens"] / train_s,
        "steps": trainer.state.global_step,
        "peak_rss_mb": peak_rss_mb(),
        "gradient_checkpointing": bool(sft.gradient_checkpointing),
        "bf16": bool(sft.bf16),
        "threads": torch.get_num_threads(),
    }


def model_counts(model_path: str) -> dict:
    """Frozen body params, LM head size and LoRA params for the FLOP count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    body = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    lora = 0
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS and "lm_head" not in n:
            lora += LORA["r"] * (m.in_features + m.out_features)
    return {"body_params": body, "lora_params": lora, "head_flops_per_answer_token": 4 * config.vocab_size * config.hidden_size}


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run_worker(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model-path", args.model_path, "--data-dir", args.data_dir,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--tasks", args.tasks]
    if args.max_batch_tokens:
        cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
    if kind == "fincocktail":
        cmd += ["--precision", args.precision, "--prefix-sharing", args.prefix_sharing]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise SystemExit(f"{kind} worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the config's (auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both workers (default: torch's)")
    parser.add_argument("--precision", default="fp32,bf16", help="fincocktail runs, comma-separated: fp32, bf16, auto")
    parser.add_argument("--prefix-sharing", default="auto", choices=["auto", "on", "off"], help="fincocktail's prefix_sharing")
    parser.add_argument("--tasks", default="fpb", help="training tasks, comma-separated (a cocktail for fincocktail)")
    parser.add_argument("--only", choices=["fincocktail", "trl"], default=None)
    parser.add_argument("--worker", choices=["fincocktail", "trl"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    args.targets = TARGETS

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        fn = worker_fincocktail if args.worker == "fincocktail" else worker_trl
        print(RESULT_PREFIX + json.dumps(fn(args)), flush=True)
        return

    from fincocktail.models import resolve_model
    from fincocktail.plumbing.paths import find_data_dir

    args.model_path = str(resolve_model(args.model))
    args.data_dir = str(find_data_dir(args.data_dir))
    results: dict = {"model": args.model, "tasks": args.tasks, "trl_anchor": trl_anchor_bf16()[1], "steps": args.steps, "batch_size": args.batch_size, "load_avg_before": os.getloadavg()}
    results["matmul_peak_flops"] = {"fp32": matmul_peak_flops("float32"), "bf16": matmul_peak_flops("bfloat16")}
    counts = model_counts(args.model_path)
    results.update(counts)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]  # each may be PRECISION or PRECISION/off (no prefix sharing)
    runs: dict[str, dict] = {}
    if args.only in (None, "fincocktail"):
        for precision in precisions:
            print(f"running fincocktail {precision} ({args.steps} steps, batch {args.batch_size}) ...", file=sys.stderr, flush=True)
            prec, _, sharing = precision.partition("/")
            runs[precision] = run_worker("fincocktail", argparse.Namespace(**{**vars(args), "precision": prec, "prefix_sharing": sharing or args.prefix_sharing}))
    if args.only in (None, "trl"):
        print(f"running trl ({args.steps} steps, batch {args.batch_size}) ...", file=sys.stderr, flush=True)
        results["trl"] = run_worker("trl", args)
    results["load_avg_after"] = os.getloadavg()
    for fc in runs.values():
        computed = fc["tokens"] - (fc.get("shared_prefix_tokens") or 0)  # FLOPs actually computed: shared prefixes run once
        flops = computed * (4 * counts["body_params"] + 6 * counts["lora_params"])
        flops += fc["answer_tokens"] * counts["head_flops_per_answer_token"]
        fc["achieved_flops"] = flops / fc["train_s"]
        peak = results["matmul_peak_flops"]["bf16" if fc["base_dtype"] == "bfloat16" else "fp32"]
        fc["flop_utilisation"] = fc["achieved_flops"] / peak
        if results.get("trl"):
            fc["ratio_vs_trl"] = fc["tokens_per_s"] / results["trl"]["tokens_per_s"]
    results["fincocktail"] = runs
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"tasks {args.tasks}; anchor: {results['trl_anchor']}")
    print(f"model {args.model}, {args.steps} steps, batch {args.batch_size}, LoRA r={LORA['r']} on {', '.join(TARGETS)}")
    print(f"load average before/after: {results['load_avg_before'][0]:.1f} / {results['load_avg_after'][0]:.1f} (shared machine: noisy)")
    threads = args.threads or "default"
    peaks = results["matmul_peak_flops"]
    print(f"matmul peak (2048^3, threads {threads}): fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    trl = results.get("trl")
    if trl:
        print(f"{'trl':16s} {trl['tokens_per_s']:8.1f} real tokens/s  {trl['tokens']:7d} tokens in {trl['train_s']:.1f} s  "
              f"peak RSS {trl['peak_rss_mb']:.0f} MB  (bf16 {trl['bf16']}, gradient checkpointing {trl['gradient_checkpointing']})")
    for precision, fc in runs.items():
        ratio = f"  {fc['ratio_vs_trl']:.2f}x trl" if "ratio_vs_trl" in fc else ""
        print(f"{'fincocktail ' + precision:16s} {fc['tokens_per_s']:8.1f} real tokens/s  {fc['tokens']:7d} tokens in {fc['train_s']:.1f} s  "
              f"peak RSS {fc['peak_rss_mb']:.0f} MB  {fc['achieved_flops'] / 1e9:.1f} GFLOP/s = "
              f"{100 * fc['flop_utilisation']:.0f}% of the {'bf16' if fc['base_dtype'] == 'bfloat16' else 'fp32'} peak{ratio}"
              f"  (prefix tokens not recomputed: {fc.get('shared_prefix_tokens')})")

if __name__ == "__main__":
    main()
