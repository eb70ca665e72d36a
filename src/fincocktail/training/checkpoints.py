"""Checkpoints: everything a resumed run needs to continue exactly as if never stopped.

A checkpoint is a folder `checkpoints/step-N/` with the trainable weights (safetensors), the
optimizer, scheduler and RNG states (`optimizer.pt`) and the loop's position (`state.json`).
It is written into a temp folder and renamed, so a kill leaves either the whole checkpoint or
a `.tmp-` folder that the next run deletes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fincocktail.errors import FincocktailError
from fincocktail.plumbing.fileio import damaged_file_errors, first_line

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"
EXTRA_FILE = "optimizer.pt"

Checkpoint = tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]  # weights, optimizer/RNG state, loop state


class CheckpointError(FincocktailError):
    """A checkpoint that cannot be read back (truncated by a kill, corrupt, or not ours)."""


def trainable(model: Any) -> dict[str, torch.Tensor]:
    """The parameters a checkpoint stores: only these change, so only these are saved."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a folder without its state file is not finished)."""
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
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable(model).items()}, str(tmp / TRAINABLE_FILE))
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
    params = trainable(model)
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
    """The name of the first trainable parameter holding NaN or inf, or None.

    Checked before every checkpoint and the final save: weights an update broke must never be
    written where a resume or an evaluation would pick them up.
    """
    with torch.no_grad():
        for name, p in trainable(model).items():
            if not bool(torch.isfinite(p).all()):
                return name
    return None


__all__ = [
    "CHECKPOINTS",
    "Checkpoint",
    "CheckpointError",
    "check_finite_params",
    "checkpoint_dirs",
    "load_checkpoint",
    "newest_readable_checkpoint",
    "read_checkpoint",
    "remove_partial_writes",
    "save_checkpoint",
]
