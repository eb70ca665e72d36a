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


def cast_weights(model: Any, dtype: torch.dtype) -> Any:
    """Cast parameters and persistent buffers to `dtype`, in place, as loading in `dtype` would.

    `model.to(dtype)` would also cast non-persistent buffers such as rotary `inv_freq`, which
    `from_pretrained(dtype=...)` keeps in fp32; in bf16 that visibly moves the log-probs.
    Tied weights stay tied (they are one Parameter).
    """
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_floating_point() and name not in module._non_persistent_buffers_set:
                module._buffers[name] = buf.to(dtype)
    return model
