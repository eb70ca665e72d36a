"""An OpenAI-compatible server for a base model and its fine-tuned adapters (`fincocktail serve`).

Standard library only (ThreadingHTTPServer): requests are parsed concurrently; chat requests
waiting for the model are decoded together in batches by one model thread (`batching`), and
text completions one at a time, all behind the pool's lock since one model instance serves them. Decoding is greedy and goes
through the very function `fincocktail eval` uses, so a client evaluating through this server
gets the answers a local evaluation in the chat style gets. Bad requests get a 400 with an
OpenAI-style JSON error, never a crash of the server; a `model` the server does not hold is a
404 `model_not_found`.

Routes: POST /v1/chat/completions (also streamed, `stream: true`, see `streaming`), POST
/v1/completions (echo and logprobs, see `completions`), GET /v1/models (the base and every
adapter, see `adapters`).

No one request may hold the server: `max_tokens` is capped server-side (`max_tokens_cap`),
decoding stops as soon as the client has gone, a request that waits for the model longer than
`queue_timeout_s` gets a 503 to retry, so does one arriving while `max_waiting` others already
wait for it, and a client that has not sent its whole request (line, headers and body) within
`client_timeout_s` is disconnected, however it trickles its bytes in. Every error, including the ones http.server itself sends
(unknown methods, malformed request lines), is an OpenAI-style JSON body.
"""

from __future__ import annotations

import io
import json
import math
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from fincocktail.serving.pool import ModelPool
from fincocktail.serving.batching import DEFAULT_BATCH_WINDOW_S, DEFAULT_MAX_BATCH, Batcher, Job, stream_tokens, wait_result
from fincocktail.serving.openai_fields import (
    CHAT_FIELDS, BadRequest, chat_logprobs_fields, check_cap, greedy_only, max_tokens_field, model_field,
    refuse_unsupported, stop_field, stream_fields,
)
from fincocktail.tasks.prompts import PromptPair, encode_pair, render_text

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_TOKENS_CAP = 1024
DEFAULT_QUEUE_TIMEOUT_S = 120.0
DEFAULT_CLIENT_TIMEOUT_S = 30.0
DEFAULT_MAX_WAITING = 64  # requests parsed and waiting for the model; more get an immediate 503
LISTEN_BACKLOG = 128  # connections the kernel holds before `accept`; http.server's 5 reset bursts of 20
MAX_BODY_BYTES = 16 * 1024 * 1024
ROLES = {"system", "user", "assistant"}


__all__ = ["BadRequest", "ChatRequest", "ChatService", "ClientGone", "attach", "bind_server", "make_handler", "make_server", "parse_chat_request", "peer_closed"]


class ClientGone(Exception):
    """The client closed its connection while its answer was being decoded."""


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int | None  # None: the server's default
    stop: tuple[str, ...]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


def _messages(messages: Any) -> list[dict[str, str]]:
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
    return clean


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat-completions body; anything we cannot honour exactly is a BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    refuse_unsupported(body, CHAT_FIELDS)
    clean = _messages(body.get("messages"))
    max_tokens = max_tokens_field(body, minimum=1)
    greedy_only(body)
    stream, include_usage = stream_fields(body)
    logprobs, top = chat_logprobs_fields(body)
    if stream and logprobs:
        raise BadRequest("'logprobs' is not supported with 'stream'; send the request without 'stream'", param="logprobs")
    return ChatRequest(clean, max_tokens, stop_field(body), model_field(body), stream, include_usage, logprobs, top)


def instruction_prompt(messages: list[dict[str, str]], name: str) -> str:
    """The instruction-style prompt (prompts.INSTRUCTION_TEMPLATE) for a chat request to an adapter trained in it.

    `fincocktail eval --style chat` sends one user message, the instruction, a blank line, the input; the same
    message is split back at its first blank line, so the adapter sees the prompt it was trained
    and evaluated on. Anything else cannot be put in that template: a one-line 400 naming the style.
    """
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise BadRequest(f"`{name}` was trained in the instruction prompt style (Instruction/Input/Answer), which takes exactly "
                         "one user message (INSTRUCTION, a blank line, INPUT); send one, or use /v1/completions with the prompt text",
                         param="messages", code="prompt_style")
    instruction, _, input_text = messages[0]["content"].partition("\n\n")
    return render_text(instruction, input_text, "", style="instruction").prompt


