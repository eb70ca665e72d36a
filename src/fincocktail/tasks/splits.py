"""Deterministic, seed-free-of-machine splits.

Splits are made by hashing a stable key (a sentence, a headline, a document id) with the
split's name as salt, never by shuffling with a RNG: the result does not depend on Python,
NumPy or the order rows were read in, so `fpb@fingpt` means the same examples everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def unit_hash(key: str, salt: str) -> float:
    """A number in [0, 1) that depends only on `key` and `salt`."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_key(items: Sequence[T], key: Callable[[T], str], fraction: float, salt: str) -> tuple[list[T], list[T]]:
    """Partition items into (rest, held_out) with about `fraction` of the *keys* held out.

    All items sharing a key land on the same side (no headline or document on both sides).
    Order within each side is the input order.
    """
    rest: list[T] = []
    held: list[T] = []
    for item in items:
        (held if unit_hash(key(item), salt) < fraction else rest).append(item)
    return rest, held


def normalize_text(text: str) -> str:
    """The form two inputs are compared in for overlap: NFKC, case-folded, whitespace collapsed.

    Catches the near-duplicates that break exact matching (a case change in a tweet, a double
    space, a non-breaking space) without merging genuinely different sentences.
    """
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def carve_validation(items: Sequence[T], key: Callable[[T], str], salt: str, fraction: float = 0.1) -> tuple[list[T], list[T]]:
    """(train, validation): about `fraction` of the groups held out as validation, by hash of `salt`."""
    return split_by_key(items, key, fraction, salt)
