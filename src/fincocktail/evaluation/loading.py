"""Loading what evaluation runs on: a base model (registry name, local folder or hub id) plus an optional adapter.

The base model comes from `fincocktail.models` (which pulls and converts registry models on
first use); the adapter is applied with plain peft and merged, since evaluation never trains.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fincocktail.errors import ConfigError, ModelError
from fincocktail.plumbing.fileio import damaged_file_errors, first_line
from fincocktail.models.dtypes import PRECISIONS, long_spelling
from fincocktail.models.precision import cast_weights, native_bf16


def checked_bf16(dtype: str, device: Any = "cpu") -> bool:
    """Whether `dtype` means bf16 scoring with an fp32 re-check (`auto` on native-bf16 hardware).

    Plain bf16 flips a few close choice predictions against fp32 (98.0% agreement on a tuned
    FPB adapter), so `auto` scores in bf16, re-scores the close calls in fp32 and generates in
    fp32 (evaluation.runner), on bf16 CPUs and on GPUs that report bf16 alike; elsewhere `auto`
    is plain fp32, as emulated bf16 is slower.
    """
    return dtype == "auto" and native_bf16(device)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str  # what the user passed
    path: str  # the local folder it resolved to
    adapter: str | None  # the adapter folder, when one was applied
    reference: Any | None = None  # dtype auto on bf16 hardware: the fp32 model that re-checks close calls
    device: str = "cpu"  # where the weights live (`models.device`), for the run card


def adapter_folder(run_dir: str | Path) -> Path:
    """`RUN_DIR/adapter`, or `RUN_DIR` itself when it holds `adapter_config.json`."""
    root = Path(run_dir).expanduser()
    for cand in (root / "adapter", root):
        if (cand / "adapter_config.json").is_file():
            return cand
    if not root.exists():  # a typo: a usage error (exit 2), like any option naming nothing
        raise ConfigError(f"--adapter {run_dir}: no such folder; pass a training run folder or a peft adapter folder")
    raise ConfigError(
        f"--adapter {run_dir}: no adapter_config.json in {root / 'adapter'} or {root}; "
        "pass a training run folder or a peft adapter folder"
    )


def apply_adapter(model: Any, adapter_dir: Path, adapter_name: str | None = None) -> Any:
    """`model` with the peft adapter in `adapter_dir`; a damaged or diverged adapter is a one-line error.

    peft unpickles a `.bin` adapter with weights_only=True, so a hostile file is refused, not
    run. The weights are checked for NaN/inf first: a diverged adapter would otherwise score
    every choice NaN and fail far from the cause. With `adapter_name`, the adapter is attached
    under that name, next to those a peft `model` already holds (`fincocktail serve`).
    """
    from peft import PeftModel

    fix = "retrain it, or pass the folder of a complete run"
    weights = adapter_dir / "adapter_model.safetensors"
    try:
        if weights.is_file():
            from safetensors.torch import load_file

            bad = [k for k, t in load_file(str(weights)).items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
            if bad:
                raise ModelError(f"{weights}: the adapter holds NaN/inf weights ({bad[0]}), from a diverged run; {fix}")
        if adapter_name is None:
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
        elif isinstance(model, PeftModel):
            model.load_adapter(str(adapter_dir), adapter_name=adapter_name)
            peft_model = model
        else:
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name)
        check_adapter_keys(peft_model, adapter_dir, adapter_name or "default")
        return peft_model
    except damaged_file_errors() as exc:
        raise ModelError(f"cannot apply the adapter {adapter_dir}: {type(exc).__name__}: {first_line(exc)[:200]}; {fix}") from None


def check_adapter_keys(peft_model: Any, adapter_dir: Path, adapter_name: str) -> None:
    """The adapter's weights file and the layers its config made must match key for key.

    Why: peft loads what matches and drops the rest (at most a warning that the CLI hides), so an
    `adapter_config.json` whose `target_modules` disagree with its weights would be scored with
    part of the adapter missing, silently. Any missing or unexpected key is a one-line error.
    """
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    stored = set(load_peft_weights(str(adapter_dir), device="cpu"))
    expected = set(get_peft_model_state_dict(peft_model, adapter_name=adapter_name))
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        what = []
        if unexpected:
            what.append(f"{len(unexpected)} weight(s) its config does not use, e.g. {unexpected[0]}")
        if missing:
            what.append(f"{len(missing)} weight(s) its config needs are missing, e.g. {missing[0]}")
        raise ModelError(
            f"{adapter_dir}: the adapter would load only in part ({'; '.join(what)}); adapter_config.json "
            "(target_modules) does not match adapter_model weights: restore the run's own files or retrain it"
        )


def _load_base(name_or_path: str, dtype: str, device: str = "cpu") -> tuple[Any, Any, str]:
    from fincocktail.models import load_model_and_tokenizer, resolve_model

    path = resolve_model(name_or_path)
    model, tokenizer = load_model_and_tokenizer(path, dtype=dtype, device=device)  # type: ignore[arg-type]
    return model, tokenizer, str(path)


def load_for_eval(
    name_or_path: str, adapter: str | Path | None = None, dtype: str = "float32", merge: bool = True, device: str = "cpu"
) -> LoadedModel:
    """The model in eval mode with its tokenizer; a LoRA adapter is merged for speed unless `merge=False`.

    A merged adapter is merged in float32 and only then cast to `dtype`: merging into bf16
    weights would round W + BA as a whole, and the small LoRA update loses most of its bits.
    `device` is a name `models.device.resolve_device` accepts (`auto`: the GPU when there is one);
    the adapter lands on the base model's device, so scoring and re-checks run there too.
    """
    from fincocktail.models.device import resolve_device

    dtype = long_spelling(dtype)
    if dtype not in PRECISIONS:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(PRECISIONS)} (or fp32, bf16, fp16)")
    where = str(resolve_device(device))
    checked = checked_bf16(dtype, where)
    dtype = "float32" if dtype == "auto" else dtype
    merge_first = adapter is not None and merge and dtype != "float32"
    model, tokenizer, path = _load_base(name_or_path, "float32" if merge_first else dtype, where)
    adapter_dir: Path | None = None
    if adapter is not None:
        adapter_dir = adapter_folder(adapter)
        model = apply_adapter(model, adapter_dir)
        if merge and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    if merge_first:
        model = cast_weights(model, getattr(torch, dtype))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    reference = None
    if checked:
        reference, model = model, cast_weights(copy.deepcopy(model), torch.bfloat16).eval()
    return LoadedModel(model, tokenizer, name_or_path, path, str(adapter_dir) if adapter_dir else None, reference, where)


def cast_for_eval(loaded: LoadedModel, dtype: str) -> LoadedModel:
    """An fp32 `LoadedModel` (adapter already merged in fp32) in the evaluation dtype `dtype`.

    Sweeps keep one fp32 base per worker and merge each run's adapter into a copy of it; this
    applies the same dtype rules as `load_for_eval` to that merged model.
    """
    dtype = long_spelling(dtype)
    if dtype not in PRECISIONS:
        raise ModelError(f"dtype {dtype!r}: expected one of {', '.join(PRECISIONS)} (or fp32, bf16, fp16)")
    if checked_bf16(dtype, loaded.device):
        bf16 = cast_weights(copy.deepcopy(loaded.model), torch.bfloat16).eval()
        return LoadedModel(bf16, loaded.tokenizer, loaded.name, loaded.path, loaded.adapter, loaded.model, loaded.device)
    if dtype in ("auto", "float32"):
        return loaded
    return LoadedModel(cast_weights(loaded.model, getattr(torch, dtype)).eval(), loaded.tokenizer, loaded.name, loaded.path,
                       loaded.adapter, device=loaded.device)


def to_device(loaded: LoadedModel, device: str) -> LoadedModel:
    """`loaded` with its model (and fp32 reference) moved to `device`, in place: pass a copy you own.

    Why: a sweep worker keeps its fp32 base in RAM and sends each run's merged copy to the GPU,
    so the GPU holds one model (plus its bf16 copy under `dtype: auto`), not the base as well.
    """
    loaded.model.to(device)
    if loaded.reference is not None:
        loaded.reference.to(device)
    return dataclasses.replace(loaded, device=device)


def own_copy(loaded: LoadedModel) -> LoadedModel:
    """A `LoadedModel` with its own copy of the weights (the tokenizer is shared)."""
    reference = copy.deepcopy(loaded.reference) if loaded.reference is not None else None
    return dataclasses.replace(loaded, model=copy.deepcopy(loaded.model), reference=reference)


def with_adapter(base: LoadedModel, adapter: str | Path, dtype: str) -> LoadedModel:
    """An fp32 base already in memory with `adapter` merged into a copy of it, in `dtype`.

    The base stays untouched, so a sweep worker loads each base model once and evaluates every
    run's adapter on it: copying weights in memory is much cheaper than reading and converting
    them again. The merge is in fp32, as in `load_for_eval`.
    """
    folder = adapter_folder(adapter)
    merged = apply_adapter(copy.deepcopy(base.model), folder).merge_and_unload()
    merged.eval()
    return cast_for_eval(LoadedModel(merged, base.tokenizer, base.name, base.path, str(folder), device=base.device), dtype)

