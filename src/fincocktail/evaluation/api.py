"""Chat models behind an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, `fincocktail serve`).

The key comes from `OPENAI_API_KEY` and goes into the Authorization header only: never into
the cache key, the run card or an error message. Every successful response is cached in a
sqlite file under FINCOCKTAIL_HOME, keyed by a hash of endpoint, model, messages and decoding
parameters, so rerunning an evaluation (a new metric, a crashed run) costs no second request.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fincocktail.plumbing import paths
from fincocktail.errors import ConfigError, ModelError
from fincocktail.plumbing.redact import MASK, MIN_SECRET_LEN, redact, redact_url

API_PREFIX = "openai:"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
DEFAULT_TIMEOUT_S = 60.0  # per request; read when a client is made, so tests (and callers) can shorten it


def is_api_model(name: str) -> bool:
    return name.startswith(API_PREFIX)


def api_model_name(name: str) -> str:
    model = name[len(API_PREFIX) :]
    if not model:
        raise ConfigError(f"--model {name!r}: expected openai:MODEL, e.g. openai:gpt-4o")
    return model


class ResponseCache:
    """A small sqlite key-value store; safe to share between the client's worker threads."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:
            # Only a cache: a damaged file is set aside (kept for inspection) and a fresh one
            # started, which costs requests, never results.
            aside = path.with_name(path.name + f".damaged-{int(time.time())}")
            os.replace(path, aside)
            import sys

            print(f"warning: {path} was damaged; moved it to {aside.name} and started an empty cache", file=sys.stderr)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
            db.execute("SELECT COUNT(*) FROM responses").fetchone()
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, body) VALUES (?, ?)", (key, json.dumps(body)))
            self._db.commit()

    def close(self) -> None:
        self._db.close()


def default_cache_path() -> Path:
    return paths.home() / "api_cache.sqlite"


