"""The precision evaluation runs in, and its one default for every entry point.

float32 is the reference the other modes are measured against, so it is the default of
`fincocktail eval`, `EvalConfig`, sweeps and `serve` alike. `auto` (bf16 choice scoring with
close calls re-checked in fp32, generation in fp32) gave fp32's predictions on every example
measured (README, Performance), but that rests on an empirical margin, so it is a choice a
preset or a user makes (`dtype: auto`, `--dtype auto`), never a silent default. A sweep's run
id leaves out a float32 dtype, so runs from before the field existed keep their ids. `auto`
means the same on a bf16 GPU as on a bf16 CPU (`evaluation.loading.checked_bf16`); elsewhere fp32.
"""

from __future__ import annotations

from typing import Literal

EvalDtype = Literal["float32", "auto", "bfloat16", "float16"]
SweepEvalDtype = Literal["float32", "auto", "bfloat16"]  # float16 has no use on CPU and no sweep preset
DEFAULT_EVAL_DTYPE = "float32"
