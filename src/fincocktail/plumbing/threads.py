"""How many CPU threads torch (and the OpenMP / MKL pools under it) may use.

Several runs share a machine (sweep workers, one per `cores // N`), and on a shared 2-core box
an oversubscribed OpenMP pool is not a little slower but many times slower. So the budget is
set in one way everywhere: the environment for libraries not yet loaded, torch for the pool
already running, and restored afterwards when a call borrows the process (tests, notebooks).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def set_threads(threads: int | None) -> None:
    """Give this process `threads` CPU threads (None: leave the current setting)."""
    if not threads:
        return
    n = str(max(1, int(threads)))
    os.environ["OMP_NUM_THREADS"] = n
    os.environ["MKL_NUM_THREADS"] = n
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))


@contextmanager
def thread_budget(threads: int | None) -> Iterator[None]:
    """`set_threads(threads)` for the duration of the block; torch's setting is put back after."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        set_threads(threads)
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and before is not None:
            torch.set_num_threads(before)
