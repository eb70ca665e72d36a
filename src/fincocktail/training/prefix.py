"""Shared-prefix training: a micro-batch's common token prefix runs once, for every row.

Every example of a classification task starts with the same instruction (about 25 of FPB's
~62 tokens), so in a batch of one task most tokens are that prefix computed again per row.
Here the micro-batch is packed into one sequence, the prefix once and then every row's suffix
without its padding, under a mask that lets each suffix see the prefix and its own earlier
tokens only (`packed_hidden`). One forward of that sequence is the whole micro-batch: running
the prefix as a batch of one first (`suffix_hidden`, its key/value cache expanded to the rows)
computes the same but costs ~35% of the suffixes' time for its ~25 tokens, since a 25-row
forward and backward is all per-op overhead (measured, README). The cache form stays for
models whose attention cannot take a custom mask. Either way the backward sums the rows'
gradients into the single prefix computation, so the loss and the LoRA gradients are those of
the unshared batch (tests/test_train_prefix.py checks both to 1e-5 in fp32).

`data.Schedule` decides per micro-batch how many tokens to share (`prefix_to_share`, on
batches that `data.plan_batches` cut within one task); `loss.answer_loss_sum` runs the shared
forward (`suffix_hidden`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from fincocktail.errors import ConfigError, ModelError
from fincocktail.models.kv_cache import cache_kwargs, output_cache

if TYPE_CHECKING:
    from fincocktail.training.config import PrefixSharing

ESTIMATED_SPEEDUP = 1.2
"""Training throughput with sharing on over off, for sweep time estimates: the median of eight
measured pairs (FPB and fpb+fiqa_sa+tfns, 1 and 2 threads, two rounds) was 1.23, range 1.09-1.47."""

MIN_PREFIX_TOKENS = 8  # auto: shorter prefixes save less than the extra prefix forward costs
MIN_SAVED_SHARE = 0.15  # auto: the share of the micro-batch's real tokens the prefix must save


class EncodedRow(Protocol):
    """What the sharing decision reads of a training row (`training.data.Encoded`): data plans the
    batches with `prefix_to_share`, so the row's shape is named here instead of imported back."""

    @property
    def input_ids(self) -> list[int]: ...

    @property
    def n_prompt(self) -> int: ...


