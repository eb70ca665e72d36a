"""Quiet terminals: library chatter (deprecation warnings, library progress bars) stays out of
normal output, so what a user sees is fincocktail's own progress bars and tables.

`--verbose` (or FINCOCKTAIL_VERBOSE=1, which worker processes inherit) shows it all again.
Warnings that fincocktail raises itself are never hidden.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "FINCOCKTAIL_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Hide deprecation noise and library progress bars unless verbose; idempotent."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose():
        return
    # transformers' deprecations are raised with a stacklevel that points into torch, so they are
    # matched by category, not by module; fincocktail's own warnings are always shown.
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", module=r"fincocktail(\..*)?$")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
