"""Secrets out of everything the tool prints or stores.

Why one function at the sinks rather than care at every call site: text from outside (an
endpoint's error body, an exception from a library, a URL the user typed) reaches error
messages, `error.log`, the results store and run cards by many paths, and one of them is
always forgotten. So every place that prints or stores such text passes it through `redact`,
which removes the live API keys (the values of secret-looking environment variables), bearer
tokens, `sk-...` style keys and the `user:password@` part of URLs.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
MIN_SECRET_LEN = 6  # shorter values ("none", "1") are placeholders, and masking them would mangle text
_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-" + MASK),
    (re.compile(r"(?i)\b(authorization|api[-_]?key|x-api-key)(['\"]?\s*[:=]\s*['\"]?)(?!(?:bearer|basic)\s)[^\s'\",}]+"), r"\1\2" + MASK),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@'\"]+(?::[^/\s@'\"]*)?@"), r"\1" + MASK + "@"),  # quotes: stays inside one JSON string
]


def _live_secrets() -> list[str]:
    """Values of environment variables whose name says they are secret, longest first."""
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with API keys, bearer tokens and URL credentials replaced by `***`."""
    if not text:
        return text
    for secret in _live_secrets():
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_url(url: str) -> str:
    """A URL without its `user:password@` part (what run cards record of --base-url)."""
    return redact(url)


def redact_obj(obj: Any) -> Any:
    """Every string inside a JSON-like structure redacted (run cards, store rows)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


__all__ = ["MASK", "MIN_SECRET_LEN", "redact", "redact_obj", "redact_url"]