def common_prefix(items: Sequence[EncodedRow]) -> int:
    """Tokens every row starts with, capped so each row's first answer token is predicted by its suffix.

    The cap (one below the shortest prompt) keeps every scored position in the suffix part.
    """
    if len(items) < 2:
        return 0
    first = items[0].input_ids
    n = min(e.n_prompt for e in items) - 1
    for e in items[1:]:
        i = 0
        while i < n and e.input_ids[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def prefix_to_share(items: Sequence[EncodedRow], mode: PrefixSharing) -> int:
    """How many leading tokens of this micro-batch to compute once (0: run it unshared).

    `on` shares any common prefix; `auto` only where it saves at least MIN_SAVED_SHARE of the
    batch's real tokens and is MIN_PREFIX_TOKENS long (a mixed-task batch shares ~nothing).
    """
    if mode == "off":
        return 0
    n = common_prefix(items)
    if mode == "on":
        return n
    real = sum(len(e.input_ids) for e in items)
    saved = n * (len(items) - 1)
    return n if n >= MIN_PREFIX_TOKENS and saved >= MIN_SAVED_SHARE * real else 0


MASKED_ATTENTION = ("eager", "sdpa")  # implementations that read a 4D mask as given


def sliding_window(config: Any) -> int | None:
    """The attention window the model applies, if any (Qwen2-style configs carry one that is off)."""
    window = getattr(config, "sliding_window", None)
    return None if window is None or getattr(config, "use_sliding_window", True) is False else int(window)


def can_pack(body: Any, lengths: torch.Tensor) -> bool:
    """Whether `packed_hidden` computes what the unpacked rows would: a plain 4D-mask attention
    and no sliding window shorter than a row (the custom mask replaces the model's own)."""
    config = getattr(body, "config", None)
    if getattr(config, "_attn_implementation", None) not in MASKED_ATTENTION:
        return False
    window = sliding_window(config)
    return window is None or int(lengths.max()) <= window


def check_sliding_window(config: Any, max_length: int, mode: PrefixSharing) -> None:
    """Refuse, before training starts, shared prefixes on a sliding-window model whose rows may
    outgrow the window: the packed mask would see past it, and the cache form keeps only the
    window's last keys, so neither would compute the unshared rows."""
    window = sliding_window(config)
    if mode != "off" and window is not None and max_length > window:
        raise ConfigError(f"prefix_sharing: {mode} needs every row within the model's sliding window of {window} tokens; "
                          f"set max_length: {window} or prefix_sharing: off")


def packed_hidden(body: Any, input_ids: torch.Tensor, shared: int, lengths: torch.Tensor) -> torch.Tensor:
    """Hidden states of the suffixes `input_ids[:, shared:]` (rows right-padded to `lengths`), shape
    [B, L - shared, H], from one forward of [prefix, suffix 1, ..., suffix B]; padded positions
    hold row 0's first suffix state (their labels are ignored)."""
    rows = input_ids.shape[0]
    ends = [int(n) for n in lengths]
    pieces = [input_ids[0, :shared]] + [input_ids[r, shared:ends[r]] for r in range(rows)]
    packed = torch.cat(pieces).unsqueeze(0)
    positions = torch.cat([torch.arange(shared)] + [torch.arange(shared, n) for n in ends]).unsqueeze(0)
    segment = torch.cat([torch.full((shared,), -1)] + [torch.full((n - shared,), r) for r, n in enumerate(ends)])
    total = packed.shape[1]
    causal = torch.ones((total, total), dtype=torch.bool).tril_()
    allowed = causal & ((segment.unsqueeze(0) == -1) | (segment.unsqueeze(0) == segment.unsqueeze(1)))
    if body.config._attn_implementation == "eager":  # eager adds the mask to its scores
        mask = torch.zeros((total, total), dtype=torch.float32).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    else:
        mask = allowed
    device = input_ids.device
    hidden = body(input_ids=packed, position_ids=positions.to(device), attention_mask=mask[None, None].to(device),
                  use_cache=False).last_hidden_state[0]
    # where each padded (row, suffix position) sits in the packed sequence; padding points at `shared`
    index = torch.full((rows, input_ids.shape[1] - shared), shared, dtype=torch.long)
    start = shared
    for r, n in enumerate(ends):
        index[r, : n - shared] = torch.arange(start, start + n - shared)
        start += n - shared
    return hidden[index.to(device)]


def suffix_hidden(body: Any, input_ids: torch.Tensor, shared: int) -> torch.Tensor:
    """Hidden states of the suffixes `input_ids[:, shared:]`, after the shared prefix ran once.

    For attentions that cannot take `packed_hidden`'s mask, on models without a sliding window
    (`check_sliding_window` keeps rows inside one where there is).

    The prefix's keys and values are expanded to the batch as views, so autograd sums the
    rows' gradients back into the one prefix computation. Positions continue from `shared`.
    """
    from transformers.cache_utils import DynamicCache

    out = body(input_ids=input_ids[:1, :shared], use_cache=True)
    cache = output_cache(out)
    rows = input_ids.shape[0]
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ModelError(f"{type(cache).__name__}: shared-prefix training needs a per-layer key/value cache; set prefix_sharing: off")
    batch = DynamicCache()
    for i, layer in enumerate(layers):
        keys, values = layer.keys, layer.values
        batch.update(keys.expand(rows, *keys.shape[1:]), values.expand(rows, *values.shape[1:]), i)
    positions = torch.arange(shared, input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand(rows, -1)
    return body(input_ids=input_ids[:, shared:], position_ids=positions, use_cache=True, **cache_kwargs(body, batch)).last_hidden_state


__all__ = [
    "ESTIMATED_SPEEDUP", "MIN_PREFIX_TOKENS", "MIN_SAVED_SHARE", "can_pack", "check_sliding_window", "common_prefix",
    "packed_hidden", "prefix_to_share", "sliding_window", "suffix_hidden",
]
