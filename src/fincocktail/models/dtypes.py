"""The words for numeric precision, in one place: which values each entry point accepts.

It lives in `models` (below `training` and `evaluation`, with no torch import) because every
layer that loads a model names a precision: `models.loading` the concrete dtype it loads in,
`evaluation` (`fincocktail eval --dtype`, `EvalConfig.dtype`, `evaluation.loading`) and sweep
files (`eval.dtype`) the evaluation precision, `training` (`training.precision`) the training one.
What `auto` resolves to on a device is decided in `models.precision` (`native_bf16`).

Evaluation (`Precision`): float32 is the reference the other modes are measured against, so it
is the default of `fincocktail eval`, `EvalConfig`, sweeps and `serve` alike. `auto` (bf16
choice scoring with close calls re-checked in fp32, generation in fp32) gave fp32's
predictions on every example measured (README, Performance), but that rests on an empirical
margin, so it is a choice a preset or a user makes (`dtype: auto`, `--dtype auto`), never a
silent default. A sweep's run id leaves out a float32 dtype, so runs from before the field
existed keep their ids. `auto` means the same on a bf16 GPU as on a bf16 CPU
(`evaluation.loading.checked_bf16`); elsewhere fp32.

Training (`TrainPrecision`) is the same idea as a sweep file's `eval.dtype` next to it, stored
as `fp32` / `bf16` / `auto`: those spellings are hashed into every trained run's id, so they
stay; both fields accept both spellings (`long_spelling`, `short_spelling`), so a user writes
one vocabulary; `fp32` is `float32`, `bf16` is `bfloat16` (frozen base
weights in bf16, the trained weights in fp32), and `auto` picks bf16 on the same hardware as
evaluation's `auto` (for LoRA). Training has no float16.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

# Every precision evaluation accepts (`fincocktail eval --dtype`, `EvalConfig`, `evaluation.loading`).
Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# What a sweep file's `eval.dtype` accepts: float16 has no use on CPU and no sweep preset.
SweepPrecision = Literal["auto", "float32", "bfloat16"]
# A dtype a model is loaded in (`models.loading`): `auto` already resolved by the caller.
LoadPrecision = Literal["float32", "bfloat16", "float16"]
# `training.precision` (see the module docstring for why it is spelt differently).
TrainPrecision = Literal["fp32", "bf16", "auto"]
DEFAULT_EVAL_DTYPE: Precision = "float32"
# The narrower ones are spelt out (a type checker needs the literals) but must stay within Precision.
assert set(get_args(SweepPrecision)) <= set(PRECISIONS) and set(get_args(LoadPrecision)) <= set(PRECISIONS)

# Both spellings are accepted everywhere a precision is named, and each field stores its own
# (the one its run ids hash): `eval.dtype: fp32` is `float32`, `training.precision: bfloat16` is `bf16`.
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_LONG = {short: long for long, short in _SHORT.items()}


def long_spelling(value: Any) -> Any:
    """`fp32` / `bf16` / `fp16` as evaluation spells them; anything else unchanged (the field's type judges it)."""
    return _LONG.get(value, value) if isinstance(value, str) else value


def short_spelling(value: Any) -> Any:
    """`float32` / `bfloat16` / `float16` as training spells them; anything else unchanged."""
    return _SHORT.get(value, value) if isinstance(value, str) else value
