"""Which device a command runs on: the one place `--device` / `device:` is read and checked.

Training, evaluation, serving, sweeps and the search all take the same names: `auto` (the GPU
when torch sees one, else the CPU), `cpu`, `cuda` (the current GPU), `cuda:N` and `mps`. A
device that is asked for but absent is a one-line usage error (exit 2), never a silent CPU run
that takes a hundred times longer. The device changes how fast a run goes, not what it
computes, so it is never part of a run id or a resume fingerprint.

`check_device` only reads the name (no torch import), so commands refuse a typo before they
load anything; `resolve_device` asks torch what is there.
"""

from __future__ import annotations

import os
import re
from typing import Any

from fincocktail.errors import ConfigError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
DEVICE_HELP = f"{DEVICE_CHOICES}; auto: the GPU when torch sees one, else the CPU"
_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(name: str, option: str = "--device") -> str:
    """`name`, normalised (stripped, lower case), if it is one of DEVICE_CHOICES; else a one-line error."""
    text = str(name).strip().lower()
    if not _NAME.match(text):
        raise ConfigError(f"{option} {name!r}: unknown device; expected {DEVICE_CHOICES}")
    return text


def gpu_count() -> int:
    """CUDA GPUs torch can see (after CUDA_VISIBLE_DEVICES); 0 without CUDA."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(name: str = "auto", option: str = "--device") -> Any:
    """The `torch.device` for `name`: `auto` is `cuda` when a GPU is visible, else `cpu`.

    Why one function: training had its own `auto` and evaluation loaded on the CPU, so a GPU
    machine trained on the GPU and scored on the CPU. `cuda` without a GPU, `cuda:N` beyond the
    GPUs torch sees, and `mps` where torch has none are one-line errors (exit 2).
    """
    import torch

    text = check_device(name, option)
    if text == "auto":
        return torch.device("cuda" if gpu_count() > 0 else "cpu")
    if text.startswith("cuda"):
        count = gpu_count()
        if count == 0:
            raise ConfigError(f"{option} {text}: torch sees no CUDA GPU (no driver, a CPU-only torch, or CUDA_VISIBLE_DEVICES hides them); use cpu or auto")
        index = int(text.split(":", 1)[1]) if ":" in text else None
        if index is not None and index >= count:
            raise ConfigError(f"{option} {text}: torch sees {count} CUDA GPU(s), numbered 0 to {count - 1}")
        return torch.device(text)
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{option} mps: this torch has no Apple MPS device; use cpu or auto")
    return torch.device(text)


def wants_gpu(name: str) -> bool:
    """Whether `name` asks for CUDA GPUs when there are any (`auto`, `cuda`, `cuda:N`)."""
    text = check_device(name)
    return text == "auto" or text.startswith("cuda")


def visible_gpus(count: int, env: dict[str, str] | None = None) -> list[str]:
    """The ids to hand a worker in CUDA_VISIBLE_DEVICES, for the `count` GPUs torch sees here.

    Where the user already narrowed CUDA_VISIBLE_DEVICES (say `2,3`), worker 0 must get `2`,
    not `0`: a child process's variable names physical GPUs, not this process's numbering.
    """
    env = os.environ if env is None else env
    given = [part.strip() for part in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    if "CUDA_VISIBLE_DEVICES" in env and given:
        return given[:count]
    return [str(i) for i in range(count)]


__all__ = ["DEVICE_CHOICES", "DEVICE_HELP", "check_device", "gpu_count", "resolve_device", "visible_gpus", "wants_gpu"]


def device_field(value: str) -> str:
    """`check_device` for a pydantic field validator: the name checked (no torch needed), its error
    as the ValueError pydantic turns into a one-line config error naming the field."""
    try:
        return check_device(value, "device")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("device ")) from None

