"""Naming and reading LoRA adapters for `fincocktail serve --adapter NAME=RUN_DIR ...` and `eval --adapter`.

An adapter is named on the command line (`NAME=RUN_DIR`, or after its run folder) and served or
evaluated in the prompt style it was trained in, read from its run card (`recorded_style`). The
server's pool of adapters over one base is `serving.pool.ModelPool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fincocktail.errors import ConfigError


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path  # the peft adapter folder
    style: str | None = None  # the prompt style it was trained with (its run card's), None when unrecorded


RUN_CARD = "run_card.json"  # what `fincocktail train` writes beside `adapter/` (training.run_card)


def recorded_style(adapter_dir: Path) -> str | None:
    """The prompt style the adapter was trained with, from the run card in its folder or the run folder above.

    Why: an adapter answers as it was evaluated only when prompted in the style it was trained
    with; the server applies that style, so it reads it where training recorded it.
    """
    import json

    for folder in (adapter_dir, adapter_dir.parent):
        card = folder / RUN_CARD
        if not card.is_file():
            continue
        try:
            config = json.loads(card.read_text(encoding="utf-8")).get("config") or {}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"--adapter {adapter_dir}: cannot read {card} ({exc})") from exc
        style = config.get("prompt_style") if isinstance(config, dict) else None
        if style is not None and style not in ("instruction", "chat"):
            raise ConfigError(f"--adapter {adapter_dir}: {card} records prompt_style {style!r}; expected instruction or chat")
        return style
    return None


def adapter_name_for(run_dir: Path) -> str:
    """The run folder's name (`runs/train/fpb-lora/adapter` -> `fpb-lora`)."""
    p = Path(run_dir).expanduser().resolve()
    return p.parent.name if p.name == "adapter" else p.name


def split_spec(spec: str) -> tuple[str, str]:
    """("NAME", "RUN_DIR") from `NAME=RUN_DIR`; ("", spec) for a plain path (which may itself contain '=')."""
    name, sep, path = spec.partition("=")
    if not sep or "/" in name or not name.strip():
        return "", spec
    return name.strip(), path


def parse_adapter_specs(specs: Sequence[str], single_name: str | None = None) -> list[AdapterSpec]:
    """`NAME=RUN_DIR` or `RUN_DIR` (named after its folder, or `single_name` when it is the only one)."""
    from fincocktail.evaluation.loading import adapter_folder

    out: list[AdapterSpec] = []
    for spec in specs:
        name, path = split_spec(spec)
        if not name:
            name = single_name if (single_name and len(specs) == 1) else adapter_name_for(Path(path))
        folder = adapter_folder(path)
        out.append(AdapterSpec(name.strip(), folder, recorded_style(folder)))
    names = [a.name for a in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"--adapter: the name {dup!r} is given twice; name them --adapter NAME=RUN_DIR")
    return out
