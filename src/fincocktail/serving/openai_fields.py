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


MAX_TOP_LOGPROBS = 20

# The fields each endpoint honours; any other is refused (400), unless NEUTRAL says its value changes nothing.
COMMON_FIELDS = frozenset({"model", "max_tokens", "stop", "stream", "stream_options", "temperature", "n", "best_of", "seed", "user"})
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "echo", "logprobs"}
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_p": (1, 1.0),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "repetition_penalty": (1, 1.0),
    "logit_bias": ({},),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (False, True),
    "store": (False,),
    "metadata": ({},),
    "suffix": ("",),
}


def refuse_unsupported(body: dict[str, Any], supported: frozenset[str]) -> None:
    """A 400 naming the first field the server would otherwise silently ignore.

    Why: a client asking for JSON output, tools or sampling penalties and getting a plain
    greedy answer with a 200 cannot tell it was not served what it asked for. Absent (null)
    fields and values that change nothing (`top_p: 1`, `response_format: {"type": "text"}`) pass.
    """
    for key, value in body.items():
        if key in supported or value is None or (key in NEUTRAL and value in NEUTRAL[key]):
            continue
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise BadRequest(f"'{key}' is not supported by this server (got {shown}); leave it out", param=key, code="unsupported_parameter")


def chat_logprobs_fields(body: dict[str, Any]) -> tuple[bool, int]:
    """(logprobs, top_logprobs) of a chat request, as OpenAI defines them: top_logprobs 0-20, only with logprobs."""
    logprobs = body.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise BadRequest("'logprobs' must be true or false", param="logprobs")
    top = body.get("top_logprobs")
    if top is None:
        return logprobs, 0
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs")
    if not logprobs:
        raise BadRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return logprobs, top
