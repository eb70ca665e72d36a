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

from fincocktail import paths
from fincocktail.errors import ConfigError, ModelError

API_PREFIX = "openai:"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


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
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._db.commit()

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


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached: bool


@dataclass
class ChatClient:
    """Minimal chat-completions client: bounded retries with exponential backoff, and a cache."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    cache_path: Path | None = None
    sleep: Callable[[float], None] = time.sleep
    requests_sent: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                "OPENAI_API_KEY is not set: export it to use an openai:MODEL (for a local server that "
                "ignores keys, any value works, e.g. OPENAI_API_KEY=none)"
            )
        import httpx

        self._http = httpx.Client(timeout=self.timeout_s, headers={"Authorization": f"Bearer {key}"})
        self._cache = ResponseCache(self.cache_path or default_cache_path())
        self._count_lock = threading.Lock()

    def cache_key(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        blob = json.dumps(
            {"base_url": self.base_url, "model": self.model, "messages": messages, "params": params},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: list[str] | None = None) -> ChatResult:
        params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}
        if stop:
            params["stop"] = list(stop)[:4]  # the OpenAI API accepts at most four
        key = self.cache_key(messages, params)
        hit = self._cache.get(key)
        if hit is not None:
            return _result(hit, cached=True)
        body = self._post({"model": self.model, "messages": messages, **params})
        self._cache.put(key, body)
        return _result(body, cached=False)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = self._http.post(url, json=payload)
            except httpx.TransportError as exc:
                last = f"cannot reach {url} ({type(exc).__name__}: {exc})"
                if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and attempt >= 1:
                    raise ModelError(f"{last}; is --base-url right and the server running?") from exc
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                        body["choices"][0]["message"]
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise ModelError(f"{url} answered 200 with no chat completion in the body") from exc
                    return body
                detail = _error_detail(resp)
                if resp.status_code in (401, 403):
                    raise ModelError(f"{url} refused the API key ({resp.status_code}: {detail}); check OPENAI_API_KEY")
                if resp.status_code not in RETRY_STATUS:
                    raise ModelError(f"{url} answered {resp.status_code}: {detail}")
                last = f"{url} answered {resp.status_code}: {detail}"
                retry_after = _retry_after(resp)
                if attempt < self.max_retries:
                    delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                    self.sleep(min(self.max_backoff_s, retry_after) if retry_after is not None else delay)
                continue
            if attempt < self.max_retries:
                self.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt))
        raise ModelError(f"{last} (gave up after {self.max_retries + 1} attempts)")

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
    )


def _error_detail(resp: Any) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg)[:200] if msg else resp.reason_phrase
    except (ValueError, AttributeError):
        return (resp.text or resp.reason_phrase)[:200].replace("\n", " ")


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
