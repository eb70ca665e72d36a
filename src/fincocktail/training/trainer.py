"""The training loop: a small plain PyTorch loop rather than HF Trainer.

Why plain: resume has to reproduce an uninterrupted run exactly (same batches, same dropout
masks, same optimizer state), memory has to stay small on CPU, and the loss must be computed on
answer tokens only without a batch x length x vocab logits tensor. Each of those is a few lines
here and a fight with a framework otherwise.

Loss: the model's body gives hidden states; the LM head runs only on the positions whose next
token is an answer token. The mean is over all answer tokens of an optimizer step (summed over
its micro-batches), so gradient accumulation gives the same update as one big batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from fincocktail.cocktail import (
    build_cocktail,
    load_sources,
    resolve_tasks,
    source_file_hashes,
    write_manifest,
)
from fincocktail.errors import ConfigError, FincocktailError, ModelError
from fincocktail.fileio import FolderLock, damaged_file_errors, first_line, write_json_atomic
from fincocktail.prompts import TokenCache
from fincocktail.models.precision import cpu_features, native_bf16
from fincocktail.tasks.base import Task
from fincocktail.training.config import RESUMABLE_CHANGES, TrainConfig, resolve_cocktail
from fincocktail.training.dropout import use_packed_dropout
from fincocktail.training.data import (
    IGNORE_INDEX,
    Batch,
    Encoded,
    collate,
    padding_fraction,
    plan_batches,
    split_by_tokens,
    truncate,
)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"
EXTRA_FILE = "optimizer.pt"
TRAIN_LOCK = ".train.lock"
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path | None  # the LoRA adapter (or the full model folder for full fine-tuning)
    tokens_seen: int
    wall_time_s: float
    peak_rss_mb: float
    final_loss: float | None
    steps: int = 0
    merged_dir: Path | None = None


# --------------------------------------------------------------------------------------------
# Model loading


def load_model_and_tokenizer(name_or_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """Through `fincocktail.models` when available; a local HF folder always works."""
    try:
        from fincocktail.models import load_model_and_tokenizer as registry_loader  # type: ignore[attr-defined]
    except ImportError:
        registry_loader = None
    if registry_loader is not None:
        return registry_loader(name_or_path, dtype=dtype)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelError(f"model {name_or_path!r}: not a local folder and the model registry is not available")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model, tokenizer


def lora_targets(config: TrainConfig, model: Any) -> list[str]:
    """Config's list, else the registry's, else every linear projection found in the model."""
    if config.lora.target_modules:
        return list(config.lora.target_modules)
    try:
        from fincocktail.models import get_model_spec
    except ImportError:
        get_model_spec = None  # type: ignore[assignment]
    spec = get_model_spec(config.model) if get_model_spec is not None else None
    if spec is not None and getattr(spec, "lora_target_modules", None):
        return list(spec.lora_target_modules)
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }
    found = [n for n in DEFAULT_LORA_TARGETS if n in names]
    return found or sorted(names)


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device")
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    """The torch dtype name of the base weights: bfloat16 or float32.

    `auto` takes bf16 for LoRA on hardware with native bf16 GEMMs (see models.precision);
    full fine-tuning always trains fp32 weights.
    """
    if config.precision == "bf16":
        return "bfloat16"
    if config.precision == "auto" and config.method == "lora" and native_bf16(device):
        return "bfloat16"
    return "float32"


CPU_MAX_BATCH_TOKENS = 512
EAGER_ATTENTION_MAX_LENGTH = 1024


def resolve_max_batch_tokens(config: TrainConfig, device: torch.device) -> int | None:
    """`auto` bounds activation memory on CPU, where RAM is the limit; GPUs run whole batches."""
    if config.max_batch_tokens == "auto":
        return CPU_MAX_BATCH_TOKENS if device.type == "cpu" else None
    return config.max_batch_tokens  # type: ignore[return-value]


def prepare_model(config: TrainConfig, model: Any) -> Any:
    """Wrap with LoRA (or unfreeze everything for full fine-tuning)."""
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.config.use_cache = False
    if config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(config, model)
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    linear = {name.rsplit(".", 1)[-1] for name in names}
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise ConfigError(
            f"lora.target_modules: {', '.join(unknown)} not found in {config.model}; its linear modules are "
            f"{', '.join(sorted(linear - {'lm_head'}))} (`fincocktail models show` lists the usual ones)"
        )
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    for p in peft_model.parameters():  # LoRA weights train in fp32 even on a bf16 base
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if next(peft_model.parameters()).device.type == "cpu":
        use_packed_dropout(peft_model)
    return peft_model


def resolve_attention(config: TrainConfig, device: torch.device, dtype: str) -> str | None:
    """The attention implementation to switch to, or None to keep the model's own (sdpa).

    On CPU, torch's flash-attention kernel is ~2.8x slower in bf16 than the plain eager
    softmax(QK^T)V for FPB-length sequences (fwd+bwd, 8 x 60 tokens, measured); eager stores the
    length x length scores, so `auto` uses it only while `max_length` <= 1024.
    """
    if config.attention != "auto":
        return config.attention
    if device.type == "cpu" and dtype == "bfloat16" and config.max_length <= EAGER_ATTENTION_MAX_LENGTH:
        return "eager"
    return None


def mixed_precision(model: Any, device: torch.device, dtype: str) -> Any:
    """The forward's context: bf16 autocast over a bf16 base, so LoRA matmuls run in bf16 too.

    The LoRA weights stay fp32 (autocast casts a bf16 copy per forward and the gradients land
    in fp32); peft's own cast of the input to the LoRA weights' dtype is switched off, since it
    would only round-trip bf16 activations through fp32. The LM head opts out (fp32 logits).
    """
    if dtype != "bfloat16":
        return contextlib.nullcontext()
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# Loss


def _body_and_head(model: Any) -> tuple[Any, Any]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head = base.get_output_embeddings()
    if body is None or head is None:
        raise ModelError(f"{type(base).__name__}: cannot find the decoder body and LM head")
    return body, head


def base_config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    return getattr(config, "text_config", None) or config


def fp32_head_weight(model: Any) -> torch.Tensor | None:
    """A float32 copy of a frozen low-precision LM head, so logits and loss are computed in fp32.

    None when the head is already fp32 or trains (full fine-tuning), where the head runs as is.
    The copy is made once per run: casting 49k x 576 weights every step would cost more than
    the head itself on answer positions.
    """
    _, head = _body_and_head(model)
    weight = head.weight
    if weight.dtype == torch.float32 or weight.requires_grad:
        return None
    return weight.detach().float()


def answer_loss_sum(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    head_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens and their count; logits only where a label exists.

    `head_weight` (from `fp32_head_weight`) replaces the LM head's own weight, in float32.
    """
    body, head = _body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    picked = hidden[:, :-1][keep]
    if head_weight is not None:
        bias = getattr(head, "bias", None)
        with torch.autocast(device_type=picked.device.type, enabled=False):  # the head stays fp32 under autocast
            logits = F.linear(picked.float(), head_weight, bias.float() if bias is not None else None)
    else:
        logits = head(picked).float()
    softcap = getattr(base_config(model), "final_logit_softcapping", None)
    if softcap:  # Gemma-2 style: the model's own forward applies this to its logits
        logits = torch.tanh(logits / softcap) * softcap
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss, int(keep.sum())


