"""The models one server serves: a base and its LoRA adapters, one request at a time.

The base is loaded once and every adapter attached to it with peft under its own name (unmerged,
a few MB each); each request activates the one its `model` field names (`disable_adapter` for
the base itself), behind a lock, so switching adapters between requests is safe. Each adapter
is served in its training prompt style (`evaluation.adapters.recorded_style`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Sequence

from fincocktail.errors import ConfigError
from fincocktail.evaluation.adapters import AdapterSpec
from fincocktail.serving.openai_fields import BadRequest


class UnknownModel(BadRequest):
    """The request's `model` is not served here: a 404 `model_not_found`, as OpenAI answers."""

    def __init__(self, name: str, known: Sequence[str]):
        served = ", ".join(f"`{k}`" for k in known)
        super().__init__(f"The model `{name}` does not exist; this server serves {served} (GET /v1/models)",
                         status=404, code="model_not_found", param="model")
        self.name = name



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
        from fincocktail.models.forward import Scorer

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
