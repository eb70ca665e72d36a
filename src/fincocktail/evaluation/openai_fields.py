"""Validation of the request fields chat and text completions share (OpenAI's names and meanings).

Anything the server cannot honour exactly (sampling, n > 1) is refused with a 400 rather than
silently ignored: an evaluation through the server must be the greedy one it claims to be.
"""

from __future__ import annotations

from typing import Any


class BadRequest(Exception):
    """A client error; its message goes back in the body with `status` (400 unless said)."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param


def model_field(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    return model or None


def max_tokens_field(body: dict[str, Any], minimum: int = 0) -> int | None:
    """The requested token budget, None when absent (the server's default applies)."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        return None
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < minimum:
        raise BadRequest("'max_tokens' must be a positive integer" if minimum else "'max_tokens' must be a non-negative integer")
    return max_tokens


def check_cap(max_tokens: int | None, cap: int) -> None:
    """No one request may hold the server: a budget above the server's cap is refused, not trimmed."""
    if max_tokens is not None and max_tokens > cap:
        raise BadRequest(f"'max_tokens' is {max_tokens}; this server allows at most {cap} (fincocktail serve --max-tokens-cap)",
                         param="max_tokens")


def greedy_only(body: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature not in (None, 0, 0.0):
        raise BadRequest("only greedy decoding is served: 'temperature' must be 0 or absent")
    if body.get("n", 1) not in (1, None):
        raise BadRequest("'n' must be 1")
    if body.get("best_of", 1) not in (1, None):
        raise BadRequest("'best_of' must be 1")


def stop_field(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise BadRequest("'stop' must be a string or a list of strings")


def stream_fields(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage): server-sent events, and a last chunk with token usage."""
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    return stream, bool(options.get("include_usage")) and stream