class ChatService:
    """The models behind the server: prompt style, batched greedy decoding (`batching`), log-probabilities.

    `models` is a `ModelPool` (a base and its adapters), or a loaded model served alone as `name`.
    Chat requests waiting for the model are decoded together, up to `max_batch` at a time.
    """

    def __init__(self, models: Any, name: str | None = None, max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S, max_batch: int = DEFAULT_MAX_BATCH,
                 batch_window_s: float = DEFAULT_BATCH_WINDOW_S):
        self.pool = models if isinstance(models, ModelPool) else ModelPool(models, name or "model")
        self.loaded = self.pool.loaded
        self.name = self.pool.default
        self.max_tokens_cap = max_tokens_cap
        self.queue_timeout_s = queue_timeout_s
        self.max_context = self.pool.max_context
        self.batcher = Batcher(self.pool, max_batch, batch_window_s)
        if not getattr(self.pool.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; it cannot be served as a chat model")

    @property
    def _lock(self) -> Any:
        """The lock every decoding holds (the pool's)."""
        return self.pool._lock

    def check(self, model: str | None, max_tokens: int | None) -> str:
        """The served name `model` resolves to; 404 for an unknown model, 400 above the token cap."""
        name = self.pool.resolve(model)
        check_cap(max_tokens, self.max_tokens_cap)
        return name

    def _chat_prompt(self, req: ChatRequest, name: str) -> tuple[list[int], int]:
        """Prompt ids in the style `name` was trained with, and the token budget that fits the context."""
        tok = self.pool.tokenizer
        if self.pool.style(name) == "instruction":
            prompt = instruction_prompt(req.messages, name)
        else:
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
        return ids, max_tokens

    def _submit(self, req: ChatRequest, client_gone: Callable[[], bool] | None) -> tuple[str, Job]:
        name = self.check(req.model, req.max_tokens)
        ids, max_tokens = self._chat_prompt(req, name)
        return name, self.batcher.submit(Job(name, ids, max_tokens, req.stop, client_gone), self.queue_timeout_s)

    def complete(self, req: ChatRequest, client_gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The chat completion for `req`; decoding stops early once `client_gone()` is true."""
        name, job = self._submit(req, client_gone)
        gen = wait_result(job)
        if gen.finish_reason == "cancelled":
            raise ClientGone
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": gen.text}, "finish_reason": gen.finish_reason}
        if req.logprobs:
            choice["logprobs"] = self._logprobs(name, job, req.top_logprobs)
        n_prompt = len(job.ids)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": gen.n_tokens, "total_tokens": n_prompt + gen.n_tokens},
        }

    def _logprobs(self, name: str, job: Job, top: int) -> dict[str, Any]:
        """Chat `logprobs.content` for the generated tokens (a final EOS left out), from one forward pass."""
        from fincocktail.serving.completions import chat_logprob_entries, sequence_logprobs
        from fincocktail.evaluation.generate import eos_ids

        produced = list(job.tokens)
        if produced and produced[-1] in eos_ids(self.pool.tokenizer, self.pool.model):
            produced = produced[:-1]
        if not produced:
            return {"content": []}
        with self.pool.use(name, self.queue_timeout_s) as scorer:
            lp = sequence_logprobs(scorer, job.ids + produced)
        return {"content": chat_logprob_entries(self.pool.tokenizer, lp[len(job.ids) - 1 : -1], produced, top)}

    def stream_chat(self, req: ChatRequest, emit: Callable[[dict[str, Any]], None], client_gone: Callable[[], bool] | None = None) -> None:
        """The chat completion as `chat.completion.chunk` events: role, content deltas, finish, usage."""
        from fincocktail.serving.streaming import DeltaText

        name, job = self._submit(req, client_gone)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk", "created": int(time.time()), "model": name}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        delta = DeltaText(self.pool.tokenizer, req.stop)
        try:
            emit(chunk({"role": "assistant", "content": ""}))
            for tok in stream_tokens(job):
                piece = delta.push(tok)
                if piece:
                    emit(chunk({"content": piece}))
        except OSError:  # the client has gone: its row of the batch stops, the others decode on
            job.cancelled = True
            raise
        gen = job.result
        assert gen is not None
        if gen.finish_reason == "cancelled":
            raise ClientGone
        rest = delta.finish(gen.text)
        if rest:
            emit(chunk({"content": rest}))
        emit(chunk({}, gen.finish_reason))
        if req.include_usage:
            emit({**head, "choices": [], "usage": {"prompt_tokens": len(job.ids), "completion_tokens": gen.n_tokens,
                                                   "total_tokens": len(job.ids) + gen.n_tokens}})

    def completion(self, req: Any, emit: Callable[[dict[str, Any]], None] | None = None,
                   client_gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """A text completion (`completions.CompletionRequest`); streamed as chunks through `emit` when given."""
        from fincocktail.serving.completions import batched_completion, run_completion

        name = self.check(req.model, req.max_tokens)
        if emit is None and req.logprobs is None and req.max_tokens > 0:  # plain generation: batched with others
            out = batched_completion(self.batcher, self.pool.tokenizer, self.max_context, name, req, client_gone, self.queue_timeout_s)
        else:
            with self.pool.use(name, self.queue_timeout_s) as scorer:
                out = run_completion(scorer, self.pool.tokenizer, self.max_context, name, req, emit, client_gone)
        if any(c.get("finish_reason") == "cancelled" for c in out["choices"]):
            raise ClientGone
        return out

    def models(self) -> dict[str, Any]:
        return self.pool.models_json()


def peer_closed(sock: socket.socket) -> bool:
    """Whether the other end of `sock` has closed it (EOF or reset), without consuming any data."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes until `deadline` (time.monotonic()), however slowly they trickle in.

    Why: a socket timeout bounds the wait for each byte, so a client sending one byte every few
    seconds held a handler thread for minutes. Each read here may only wait for what is left of
    the request's total deadline; the socket's own timeout is restored after it, so writing the
    answer is not cut short.
    """

    def __init__(self, sock: socket.socket, idle_timeout_s: float):
        super().__init__()
        self.sock = sock
        self.idle_timeout_s = idle_timeout_s
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client did not send its request in time")
        self.sock.settimeout(min(left, self.idle_timeout_s))
        try:
            return self.sock.recv_into(buf)
        finally:
            self.sock.settimeout(self.idle_timeout_s)


class _Handler(BaseHTTPRequestHandler):
    """The OpenAI-compatible routes over one `ChatService`; `make_handler` binds the service and the limits
    (http.server builds one handler per connection from a class, so they travel as class attributes)."""

    server_version = "fincocktail"
    protocol_version = "HTTP/1.1"
    timeout: float = DEFAULT_CLIENT_TIMEOUT_S  # socket timeout: a client sending (or reading) slower than this is dropped
    service: ChatService
    quiet: bool = True
    waiting: threading.BoundedSemaphore
    max_waiting: int = DEFAULT_MAX_WAITING

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """One request, whose line, headers and body must all arrive within the handler's `timeout`."""
        self._reader.deadline = time.monotonic() + self.timeout
        super().handle_one_request()

    def log_message(self, fmt: str, *args: Any) -> None:
        if not self.quiet:
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
        self._error(405, f"method {self.command} is not allowed; use GET /v1/models, POST /v1/chat/completions or POST /v1/completions",
                    code="method_not_allowed")

    def _streamed(self, run: Callable[[Callable[[dict[str, Any]], None]], None]) -> None:
        """Run `run(emit)` as a server-sent event stream; an error after the first event becomes the last event."""
        from fincocktail.serving.streaming import EventStream

        events = EventStream(self)
        try:
            run(events.send)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left: decoding stopped
            return
        except Exception as exc:
            if not events.started:
                raise  # nothing sent yet: answered as a plain JSON error with its status
            bad = isinstance(exc, BadRequest)
            events.send({"error": {"message": str(exc) if bad else f"internal error: {type(exc).__name__}: {exc}",
                                   "type": exc.kind if bad else "server_error"}})
        events.close()

    def _post_completion(self, path: str, body: Any) -> None:
        """Chat or text completion, plain or streamed; the model and the budget are checked before any byte is sent."""
        gone = lambda: peer_closed(self.connection)  # noqa: E731
        if path.endswith("/chat/completions"):
            req = parse_chat_request(body)
            self.service.check(req.model, req.max_tokens)
            if req.stream:
                return self._streamed(lambda emit: self.service.stream_chat(req, emit, gone))
            return self._send(200, self.service.complete(req, client_gone=gone))
        from fincocktail.serving.completions import parse_completion_request

        creq = parse_completion_request(body)
        self.service.check(creq.model, creq.max_tokens)
        if creq.stream:
            return self._streamed(lambda emit: self.service.completion(creq, emit, gone))
        return self._send(200, self.service.completion(creq, client_gone=gone))

    do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, self.service.models())
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no route GET {path}; try POST /v1/chat/completions, POST /v1/completions or GET /v1/models", "not_found")

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
        if path not in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"):
            return self._error(404, f"no route POST {path}; try /v1/chat/completions or /v1/completions", "not_found")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(400, f"the request body is not valid JSON ({exc})")
        except RecursionError:  # e.g. 200,000 nested '[': the parser's stack, not the server, gives out
            return self._error(400, "the request body nests JSON too deeply")
        if not self.waiting.acquire(blocking=False):
            return self._error(503, f"the server's queue is full ({self.max_waiting} requests wait for the model); retry later",
                               "server_error", "busy")
        try:
            self._post_completion(path, body)
        except ClientGone:
            self.close_connection = True
        except BadRequest as exc:
            self._error(exc.status, str(exc), exc.kind, exc.code, exc.param)
        except Exception as exc:  # keep serving; the client learns what failed
            self._error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
        finally:
            self.waiting.release()


def make_handler(service: ChatService, quiet: bool = True, client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
                 max_waiting: int = DEFAULT_MAX_WAITING) -> type[BaseHTTPRequestHandler]:
    """A handler class serving `service`, dropping clients slower than `client_timeout_s` and
    answering 503 once `max_waiting` requests wait for the model."""
    attrs = {"service": service, "quiet": quiet, "timeout": client_timeout_s, "max_waiting": max_waiting,
             "waiting": threading.BoundedSemaphore(max_waiting)}
    return type("Handler", (_Handler,), attrs)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished mid-answer is routine: one line, not a traceback."""
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


def bind_server(host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A listening socket on host:port, not serving yet (`attach` gives it its service).

    Why: `fincocktail serve` binds before it loads the model, so a port already taken is a
    one-line error at once instead of after the load, and the port stays its own meanwhile.
    """
    return _Server((host, port), _Handler)


def attach(server: ThreadingHTTPServer, service: ChatService, quiet: bool = True, client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S,
           max_waiting: int = DEFAULT_MAX_WAITING) -> ThreadingHTTPServer:
    server.RequestHandlerClass = make_handler(service, quiet, client_timeout_s, max_waiting)
    return server


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000, quiet: bool = True,
                client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S, max_waiting: int = DEFAULT_MAX_WAITING) -> ThreadingHTTPServer:
    return attach(bind_server(host, port), service, quiet, client_timeout_s, max_waiting)
