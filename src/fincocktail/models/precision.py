"""Which compute precision a device runs fast: the one place `auto` precision is decided.

bf16 only pays off where the hardware multiplies bf16 natively: CUDA GPUs that report bf16
support, and CPUs with AVX-512 BF16 or AMX tiles (oneDNN then runs bf16 GEMMs at ~2x the
fp32 rate). Elsewhere torch emulates bf16 on CPU, which is slower than fp32, so `auto` stays
in fp32 there.
"""

from __future__ import annotations

from typing import Any

import torch


def native_bf16(device: Any = "cpu") -> bool:
    """True when `device` (a torch.device or its name) has native bf16 matrix multiplication."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return any(cpu_features().values())
    return False


def cpu_features() -> dict[str, bool]:
    """The CPU flags that decide `auto` on CPU (also written to run cards)."""
    cpu = getattr(torch, "cpu", None)
    names = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    return {key: bool(getattr(cpu, fn, lambda: False)()) for key, fn in names.items()}
