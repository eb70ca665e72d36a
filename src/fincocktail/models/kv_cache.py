"""The decoder's key/value cache argument, under every transformers version we support.

transformers 5.2x renamed the decoder's `past_key_values` argument and output to `cache`; the
old name still works but warns, and is due to go. Asking the decoder's own signature, once per
class, keeps one code path for both.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def _argument(decoder_class: type) -> str:
    params = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(decoder: Any, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `decoder(...)`, under the name its forward takes."""
    return {_argument(type(decoder)): cache}


def output_cache(output: Any) -> Any:
    """The cache a decoder's forward returned (None without `use_cache`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


__all__ = ["cache_kwargs", "output_cache"]
