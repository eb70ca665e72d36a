"""The training run config: one pydantic model, validated before any model is loaded.

Every field can be overridden from the command line (`--set lora.r=8`, plus named flags), so a
sweep is a base YAML and a list of overrides. Unknown fields are errors (`extra="forbid"`): a
misspelt `learning_rate` must never silently train with the default.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from fincocktail.cocktail import CocktailConfig, load_cocktail, parse_cocktail
from fincocktail.errors import ConfigError
from fincocktail.models.dtypes import TrainPrecision, short_spelling
from fincocktail.plumbing.fileio import format_validation_error, load_yaml

PrefixSharing = Literal["auto", "on", "off"]  # see training.prefix

RESUMABLE_CHANGES = {
    "output_dir", "merge", "device", "threads", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every",
}

LATER_FIELDS: dict[str, Any] = {
    "prefix_sharing": "off", "eval_every": None, "eval_examples": 64, "eval_tasks_extra": [], "decay_fraction": 0.2,
    "eval_tasks": None,
}
"""Fields added after runs were started, with the value that means what earlier runs did.

A config dumps without them at that value: the fingerprint a resume checks, the config a run
card and checkpoint save and a sweep's run id all hash the dump, so a run started before the
field existed still resumes and keeps its id (like an eval `dtype: float32`, `sweep.spec`).
"""


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="default: the model registry's list, else every linear projection"
    )

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not [v for v in value if v.strip()]:
            raise ValueError("an empty list trains nothing; list module names (e.g. [q_proj, v_proj]) or omit the field for the model's default")
        return value


class TrainConfig(BaseModel):
    """A training run. `cocktail` is a path to a cocktail YAML (relative to this file) or inline."""

    # allow_inf_nan=False: `lr: .inf` (or 1e400, which parses as inf) would train a NaN adapter.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(min_length=1, description="registry name or local HF folder")
    cocktail: str | CocktailConfig
    data_dir: str | None = None
    output_dir: str | None = Field(default=None, description="run folder (CLI --out overrides)")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = LoraSettings()
    prompt_style: Literal["instruction", "chat"] = "instruction"
    precision: TrainPrecision = Field(
        default="fp32",
        description="bf16: frozen base weights in bf16, LoRA weights, optimizer and loss in fp32 (LoRA only); "
        "auto: bf16 for LoRA where the hardware has native bf16 GEMMs (CUDA with bf16, CPU with AVX-512 BF16 "
        "or AMX), else fp32. The same idea as a sweep's eval.dtype, in training's own spelling (models/dtypes.py)",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        default="auto",
        description="attention implementation; auto: eager for bf16 on CPU with max_length <= 1024 (faster "
        "there), else the model's default (sdpa)",
    )
    device: str = Field(
        default="auto",
        description="auto | cpu | cuda | cuda:N | mps; auto: the GPU when torch sees one (not part of the fingerprint "
        "nor of sweep run ids: the device changes speed, not the result)",
    )
    threads: int | None = Field(
        default=None, gt=0, description="CPU threads for torch (default: torch's); 1 is often faster on a busy shared machine"
    )

    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "wsd"] = Field(
        default="linear",
        description="after warmup: linear or cosine decay to 0, constant, or wsd (warmup-stable-decay: constant, "
        "then linear to 0 over the last decay_fraction of the steps; a checkpoint before the decay is a fair "
        "partial run, which the racing mixture search reads)",
    )
    decay_fraction: float = Field(default=0.2, gt=0, le=1, description="scheduler wsd: the share of steps that decays")
    warmup_steps: int = Field(default=0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    batch_size: int = Field(default=8, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    epochs: int = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, gt=0, description="optimizer steps; caps epochs")
    max_batch_tokens: int | Literal["auto"] | None = Field(
        default="auto",
        description="split a batch into micro-batches of at most this many padded tokens (bounds activation "
        "memory; same gradient). auto: 512 on CPU (SmolLM2 LoRA stays under ~3 GiB RSS), no split on GPU; "
        "null: never split",
    )
    max_length: int = Field(default=512, gt=8, description="longer examples lose prompt tokens from the left")
    seed: int = 0
    batching: Literal["length_grouped", "shuffle"] = "length_grouped"
    gradient_checkpointing: bool = False
    prefix_sharing: PrefixSharing = Field(
        default="off",
        description="batch within one task and run a micro-batch's common prefix (the instruction) once, packed "
        "with every row's suffix in one masked sequence; same loss and gradients. auto: where the prefix saves >= 15% "
        "of the micro-batch's tokens (1.09-1.47x faster than off, same validation accuracy, README); off (the default, so earlier "
        "runs' batch plans, fingerprints and sweep run ids stay as they were): mixed-task batches",
    )

    checkpoint_every: int = Field(default=100, gt=0, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(default=1, gt=0)
    log_every: int = Field(default=1, gt=0)
    eval_every: int | None = Field(
        default=None, gt=0,
        description="optimizer steps between learning-curve points (training.curves): the likelihood metric on a "
        "fixed validation sample of every task of the cocktail (and eval_tasks_extra), at step 0, every N steps and "
        "at the end, into train_log.jsonl; null: no curves",
    )
    eval_examples: int = Field(default=64, gt=0, description="validation examples per task for the learning curves")
    eval_tasks_extra: list[str] = Field(
        default_factory=list, description="tasks outside the cocktail whose curves are also drawn (e.g. [cfa])"
    )
    eval_tasks: list[str] | None = Field(
        default=None, description="draw the curves of exactly these tasks (default: the cocktail's scorable tasks and "
        "eval_tasks_extra); the racing mixture search sets its searched tasks"
    )
    contamination_check: bool = Field(default=True, description="record the n-gram overlap report in the run card")
    merge: bool = Field(default=False, description="also save the base model with the LoRA merged in")

    @field_validator("precision", mode="before")
    @classmethod
    def _short_spelling(cls, value: Any) -> Any:
        return short_spelling(value)  # `bfloat16` as evaluation spells it is `bf16`

    @field_validator("prefix_sharing", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        """YAML 1.1 (PyYAML) reads a bare `on` / `off` as true / false; they mean the modes here."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("eval_tasks_extra", "eval_tasks")
    @classmethod
    def _extra_tasks(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [v.strip() for v in value]
        if any(not v for v in cleaned):
            raise ValueError("an empty task id; list task ids such as [cfa, fiqa_sa]")
        twice = sorted({v for v in cleaned if cleaned.count(v) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return cleaned

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        """Names are checked here (no torch needed); whether the device exists, when the run starts."""
        from fincocktail.models.device import device_field

        return device_field(value)

    @field_validator("max_batch_tokens")
    @classmethod
    def _positive_tokens(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"must be > 0, 'auto' or null, got {value}")
        return value

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump, less each of LATER_FIELDS at its earlier meaning (see there)."""
        data = handler(self)
        for name, value in LATER_FIELDS.items():
            if name in data and data[name] == value:
                del data[name]
        return data

    @model_validator(mode="after")
    def _precision_needs_lora(self) -> TrainConfig:
        if self.precision == "bf16" and self.method != "lora":
            raise ValueError("precision: bf16 keeps the base weights frozen in bf16, so it needs method: lora")
        return self

    def fingerprint(self, cocktail: CocktailConfig | None = None) -> str:
        """What must match for a resume to continue the same run.

        Includes the cocktail's content (not just its path); leaves out what may change between
        a run and its resume without changing the result (output folder, merge, device, logging
        and checkpoint cadence).
        """
        payload = self.model_dump(mode="json", exclude=RESUMABLE_CHANGES)
        if cocktail is not None:
            payload["cocktail"] = cocktail.model_dump(mode="json")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_STRING_FIELDS = {"model", "data_dir", "output_dir"}


def _set_path(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: --set {dotted}: {key!r} is not a mapping")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "command line") -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are read as YAML (`8`, `2e-4`, `true`, `[q_proj]`)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: --set {item!r}: expected KEY=VALUE (e.g. lora.r=8)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if key.strip() in _STRING_FIELDS:
            value = raw  # a model called `1.0` or a folder called `true` stays a string
        _set_path(data, key.strip(), value, source)
    return data


def parse_train_config(data: Any, source: str = "config", base_dir: Path | None = None) -> TrainConfig:
    """Validate a run config; a cocktail given as a path is read relative to `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    if "model" not in data or data.get("model") in (None, ""):
        raise ConfigError(f"{source}: model: missing (a registry name such as smollm2-135m-instruct or a folder)")
    if "cocktail" not in data:
        raise ConfigError(f"{source}: cocktail: missing (a cocktail YAML path or an inline mapping)")
    cocktail = data["cocktail"]
    if isinstance(cocktail, dict):
        data["cocktail"] = parse_cocktail(cocktail, source=f"{source}: cocktail")
    elif isinstance(cocktail, str):
        path = Path(cocktail).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        data["cocktail"] = str(path)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_train_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with model, cocktail, ...; got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_train_config(data, source=str(path), base_dir=path.parent)


def resolve_cocktail(config: TrainConfig) -> tuple[CocktailConfig, str]:
    """The cocktail config and a name for error messages (its file, or 'cocktail')."""
    if isinstance(config.cocktail, CocktailConfig):
        return config.cocktail, "cocktail"
    return load_cocktail(config.cocktail), config.cocktail