class RequestRefused(ModelError):
    """The endpoint refused the request with a status retrying cannot change (kept, so a caller can
    tell a refused option, 400 / 422, from other refusals)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached: bool
    first_token_logprobs: dict[str, float] | None = None  # the answer's first token: its top alternatives' log-probs


@dataclass
class ChatClient:
    """Minimal chat-completions client: bounded retries with exponential backoff, and a cache."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = field(default_factory=lambda: DEFAULT_TIMEOUT_S)
    timeout_retries: int = 1
    deadline_s: float = 300.0
    cache_path: Path | None = None
    sleep: Callable[[float], None] = time.sleep
    requests_sent: int = field(default=0, init=False)
    hung: str | None = field(default=None, init=False)  # why the endpoint was given up on, for the whole run
    no_logprobs: bool = field(default=False, init=False)  # the endpoint refused `logprobs`: not asked again

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)
        self.shown_url = redact_url(self.base_url)  # what messages and run cards say
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                "OPENAI_API_KEY is not set: export it to use an openai:MODEL (for a local server that "
                "ignores keys, any value works, e.g. OPENAI_API_KEY=none)"
            )
        import httpx

        timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
        self._key = key  # only to scrub it out of replies (`_scrub`), never stored
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"})
        self._cache = ResponseCache(self.cache_path or default_cache_path())
        self._count_lock = threading.Lock()
        self._timeouts_in_a_row = 0  # over all threads: a hanging endpoint hangs for every example

    def cache_key(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        blob = json.dumps(
            {"base_url": self.base_url, "model": self.model, "messages": messages, "params": params},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: list[str] | None = None,
             top_logprobs: int | None = None) -> ChatResult:
        """One greedy chat completion; with `top_logprobs`, the answer's first-token alternatives too
        (OpenAI's `logprobs` / `top_logprobs`), which the likelihood metric of choice tasks reads."""
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}
        if stop:
            params["stop"] = list(stop)[:4]  # the OpenAI API accepts at most four
        if top_logprobs and not self.no_logprobs:
            params.update(logprobs=True, top_logprobs=top_logprobs)
            try:
                return self._chat(messages, params)
            except RequestRefused as exc:
                if exc.status not in (400, 422):
                    raise
                self.no_logprobs = True  # an endpoint without log-probs: the run goes on without the likelihood
                for key in ("logprobs", "top_logprobs"):
                    params.pop(key)
        return self._chat(messages, params)

    def _chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> ChatResult:
        key = self.cache_key(messages, params)
        hit = self._cache.get(key)
        if hit is not None:
            return _result(self._scrub(hit), cached=True)  # scrubbed again: a cache written before the scrub
        body = self._scrub(self._post({"model": self.model, "messages": messages, **params}))
        self._cache.put(key, body)
        return _result(body, cached=False)

    def _scrub(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` without the API key, wherever the endpoint put it (content, extra fields, keys).

        Why: some endpoints (proxies, echo servers, debugging builds) copy the request's headers
        into their 200 reply, and the reply is what the cache, the predictions and the run card
        store. The key the client used is masked (unless it is a short placeholder such as `none`,
        which answers legitimately contain); `redact` then removes any other secret-looking text.
        """
        key = self._key if len(self._key) >= MIN_SECRET_LEN else ""

        def clean(obj: Any) -> Any:
            if isinstance(obj, str):
                return redact(obj.replace(key, MASK) if key else obj)
            if isinstance(obj, dict):
                return {clean(k): clean(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        return clean(body)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with bounded retries: transient statuses and connection drops are retried with
        backoff, a timeout only `timeout_retries` times, and never past `deadline_s`.

        Why the timeouts are counted for the whole client (the run), not per request: an endpoint
        that accepted and never answers would otherwise cost every example (and every worker)
        its own timeouts, minutes per example. After `timeout_retries + 1` timeouts in a row,
        with no answer between them, the client is `hung` and every further request fails at
        once with the same message: the run ends after two timeouts, as docs/faults.md says.
        Each attempt also waits no longer than what is left of the request's `deadline_s`.
        Every message carries the redacted URL and a redacted error body.
        """
        url = f"{self.base_url}/chat/completions"
        shown = f"{self.shown_url}/chat/completions"
        last = ""
        started = time.monotonic()
        waited = 0.0  # what we asked `sleep` for: the budget holds with an injected sleep too
        for attempt in range(self.max_retries + 1):
            if self.hung:
                raise ModelError(self.hung)
            with self._count_lock:
                self.requests_sent += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            left = self.deadline_s - max(time.monotonic() - started, waited)
            outcome = self._attempt(url, shown, payload, attempt, left)
            if isinstance(outcome, dict):
                return outcome
            last, retry_after = outcome
            if retry_after is not None:
                delay = min(self.max_backoff_s, retry_after)
            if attempt < self.max_retries:
                if max(time.monotonic() - started, waited) + delay > self.deadline_s:
                    raise ModelError(f"{last} (gave up after {attempt + 1} attempts, {self.deadline_s:g} s budget)")
                self.sleep(delay)
                waited += delay
        raise ModelError(f"{last} (gave up after {self.max_retries + 1} attempts)")

    def _attempt(self, url: str, shown: str, payload: dict[str, Any], attempt: int,
                 left_s: float) -> dict[str, Any] | tuple[str, float | None]:
        """One POST: the reply's body, or (why it failed, the wait before retrying if not the
        backoff's) when it may be retried; a ModelError when retrying cannot help."""
        import httpx

        wait = max(0.001, min(self.timeout_s, left_s))
        try:
            resp = self._http.post(url, json=payload, timeout=httpx.Timeout(wait, connect=min(10.0, wait)))
        except httpx.TimeoutException as exc:
            last = f"{shown} did not answer within {wait:g} s ({type(exc).__name__})"
            if isinstance(exc, httpx.ConnectTimeout) and attempt >= 1:
                raise ModelError(f"{last}; is --base-url right and the server running?") from None
            with self._count_lock:
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row > self.timeout_retries:
                    self.hung = self.hung or f"{last}, {self._timeouts_in_a_row} time(s); the endpoint is hanging or overloaded"
            if self.hung:
                raise ModelError(self.hung) from None
            return last, 0.0  # retried at once: the timeout itself was the wait
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise ModelError(f"cannot send to {shown}: {redact(str(exc))}; check --base-url") from None
        except httpx.TransportError as exc:
            last = f"cannot reach {shown} ({type(exc).__name__}: {redact(str(exc))})"
            if isinstance(exc, httpx.ConnectError) and attempt >= 1:
                raise ModelError(f"{last}; is --base-url right and the server running?") from None
            return last, None
        with self._count_lock:
            self._timeouts_in_a_row = 0  # it answers: earlier timeouts were a slow moment, not a hang
        if resp.status_code == 200:
            try:
                body = resp.json()
                body["choices"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise ModelError(f"{shown} answered 200 with no chat completion in the body") from None
            return body
        detail = _error_detail(resp)
        if resp.status_code in (401, 403):
            raise ModelError(f"{shown} refused the API key ({resp.status_code}: {detail}); check OPENAI_API_KEY")
        if resp.status_code not in RETRY_STATUS:
            raise RequestRefused(f"{shown} answered {resp.status_code}: {detail}", resp.status_code)
        return f"{shown} answered {resp.status_code}: {detail}", _retry_after(resp)

    def close(self) -> None:
        self._http.close()
        self._cache.close()


def _result(body: dict[str, Any], cached: bool) -> ChatResult:
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    return ChatResult(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        cached=cached,
        first_token_logprobs=_first_token_logprobs(choice),
    )


def _first_token_logprobs(choice: dict[str, Any]) -> dict[str, float] | None:
    """{token text: log-prob} of the first generated token's alternatives (OpenAI's chat logprobs
    format: choices[0].logprobs.content[0].top_logprobs); None when the reply carries none."""
    try:
        first = (choice.get("logprobs") or {}).get("content")[0]
        alternatives = first.get("top_logprobs") or [first]
        return {str(a["token"]): float(a["logprob"]) for a in alternatives}
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def _error_detail(resp: Any) -> str:
    """The endpoint's error message, redacted: some servers echo the request's headers back."""
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        text = str(msg) if msg else resp.reason_phrase
    except (ValueError, AttributeError):
        text = resp.text or resp.reason_phrase
    return redact(text)[:200].replace("\n", " ")


def check_base_url(url: str) -> str:
    """`url` without a trailing slash; anything but an http(s) URL with a host is a ConfigError.

    Checked before the first request: `--base-url notaurl` can never work, so retrying it for
    half a minute only hides the typo.
    """
    from urllib.parse import urlsplit

    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(f"--base-url {redact_url(url)!r}: not a valid URL ({exc}); expected e.g. http://localhost:8000/v1") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {redact_url(url)!r}: expected an http(s) URL with a host, e.g. http://localhost:8000/v1")
    return url


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
