"""The model a run trains: loaded, placed, set to its precision and attention, wrapped with LoRA.

Each `resolve_*` turns an `auto` setting into what this machine should use, so the recipe and
the run card see one concrete choice (and tests can check each choice on its own).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from fincocktail.errors import ConfigError
from fincocktail.models.device import resolve_device as resolve_named_device
from fincocktail.models.precision import native_bf16
from fincocktail.training.config import TrainConfig
from fincocktail.training.dropout import use_packed_dropout

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CPU_MAX_BATCH_TOKENS = 512
EAGER_ATTENTION_MAX_LENGTH = 1024


def load_model_and_tokenizer(name_or_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """A registry name (pulled and converted on first use) or a local Hugging Face folder."""
    from fincocktail.models import load_model_and_tokenizer as registry_loader

    return registry_loader(name_or_path, dtype=dtype)


def lora_targets(config: TrainConfig, model: Any) -> list[str]:
    """Config's list, else the registry's, else every linear projection found in the model."""
    if config.lora.target_modules:
        return list(config.lora.target_modules)
    from fincocktail.models import get_model_spec

    spec = get_model_spec(config.model)
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
    """The run's device, resolved as every command resolves it (`models.device`): `cuda` without
    a GPU is an error, not a silent CPU run that takes a hundred times longer."""
    return resolve_named_device(config.device, "device:")


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


def resolve_max_batch_tokens(config: TrainConfig, device: torch.device) -> int | None:
    """`auto` bounds activation memory on CPU, where RAM is the limit; GPUs run whole batches."""
    if config.max_batch_tokens == "auto":
        return CPU_MAX_BATCH_TOKENS if device.type == "cpu" else None
    return config.max_batch_tokens  # type: ignore[return-value]


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


def prepare_model(config: TrainConfig, model: Any) -> Any:
    """Wrap with LoRA (or unfreeze everything for full fine-tuning).

    Unknown LoRA targets are refused here, naming the model's linear modules: peft would only
    say that none matched.
    """
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


__all__ = [
    "load_model_and_tokenizer",
    "lora_targets",
    "mixed_precision",
    "prepare_model",
    "resolve_attention",
    "resolve_device",
    "resolve_max_batch_tokens",
    "resolve_precision",
]
