"""An OpenAI-compatible chat server for a base or fine-tuned model (`fincocktail serve`).

Standard library only (ThreadingHTTPServer): requests are parsed concurrently, and decoding is
serialised behind a lock since one model instance serves them all. Decoding is greedy and goes
through the very function `fincocktail eval` uses, so a client evaluating through this server
gets the answers a local evaluation in the chat style gets. Bad requests get a 400 with an
OpenAI-style JSON error, never a crash of the server.

No one request may hold the server: `max_tokens` is capped server-side (`max_tokens_cap`),
decoding stops as soon as the client has gone, a request that waits for the model longer than
`queue_timeout_s` gets a 503 to retry, and a client that sends its request slower than
`client_timeout_s` is disconnected. Every error, including the ones http.server itself sends
(unknown methods, malformed request lines), is an OpenAI-style JSON body.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from fincocktail.evaluation.generate import generate_greedy
from fincocktail.prompts import PromptPair, encode_pair

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_TOKENS_CAP = 1024
DEFAULT_QUEUE_TIMEOUT_S = 120.0
DEFAULT_CLIENT_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = {"system", "user", "assistant"}


class BadRequest(Exception):
    """A client error; its message goes back in the body with `status` (400 unless said)."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param


class ClientGone(Exception):
    """The client closed its connection while its answer was being decoded."""


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int | None  # None: the server's default
    stop: tuple[str, ...]
    model: str | None = None


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
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
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
    return ChatRequest(clean, max_tokens, stops, model)


class ChatService:
    """The model behind the server: chat template, greedy decoding, one request at a time."""

    def __init__(self, loaded: Any, name: str, max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S):
        from fincocktail.evaluation.forward import Scorer

        self.loaded = loaded
        self.name = name
        self.max_tokens_cap = max_tokens_cap
        self.queue_timeout_s = queue_timeout_s
        self.scorer = Scorer(loaded.model)
        self._lock = threading.Lock()
        tok = loaded.tokenizer
        self.max_context = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
        if not getattr(tok, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; it cannot be served as a chat model")

    def complete(self, req: ChatRequest, client_gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The chat completion for `req`; decoding stops early once `client_gone()` is true."""
        if req.model is not None and req.model != self.name:
            raise BadRequest(f"The model `{req.model}` does not exist; this server serves `{self.name}` (GET /v1/models)",
                             status=404, code="model_not_found", param="model")
        if req.max_tokens is not None and req.max_tokens > self.max_tokens_cap:
            raise BadRequest(f"'max_tokens' is {req.max_tokens}; this server allows at most {self.max_tokens_cap} "
                             "(fincocktail serve --max-tokens-cap)", param="max_tokens")
        tok = self.loaded.tokenizer
        try:
            prompt = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises its own errors for conversations the template rejects
            raise BadRequest(f"the chat template rejected these messages: {exc}") from exc
        ids = encode_pair(tok, PromptPair(prompt=prompt, target=""), add_eos=False)[0]
        max_tokens = req.max_tokens or min(DEFAULT_MAX_TOKENS, self.max_tokens_cap)
        if self.max_context:
            if len(ids) >= self.max_context:
                raise BadRequest(f"the prompt has {len(ids)} tokens; this model's context is {self.max_context}")
            max_tokens = min(max_tokens, self.max_context - len(ids))
        if not self._lock.acquire(timeout=self.queue_timeout_s):
            raise BadRequest(f"the model is busy (waited {self.queue_timeout_s:g} s for earlier requests); retry later",
                             status=503, kind="server_error", code="busy")
        try:
            gen = generate_greedy(self.scorer, tok, [ids], max_tokens, req.stop, batch_size=1, should_stop=client_gone)[0]
        finally:
            self._lock.release()
        if gen.finish_reason == "cancelled":
            raise ClientGone
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


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end of `sock` has closed it (EOF or reset), without consuming any data."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def make_handler(service: ChatService, quiet: bool = True, client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fincocktail"
        protocol_version = "HTTP/1.1"
        timeout = client_timeout_s  # socket timeout: a client sending (or reading) slower than this is dropped

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

        def _error(self, status: int, message: str, kind: str = "invalid_request_error", code: str | int | None = None,
                   param: str | None = None) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": code if code is not None else status}})

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own errors (bad request line, unknown method) as JSON, not HTML."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # an unparsable request line: still answer with a status line
                self.request_version = "HTTP/1.1"
            try:
                self._error(code, message or explain or "error", "invalid_request_error" if code < 500 else "server_error")
            except OSError:
                pass

        def _not_allowed(self) -> None:
            self.close_connection = True
            self._error(405, f"method {self.command} is not allowed; use GET /v1/models or POST /v1/chat/completions",
                        code="method_not_allowed")

        do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

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
            try:
                raw = self.rfile.read(length) if length else b""
            except (TimeoutError, OSError):  # a slow or vanished client: drop it, keep serving others
                self.close_connection = True
                return
            if len(raw) < length:
                self.close_connection = True
                return
            if path not in ("/v1/chat/completions", "/chat/completions"):
                return self._error(404, f"no route POST {path}; try /v1/chat/completions", "not_found")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self._error(400, f"the request body is not valid JSON ({exc})")
            try:
                self._send(200, service.complete(parse_chat_request(body), client_gone=lambda: peer_closed(self.connection)))
            except ClientGone:
                self.close_connection = True
            except BadRequest as exc:
                self._error(exc.status, str(exc), exc.kind, exc.code, exc.param)
            except Exception as exc:  # keep serving; the client learns what failed
                self._error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-answer is routine: one line, not a traceback."""
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000, quiet: bool = True,
                client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S) -> ThreadingHTTPServer:
    return _Server((host, port), make_handler(service, quiet, client_timeout_s))
