"""An OpenAI-compatible chat server for a base or fine-tuned model (`fincocktail serve`).

Standard library only (ThreadingHTTPServer): requests are parsed concurrently, and decoding is
serialised behind a lock since one model instance serves them all. Decoding is greedy and goes
through the very function `fincocktail eval` uses, so a client evaluating through this server
gets the answers a local evaluation in the chat style gets. Bad requests get a 400 with an
OpenAI-style JSON error, never a crash of the server.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fincocktail.evaluation.generate import generate_greedy
from fincocktail.prompts import PromptPair, encode_pair

DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = {"system", "user", "assistant"}


class BadRequest(Exception):
    """A client error; its message goes back in the 400 body."""


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    stop: tuple[str, ...]


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat-completions body; anything we cannot honour exactly is a BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}]: expected an object with role one of {sorted(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise BadRequest(f"messages[{i}].content: only text parts are supported")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string")
        clean.append({"role": m["role"], "content": content})
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_MAX_TOKENS))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    temperature = body.get("temperature")
    if temperature not in (None, 0, 0.0):
        raise BadRequest("only greedy decoding is served: 'temperature' must be 0 or absent")
    if body.get("stream"):
        raise BadRequest("'stream' is not supported")
    if body.get("n", 1) != 1:
        raise BadRequest("'n' must be 1")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise BadRequest("'stop' must be a string or a list of strings")
    return ChatRequest(clean, max_tokens, stops)


class ChatService:
    """The model behind the server: chat template, greedy decoding, one request at a time."""

    def __init__(self, loaded: Any, name: str):
        from fincocktail.evaluation.forward import Scorer

        self.loaded = loaded
        self.name = name
        self.scorer = Scorer(loaded.model)
        self._lock = threading.Lock()
        tok = loaded.tokenizer
        self.max_context = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
        if not getattr(tok, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; it cannot be served as a chat model")

    def complete(self, req: ChatRequest) -> dict[str, Any]:
        tok = self.loaded.tokenizer
        try:
            prompt = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises its own errors for conversations the template rejects
            raise BadRequest(f"the chat template rejected these messages: {exc}") from exc
        ids = encode_pair(tok, PromptPair(prompt=prompt, target=""), add_eos=False)[0]
        max_tokens = req.max_tokens
        if self.max_context:
            if len(ids) >= self.max_context:
                raise BadRequest(f"the prompt has {len(ids)} tokens; this model's context is {self.max_context}")
            max_tokens = min(max_tokens, self.max_context - len(ids))
        with self._lock:
            gen = generate_greedy(self.scorer, tok, [ids], max_tokens, req.stop, batch_size=1)[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text}, "finish_reason": gen.finish_reason}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": gen.n_tokens, "total_tokens": len(ids) + gen.n_tokens},
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "fincocktail"}]}


def make_handler(service: ChatService, quiet: bool = True) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fincocktail"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            if not quiet:
                super().log_message(fmt, *args)

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/v1/models", "/models"):
                self._send(200, service.models())
            elif path in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route GET {path}; try POST /v1/chat/completions or GET /v1/models", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0].rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self.close_connection = True
                return self._error(400, "a Content-Length between 0 and 16 MiB is required")
            raw = self.rfile.read(length) if length else b""
            if path not in ("/v1/chat/completions", "/chat/completions"):
                return self._error(404, f"no route POST {path}; try /v1/chat/completions", "not_found")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self._error(400, f"the request body is not valid JSON ({exc})")
            try:
                self._send(200, service.complete(parse_chat_request(body)))
            except BadRequest as exc:
                self._error(400, str(exc))
            except Exception as exc:  # keep serving; the client learns what failed
                self._error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    return Handler


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000, quiet: bool = True) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(service, quiet))
    server.daemon_threads = True
    return server
