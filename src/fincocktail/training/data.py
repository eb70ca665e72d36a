"""From a built cocktail to padded batches, with as little compute on padding as possible.

Batches are *length grouped*: each epoch the items are shuffled with a seed-derived RNG, cut
into mega-batches of 50 batches, sorted by length inside each, cut into batches, and the batch
order is shuffled again. Neighbours in a batch then have nearly equal lengths (padding is a few
percent instead of ~half), while every epoch still sees a different, reproducible order. The
whole plan is a pure function of (seed, epoch, lengths): a resumed run rebuilds it and skips
the batches already done, which is what makes resume exact.

With `prefix_sharing` on (or auto), batches are also cut within one task inside each
mega-batch, and each micro-batch records the common prefix (the task's instruction) that
`training.prefix` computes once for all its rows. `off`, the default, plans exactly the
mixed-task batches of earlier versions, so runs started before the setting resume unchanged.

Sequences are right-padded. With causal attention a real token never attends to a pad that
comes after it, so the model is run without an attention mask (cheaper attention kernels) and
the pads' own outputs are simply never scored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from fincocktail.training.prefix import prefix_to_share

if TYPE_CHECKING:
    from fincocktail.cocktail import CocktailData
    from fincocktail.training.config import PrefixSharing, TrainConfig

IGNORE_INDEX = -100
MEGABATCH_FACTOR = 50


@dataclass(frozen=True)
class Encoded:
    """One training sequence: prompt ids then target ids (the loss covers the target only)."""

    input_ids: list[int]
    n_prompt: int

    @property
    def n_target(self) -> int:
        return len(self.input_ids) - self.n_prompt


def truncate(prompt_ids: Sequence[int], target_ids: Sequence[int], max_length: int) -> Encoded:
    """Fit into `max_length`: the target is kept whole when it can be; the prompt loses tokens from the left."""
    prompt, target = list(prompt_ids), list(target_ids)
    if len(prompt) + len(target) > max_length:
        if len(target) > max_length - 1:
            target = target[: max_length - 1]
        keep = max_length - len(target)
        prompt = prompt[len(prompt) - keep :]
    return Encoded(prompt + target, len(prompt))


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    strategy: Literal["length_grouped", "shuffle"] = "length_grouped",
    groups: Sequence[str] | None = None,
) -> list[list[int]]:
    """Indices of each batch of one epoch, deterministic in (lengths, batch_size, seed, epoch).

    With `groups` (each item's task), length-grouped batches are also cut within one task:
    inside a mega-batch items are sorted by (task, length), so a batch shares its task's
    instruction (a prefix computed once, `training.prefix`). The mega-batches still hold the
    shuffled epoch's items, so each stretch of the epoch keeps the cocktail's task mixture.
    """
    rng = random.Random(f"fincocktail-batches:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if strategy == "shuffle":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        if groups is None:
            batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
            continue
        by_task: dict[str, list[int]] = {}
        for i in chunk:  # stays sorted by length within each task
            by_task.setdefault(groups[i], []).append(i)
        for task in sorted(by_task):
            rows = by_task[task]
            batches.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
    rng.shuffle(batches)
    return batches


def split_by_tokens(batch: Sequence[int], lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Cut one batch into micro-batches whose padded size (rows x longest row) fits `max_tokens`.

    Activation memory grows with padded tokens, so this bounds peak memory for a rare batch of
    long examples while leaving the optimizer step (and thus the gradient) unchanged: the loss
    is normalised over all answer tokens of the step, whatever the split.
    """
    order = sorted(batch, key=lambda i: -lengths[i])
    if max_tokens is None:
        return [order]
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max(lengths[j] for j in current + [i])
        if current and width * (len(current) + 1) > max_tokens:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L), right-padded
    labels: torch.Tensor  # (B, L), IGNORE_INDEX on prompt and padding
    attention_mask: torch.Tensor  # (B, L), 1 on real tokens (used by reference computations)
    real_tokens: int
    target_tokens: int
    shared_prefix: int = 0  # leading tokens, the same in every row, that run once (training.prefix)

    @property
    def shared_tokens(self) -> int:
        """Prompt tokens not computed again because the rows share their prefix (for the run card)."""
        return self.shared_prefix * (len(self.input_ids) - 1)


def collate(items: Sequence[Encoded], pad_id: int, shared_prefix: int = 0) -> Batch:
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, enc in enumerate(items):
        n = len(enc.input_ids)
        ids[row, :n] = torch.tensor(enc.input_ids, dtype=torch.long)
        labels[row, enc.n_prompt : n] = ids[row, enc.n_prompt : n]
        mask[row, :n] = 1
    return Batch(
        input_ids=ids,
        labels=labels,
        attention_mask=mask,
        real_tokens=int(mask.sum()),
        target_tokens=sum(e.n_target for e in items),
        shared_prefix=shared_prefix,
    )


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padded positions over a batch plan (for logs and benchmarks)."""
    padded = real = 0
    for batch in batches:
        width = max(lengths[i] for i in batch)
        padded += width * len(batch)
        real += sum(lengths[i] for i in batch)
    return 1 - real / padded if padded else 0.0


@dataclass
class Schedule:
    """Every batch of every epoch, planned before the first step.

    Planned whole and up front from (seed, epoch, lengths) alone, so a resumed run walks the
    same batches and only needs to know which optimizer step it stopped after.
    """

    encoded: list[list[Encoded]]  # per epoch, the truncated sequences in draw order
    lengths: list[list[int]]
    plans: list[list[list[int]]]  # per epoch, each batch's indices into `encoded`
    grad_accum: int
    pad_id: int
    max_batch_tokens: int | None
    total_steps: int
    prefix_sharing: PrefixSharing = "off"

    @classmethod
    def plan(cls, config: TrainConfig, data: CocktailData, pad_id: int, max_batch_tokens: int | None) -> Schedule:
        encoded = [[truncate(*data.encodings[item], config.max_length) for item in epoch] for epoch in data.epochs]
        lengths = [[len(e.input_ids) for e in enc] for enc in encoded]
        by_task = config.prefix_sharing != "off" and config.batching == "length_grouped"
        groups = [[task for task, _ in epoch] if by_task else None for epoch in data.epochs]
        plans = [
            plan_batches(lens, config.batch_size, config.seed, ep, config.batching, groups=groups[ep])
            for ep, lens in enumerate(lengths)
        ]
        total_steps = sum(math.ceil(len(p) / config.grad_accum) for p in plans)
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        return cls(encoded, lengths, plans, config.grad_accum, pad_id, max_batch_tokens, total_steps, config.prefix_sharing)

    def steps(self, epoch: int) -> list[list[list[int]]]:
        """The optimizer steps of an epoch, each `grad_accum` batches."""
        plan = self.plans[epoch]
        return [plan[i : i + self.grad_accum] for i in range(0, len(plan), self.grad_accum)]

    def micro_batches(self, epoch: int, step: list[list[int]]) -> list[Batch]:
        """One step's batches as tensors, each split to at most `max_batch_tokens` padded tokens,
        each with the prefix its rows share (0 with `prefix_sharing: off`)."""
        enc, lengths = self.encoded[epoch], self.lengths[epoch]
        micros = [[enc[i] for i in micro] for batch in step for micro in split_by_tokens(batch, lengths, self.max_batch_tokens)]
        return [collate(items, self.pad_id, prefix_to_share(items, self.prefix_sharing)) for items in micros]
