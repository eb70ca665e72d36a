"""Several LoRA adapters over one base model, for `fincocktail serve --adapter NAME=RUN_DIR ...`.

Comparing cocktails means serving many adapters of one base; a merged copy of the base per
adapter would multiply the memory by their number. Here the base is loaded once, every adapter
is attached to it with peft under its own name (unmerged, a few MB each), and each request
activates the one its `model` field names (`disable_adapter` for the base itself). Batches
(of requests for one adapter) and single requests are served one at a time behind a lock, so
switching adapters between them is safe. Each adapter's training prompt style is read from its
run card (`recorded_style`), so the server prompts it as it was trained.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from fincocktail.errors import ConfigError
from fincocktail.evaluation.openai_fields import BadRequest


class UnknownModel(BadRequest):
    """The request's `model` is not served here: a 404 `model_not_found`, as OpenAI answers."""

    def __init__(self, name: str, known: Sequence[str]):
        served = ", ".join(f"`{k}`" for k in known)
        super().__init__(f"The model `{name}` does not exist; this server serves {served} (GET /v1/models)",
                         status=404, code="model_not_found", param="model")
        self.name = name


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


class ModelPool:
    """The base model plus its named adapters; `use(name)` yields the model for one request."""

    def __init__(self, loaded: Any, base_name: str, adapters: Sequence[AdapterSpec] = (), default: str | None = None):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.base_name = base_name
        self.adapters = {a.name: a for a in adapters}
        if base_name in self.adapters:
            raise ConfigError(f"--adapter {base_name}=...: that name is the base model's; choose another")
        from fincocktail.evaluation.loading import apply_adapter

        model = loaded.model
        for a in adapters:
            model = apply_adapter(model, a.path, a.name)
        self.model = model.eval()
        from fincocktail.evaluation.forward import Scorer

        self.scorer = Scorer(self.model)
        self.default = default or (adapters[0].name if adapters else base_name)
        self.max_context = getattr(getattr(self.scorer.model, "config", None), "max_position_embeddings", None)
        self._lock = threading.Lock()

    def style(self, name: str) -> str:
        """The prompt style `name` is served in: its training style, else the chat template."""
        spec = self.adapters.get(name)
        return (spec.style if spec is not None else None) or "chat"

    def names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def resolve(self, name: str | None) -> str:
        if name is None or name == "":
            return self.default
        if name not in self.names():
            raise UnknownModel(name, self.names())
        return name

    @contextlib.contextmanager
    def use(self, name: str, timeout_s: float | None = None) -> Iterator[Any]:
        """The Scorer with `name`'s weights active, held exclusively for the request.

        A request that waits longer than `timeout_s` for earlier ones gets a 503 to retry.
        """
        if not self._lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
            raise BadRequest(f"the model is busy (waited {timeout_s:g} s for earlier requests); retry later",
                             status=503, kind="server_error", code="busy")
        try:
            if name == self.base_name and self.adapters:
                with self.model.disable_adapter():
                    yield self.scorer
            else:
                if self.adapters:
                    self.model.set_adapter(name)
                yield self.scorer
        finally:
            self._lock.release()

    def models_json(self) -> dict[str, Any]:
        data = [{"id": self.base_name, "object": "model", "created": 0, "owned_by": "fincocktail"}]
        data += [{"id": n, "object": "model", "created": 0, "owned_by": "fincocktail", "root": self.base_name,
                  "parent": self.base_name, "adapter": str(a.path), "prompt_style": self.style(n)} for n, a in self.adapters.items()]
        return {"object": "list", "data": data}
