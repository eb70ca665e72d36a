"""The evaluation settings every entry point shares, declared once.

Three models describe an evaluation: a sweep file's `eval:` section (`sweep.spec.EvalSpec`),
one planned run's resolved settings as executors read them (`sweep.spec.EvalSettings`), and
what `fincocktail eval` and a sweep worker evaluate with (`evaluation.runner.EvalConfig`).
They derive from `EvalFields`, so each shared field's type, constraint and description is
written here only. Where one of them must differ (a narrower type, another default), it
redeclares the field with `inherited(name, ...)`, which keeps everything it does not change,
and says why next to it.

This module sits in `evaluation` (layer 5) and imports neither torch nor numpy, so the sweep
(layer 6) can import it without loading a model stack (`tasks.sampling` imports numpy only
where a sample is drawn).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic.fields import FieldInfo

from fincocktail.models.dtypes import DEFAULT_EVAL_DTYPE, Precision, long_spelling
from fincocktail.tasks.sampling import SampleMethod

Mode = Literal["auto", "choice", "generate"]


class EvalFields(BaseModel):
    """The fields `EvalSpec`, `EvalSettings` and `EvalConfig` share, with the defaults of
    `fincocktail eval` (what a user who sets nothing gets). No model config here: each
    subclass keeps its own (a sweep file refuses unknown keys, `EvalConfig` is built from code)."""

    tasks: list[str] = Field(description="the task ids evaluated")
    split: str = Field(default="test", description="the split evaluated")
    mode: Mode = Field(default="auto", description="auto: choice for classification / multiple choice tasks, else generate")
    shots: int = Field(default=0, ge=0, description="demonstrations from the train split (seeded; the same for every example)")
    batch_size: int = Field(default=8, ge=1, description="examples per forward pass (API models: parallel requests)")
    bootstrap_samples: int = Field(default=1000, ge=10, description="resamples of the headline metric's 95% interval")
    max_new_tokens: int | None = Field(default=None, ge=1, description="overrides every task's own generation budget")
    sample: SampleMethod = Field(
        default="stratified", description="how a limit picks its rows (tasks/sampling.py); head = the first N, biased"
    )
    sample_seed: int = Field(default=0, description="seeds the sample, so every run and model is scored on the same rows")
    dtype: Precision = Field(
        default=DEFAULT_EVAL_DTYPE,
        description="auto: on a CPU with native bf16 or a bf16 GPU, choice scoring in bf16 with close calls re-checked in fp32 "
        "(the same predictions as fp32), generation in fp32",
    )
    # Cut from the left, as training's max_length does, so the question and the answer cue at the
    # prompt's end are kept. Long-context tasks (FinQA prompts average ~1200 tokens) cost prefill
    # time in proportion; a study on a small CPU trades context for runs. The count cut is in
    # each task's metrics.
    max_prompt_tokens: int | None = Field(
        default=None, ge=16,
        description="longer prompts lose tokens from the left, as in training (null: whole prompts); local models only",
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _long_spelling(cls, value: Any) -> Any:
        return long_spelling(value)  # `fp32` as training spells it is `float32`


def inherited(base: type[BaseModel], name: str, **changes: Any) -> Any:
    """`base`'s declaration of field `name` with `changes` (a default, a description), for a
    subclass that redeclares the field: pydantic replaces a redeclared field whole, so without
    this its constraint and description would have to be written again. A field whose default
    is a value takes a new value here, not a default_factory (pydantic would see both; it copies
    a mutable default per instance anyway)."""
    return FieldInfo.merge_field_infos(base.model_fields[name], **changes)


__all__ = ["EvalFields", "Mode", "inherited"]