# --------------------------------------------------------------------------------------------
# Checkpoints


def _libc_malloc_trim() -> Callable[[], Any] | None:
    """glibc's malloc_trim, or None off glibc (macOS, musl)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return (lambda: libc.malloc_trim(0)) if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


TRIM_GROWTH_MB = 512


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere, where trimming is unavailable anyway)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(run_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], keep: int) -> Path:
    """Everything needed to continue exactly, written to a temp folder then renamed into place."""
    from safetensors.torch import save_file

    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['step']:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"  # a killed write's leftovers: remove_partial_writes
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in _trainable(model).items()}, str(tmp / TRAINABLE_FILE))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
        },
        tmp / EXTRA_FILE,
    )
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointError(FincocktailError):
    """A checkpoint that cannot be read back (truncated by a kill, corrupt, or not ours)."""


def remove_partial_writes(run_dir: Path) -> None:
    """Delete the temp folders a killed checkpoint or adapter write left behind.

    Called while this process holds the run folder's lock, so no live writer owns them.
    """
    for folder in (run_dir / CHECKPOINTS, run_dir):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".tmp-step-") or (p.name.startswith(".") and (".tmp" in p.name or ".old" in p.name) and p.is_dir()):
                shutil.rmtree(p, ignore_errors=True)


Checkpoint = tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]  # weights, optimizer/RNG state, loop state


def read_checkpoint(path: Path) -> Checkpoint:
    """The weights, optimizer/RNG state and loop state of a checkpoint, all read and checked.

    `optimizer.pt` is unpickled with `weights_only=True`: a checkpoint folder can sit on a
    shared disk, and a full unpickle would run whatever code a crafted file names.
    """
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / TRAINABLE_FILE))
        extra = torch.load(path / EXTRA_FILE, map_location="cpu", weights_only=True)
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        for key in ("optimizer", "scheduler", "torch_rng", "python_rng"):
            extra[key]
        for key in ("step", "epoch", "next_group", "tokens_seen", "elapsed_s"):
            state[key]
    except damaged_file_errors() as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {first_line(exc)[:200]})") from None
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: checkpoint holds non-finite weights ({bad[0]})")
    return weights, extra, state


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, read: Checkpoint | None = None) -> dict[str, Any]:
    """Put a checkpoint's state into the model, optimizer, scheduler and RNGs; returns the loop state.

    `read` is the checkpoint as `read_checkpoint` already returned it (no second read).
    """
    weights, extra, state = read if read is not None else read_checkpoint(path)
    params = _trainable(model)
    missing = set(params) ^ set(weights)
    if missing:
        raise FincocktailError(f"{path}: checkpoint does not match the model ({len(missing)} tensors differ)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    python_rng = extra["python_rng"]
    if isinstance(python_rng, list):  # weights_only unpickling may give lists where getstate() had tuples
        python_rng = (python_rng[0], tuple(python_rng[1]), python_rng[2])
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    if extra.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["cuda_rng"])
    random.setstate(python_rng)
    return state


def newest_readable_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> tuple[Path, Checkpoint] | None:
    """The newest checkpoint that reads back whole; broken newer ones are reported and skipped.

    A kill -9 can truncate the newest checkpoint's files only if the disk lied about fsync, but
    a full disk or a hand-edited folder can too: falling back to the previous checkpoint costs
    a few steps, failing costs the run.
    """
    ckpts = checkpoint_dirs(run_dir)
    errors: list[str] = []
    for cand in reversed(ckpts):
        try:
            return cand, read_checkpoint(cand)
        except CheckpointError as exc:
            errors.append(str(exc))
            warn(f"{exc}; trying the previous checkpoint")
    if errors:
        raise CheckpointError(
            f"{errors[0]}; no readable checkpoint is left: delete {run_dir / CHECKPOINTS} to retrain this run from step 0"
        )
    return None


def check_finite_params(model: Any) -> str | None:
    """The name of the first trainable parameter holding NaN or inf, or None."""
    with torch.no_grad():
        for name, p in _trainable(model).items():
            if not bool(torch.isfinite(p).all()):
                return name
    return None


# --------------------------------------------------------------------------------------------
# Run card


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("fincocktail", "torch", "transformers", "peft", "safetensors", "tokenizers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    import subprocess

    repo = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------
# The loop


def _lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if config.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def _rewrite_log(path: Path, upto_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a kill
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, path)


def _save_folder(save: Callable[[Path], None], dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    save(tmp)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def _contamination(config: TrainConfig, cocktail_cfg: Any, sources: dict, tasks: dict[str, Task], data_dir: Path, eval_tasks: Sequence[Task] | None):
    from fincocktail.contamination import contamination_for_cocktail

    return contamination_for_cocktail(
        sources, data_dir, n=cocktail_cfg.decontaminate.n, eval_tasks=eval_tasks, cocktail_tasks=tasks.values()
    )


ResumeMode = bool | Literal["if_present"]


def train(
    config: TrainConfig,
    run_dir: Path,
    resume: ResumeMode = False,
    *,
    resolver: Callable[[str], Task] | None = None,
    eval_tasks: Sequence[Task] | None = None,
    progress: bool = True,
    console: Any | None = None,
    tokens: TokenCache | None = None,
) -> TrainResult:
    """Train `config` into `run_dir`; with `resume`, continue from its last checkpoint.

    `tokens` tokenizes through a cache the caller shares across runs (a sweep worker).

    `resume=True` (the CLI's --resume) requires a run in `run_dir`: a typo in --out must not
    train from scratch. `resume="if_present"` (sweeps) continues a run if there is one and
    starts it otherwise. Either way a changed config is refused, also for a complete run.
    `resolver` and `eval_tasks` replace the task registry (tests, user code); by default the
    cocktail's tasks come from the registry and contamination is checked against every task.
    A `threads` setting applies for the duration of the call only. The run folder is locked
    for the duration: a second process training into it gets a one-line error.
    """
    run_dir = Path(run_dir)
    if resume is True and not holds_run(run_dir):
        raise ConfigError(
            f"{run_dir}: nothing to resume (no run_card.json or checkpoint there); check --out, or drop --resume to start a new run"
        )
    threads = torch.get_num_threads()
    try:
        with FolderLock(run_dir, TRAIN_LOCK, "a training run", "wait for it to finish or pass another --out"):
            return _train(config, run_dir, bool(resume), resolver, eval_tasks, progress, console, tokens)
    finally:
        torch.set_num_threads(threads)


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a started training run (a run card or a checkpoint)."""
    return (run_dir / "run_card.json").is_file() or bool(checkpoint_dirs(run_dir))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """`{"lora": {"r": 8}}` as `{"lora.r": 8}`: a refused resume names fields the way --set does."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_changes(saved: dict[str, Any] | None, config: TrainConfig) -> list[str]:
    """`field: old -> new` for each result-changing field that differs from the saved config."""
    if not isinstance(saved, dict):
        return []
    old = _flat({k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES})
    new = _flat(config.model_dump(mode="json", exclude=RESUMABLE_CHANGES))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_same_config(run_dir: Path, saved_fingerprint: str | None, saved_config: dict[str, Any] | None, config: TrainConfig, fingerprint: str) -> None:
    """Refuse to resume (or to report complete) a run whose result-changing config changed."""
    changes = config_changes(saved_config, config)
    if saved_fingerprint is not None and saved_fingerprint != fingerprint and not changes:
        changes = ["the cocktail's content"]
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise ConfigError(
            f"{run_dir}: the config differs from the one this run was started with ({shown}); "
            "resume with the same config (see run_card.json) or start a new run in another --out"
        )


def _read_card(card_path: Path) -> dict[str, Any] | None:
    """The run card, None when there is none; an unreadable one is a one-line error, not a traceback."""
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FincocktailError(f"{card_path}: unreadable run card ({exc}); move the run folder away and start a new run") from None
    if not isinstance(card, dict):
        raise FincocktailError(f"{card_path}: not a run card (expected a JSON object); move the run folder away and start a new run")
    return card


class TrainingDiverged(FincocktailError):
    """The loss or the weights went non-finite: the run stops and is marked failed."""


def _train(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    resolver: Callable[[str], Task] | None,
    eval_tasks: Sequence[Task] | None,
    progress: bool,
    console: Any | None,
    tokens: TokenCache | None = None,
) -> TrainResult:
    from rich.console import Console

    console = console or Console(stderr=True, quiet=not progress)
    started = time.time()
    cocktail_cfg, cocktail_src = resolve_cocktail(config)
    tasks = resolve_tasks(cocktail_cfg, resolver, cocktail_src)
    fingerprint = config.fingerprint(cocktail_cfg)

    card_path = run_dir / "run_card.json"
    remove_partial_writes(run_dir)
    ckpts = checkpoint_dirs(run_dir)
    card = _read_card(card_path)
    if not resume and (ckpts or card is not None or (run_dir / "adapter").exists()):
        raise ConfigError(  # like eval's --out that holds an evaluation: a usage error, exit 2
            f"{run_dir}: already holds a run; pass --resume to continue it or choose another output folder"
        )
    if resume and card is not None:
        check_same_config(run_dir, card.get("config_fingerprint"), card.get("config"), config, fingerprint)
        if card.get("status") == "complete":
            console.print(f"run {run_dir} is already complete")
            return _result_from_card(run_dir, card)
    readable = newest_readable_checkpoint(run_dir, lambda m: console.print(f"[yellow]warning[/]: {m}")) if resume else None
    resume_from, checkpoint = readable if readable is not None else (None, None)
    if checkpoint is not None:
        saved = checkpoint[2]
        check_same_config(run_dir, saved.get("config_fingerprint"), saved.get("config"), config, fingerprint)
    run_dir.mkdir(parents=True, exist_ok=True)

    from fincocktail.paths import find_data_dir

    data_dir = find_data_dir(config.data_dir)
    torch.manual_seed(config.seed)
    random.seed(config.seed)

    console.print(f"reading the train splits of {', '.join(tasks)}")
    sources = load_sources(tasks, data_dir)
    report = None
    if config.contamination_check or cocktail_cfg.decontaminate.drop:
        report = _contamination(config, cocktail_cfg, sources, tasks, data_dir, eval_tasks)
        report.dropped = cocktail_cfg.decontaminate.drop
    data = build_cocktail(
        cocktail_cfg,
        sources,
        tasks,
        epochs=config.epochs,
        drop_ids=report.contaminated_ids if report is not None and cocktail_cfg.decontaminate.drop else None,
        source=cocktail_src,
    )
    data.file_hashes = {task_id: source_file_hashes(task, data_dir) for task_id, task in tasks.items()}

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config)
    dtype = resolve_precision(config, device)
    console.print(f"loading {config.model} ({dtype} on {device})")
    model, tokenizer = load_model_and_tokenizer(config.model, dtype=dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        data.encode(tokenizer, config.prompt_style, tokens)
    except ValueError as exc:  # e.g. prompt_style chat with a tokenizer that has no chat template
        raise ConfigError(f"prompt_style: {exc}") from None
    manifest = write_manifest(data, run_dir / "data_manifest.json")

    attention = resolve_attention(config, device, dtype)
    if attention is not None:
        model.set_attn_implementation(attention)
    torch.manual_seed(config.seed)
    model = prepare_model(config, model.to(device))
    model.train()
    autocast = mixed_precision(model, device, dtype)

    epochs_enc: list[list[Encoded]] = [
        [truncate(*data.encodings[item], config.max_length) for item in epoch] for epoch in data.epochs
    ]
    plans = [
        plan_batches([len(e.input_ids) for e in enc], config.batch_size, config.seed, ep, config.batching)
        for ep, enc in enumerate(epochs_enc)
    ]
    steps_per_epoch = [math.ceil(len(p) / config.grad_accum) for p in plans]
    total_steps = sum(steps_per_epoch)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    if total_steps == 0:
        raise ConfigError(f"{cocktail_src}: the cocktail holds no training examples")

    head_weight = fp32_head_weight(model)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=all(p.dtype == torch.float32 for p in params) and device.type in ("cpu", "cuda"),  # one kernel, not ~10 per tensor
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))

    max_batch_tokens = resolve_max_batch_tokens(config, device)
    # Every batch has a different shape, so glibc's heap and oneDNN's primitive cache keep
    # memory from earlier steps and RSS creeps up (SmolLM2 LoRA: ~3 GB after 150 steps, while
    # the live peak is ~1.9 GB). Trimming every step bounds that but costs 12-17% (the next step
    # faults the pages back in), so trim only when the RSS left at the end of a step has grown
    # TRIM_GROWTH_MB beyond what the first step left.
    trim = _libc_malloc_trim() if device.type == "cpu" else None
    first_step_rss_mb: float | None = None
    step = 0
    start_epoch, start_group = 0, 0
    tokens_seen = 0
    prior_elapsed = 0.0
    log_path = run_dir / "train_log.jsonl"
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, scheduler, checkpoint)
        checkpoint = None  # the optimizer holds its own copy now
        step, start_epoch, start_group = state["step"], state["epoch"], state["next_group"]
        tokens_seen, prior_elapsed = state["tokens_seen"], state["elapsed_s"]
        _rewrite_log(log_path, step)
        console.print(f"resuming from {resume_from.name} (step {step} of {total_steps})")
    elif log_path.exists():
        log_path.unlink()

    write_json_atomic(
        card_path,
        _run_card(config, run_dir, manifest, report, status="running", started=started),
    )
    mean_pad = padding_fraction(plans[0], [len(e.input_ids) for e in epochs_enc[0]]) if plans[0] else 0.0
    console.print(
        f"{sum(len(e) for e in epochs_enc)} sequences over {config.epochs} epoch(s), {total_steps} steps, "
        f"padding {mean_pad:.1%}, trainable params {sum(p.numel() for p in params):,}"
    )

    final_loss: float | None = None
    train_start = time.time()
    session_tokens = 0
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar, open(
        log_path, "a", encoding="utf-8"
    ) as log:
        task_bar = bar.add_task("train", total=total_steps, completed=step, loss="-", tps="-")
        done = step >= total_steps
        for epoch in range(start_epoch, len(plans)):
            if done:
                break
            enc = epochs_enc[epoch]
            groups = [plans[epoch][i : i + config.grad_accum] for i in range(0, len(plans[epoch]), config.grad_accum)]
            first = start_group if epoch == start_epoch else 0
            lengths = [len(e.input_ids) for e in enc]
            for gi in range(first, len(groups)):
                step_t0 = time.time()
                batches: list[Batch] = [
                    collate([enc[i] for i in micro], pad_id)
                    for b in groups[gi]
                    for micro in split_by_tokens(b, lengths, max_batch_tokens)
                ]
                n_target = sum(b.target_tokens for b in batches)
                loss_total = 0.0
                for b in batches:
                    with autocast:
                        loss_sum, _ = answer_loss_sum(model, b.input_ids.to(device), b.labels.to(device), head_weight=head_weight)
                    (loss_sum / max(n_target, 1)).backward()
                    loss_total += float(loss_sum.detach())
                lr = optimizer.param_groups[0]["lr"]
                if not math.isfinite(loss_total):
                    _diverged(card_path, config, run_dir, manifest, report, started, step + 1, f"the loss is {loss_total}", lr)
                if config.max_grad_norm is not None:
                    norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
                    if not math.isfinite(norm):
                        _diverged(card_path, config, run_dir, manifest, report, started, step + 1, f"the gradient norm is {norm}", lr)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if trim is not None:
                    rss_now = _current_rss_mb()
                    if first_step_rss_mb is None:
                        first_step_rss_mb = rss_now
                    elif rss_now > first_step_rss_mb + TRIM_GROWTH_MB:
                        trim()
                step += 1
                real = sum(b.real_tokens for b in batches)
                tokens_seen += real
                session_tokens += real
                final_loss = loss_total / max(n_target, 1)
                dt = time.time() - step_t0
                tps = session_tokens / max(time.time() - train_start, 1e-9)
                if step % config.log_every == 0 or step == total_steps:
                    entry = {
                        "step": step,
                        "epoch": epoch,
                        "loss": round(final_loss, 6),
                        "lr": lr,
                        "tokens": real,
                        "target_tokens": n_target,
                        "tokens_per_s": round(real / max(dt, 1e-9), 1),
                        "elapsed_s": round(prior_elapsed + time.time() - train_start, 3),
                    }
                    log.write(json.dumps(entry, allow_nan=False) + "\n")
                    log.flush()
                bar.update(task_bar, advance=1, loss=f"{final_loss:.4f}", tps=f"{tps:,.0f}")
                if step % config.checkpoint_every == 0 or step >= total_steps:
                    bad = check_finite_params(model)  # never checkpoint or save weights an update broke
                    if bad is not None:
                        _diverged(card_path, config, run_dir, manifest, report, started, step, f"{bad} holds NaN/inf after the update", lr)
                if step % config.checkpoint_every == 0 and step < total_steps:
                    log.flush()
                    os.fsync(log.fileno())
                    save_checkpoint(
                        run_dir,
                        model,
                        optimizer,
                        scheduler,
                        {
                            "step": step,
                            "epoch": epoch if gi + 1 < len(groups) else epoch + 1,
                            "next_group": gi + 1 if gi + 1 < len(groups) else 0,
                            "tokens_seen": tokens_seen,
                            "elapsed_s": prior_elapsed + time.time() - train_start,
                            "config_fingerprint": fingerprint,
                            "config": config.model_dump(mode="json"),  # so a refused resume names the changed fields
                        },
                        config.keep_checkpoints,
                    )
                if step >= total_steps:
                    done = True
                    break

    model.eval()
    adapter_dir: Path | None
    if config.method == "lora":
        adapter_dir = run_dir / "adapter"
    else:
        adapter_dir = run_dir / "model"

    def _save(dest: Path) -> None:
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)

    _save_folder(_save, adapter_dir)
    merged_dir = None
    if config.merge and config.method == "lora":
        merged_dir = run_dir / "merged"
        merged = model.merge_and_unload()

        def _save_merged(dest: Path) -> None:
            merged.save_pretrained(dest)
            tokenizer.save_pretrained(dest)

        _save_folder(_save_merged, merged_dir)

    wall = prior_elapsed + time.time() - train_start
    result = TrainResult(
        run_dir=run_dir,
        adapter_dir=adapter_dir,
        tokens_seen=tokens_seen,
        wall_time_s=round(prior_elapsed + time.time() - started, 3),
        peak_rss_mb=round(_rss_mb(), 1),
        final_loss=final_loss,
        steps=step,
        merged_dir=merged_dir,
    )
    card = _run_card(config, run_dir, manifest, report, status="complete", started=started)
    card.update(
        {
            "steps": step,
            "total_steps": total_steps,
            "tokens_seen": tokens_seen,
            "train_time_s": round(wall, 3),
            "wall_time_s": result.wall_time_s,
            "tokens_per_s": round(session_tokens / max(time.time() - train_start, 1e-9), 1),
            "peak_rss_mb": result.peak_rss_mb,
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
            "device": str(device),
            "base_dtype": dtype,
            "attention": attention or getattr(base_config(model), "_attn_implementation", None),
            "cpu_features": cpu_features() if device.type == "cpu" else None,
            "final_loss": final_loss,
            "resumed_from": resume_from.name if resume_from is not None else None,
            "adapter_dir": str(adapter_dir.relative_to(run_dir)),
            "merged_dir": str(merged_dir.relative_to(run_dir)) if merged_dir else None,
        }
    )
    write_json_atomic(card_path, card)
    return result


def _diverged(card_path: Path, config: TrainConfig, run_dir: Path, manifest: dict, report: Any, started: float,
              step: int, what: str, lr: float) -> None:
    """Mark the run failed (never complete) and stop with one line that says what to change."""
    message = (
        f"{run_dir}: training diverged at step {step}: {what} (lr {lr:g}); the run is marked failed and no adapter "
        "was written; lower lr or set max_grad_norm, and start a new run in another --out"
    )
    card = _run_card(config, run_dir, manifest, report, status="failed", started=started)
    card.update({"error": message, "failed_at_step": step})
    write_json_atomic(card_path, card)
    raise TrainingDiverged(message)


def _run_card(config: TrainConfig, run_dir: Path, manifest: dict, report: Any, status: str, started: float) -> dict[str, Any]:
    return {
        "status": status,
        "config_fingerprint": config.fingerprint(resolve_cocktail(config)[0]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "run_dir": str(run_dir),
        "config": config.model_dump(mode="json"),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "data_manifest": manifest,
        "contamination": report.to_json() if report is not None else None,
    }


def _result_from_card(run_dir: Path, card: dict[str, Any]) -> TrainResult:
    return TrainResult(
        run_dir=run_dir,
        adapter_dir=run_dir / card["adapter_dir"] if card.get("adapter_dir") else None,
        tokens_seen=card.get("tokens_seen", 0),
        wall_time_s=card.get("wall_time_s", 0.0),
        peak_rss_mb=card.get("peak_rss_mb", 0.0),
        final_loss=card.get("final_loss"),
        steps=card.get("steps", 0),
        merged_dir=run_dir / card["merged_dir"] if card.get("merged_dir") else None,
    )
