"""Generate mode: batched greedy decoding with per-task stop strings.

A small loop of our own instead of `model.generate`: prompts are prefilled one by one (no
compute on padding, causal attention without a mask) and decoded together; rows that hit EOS
or a stop string stop being decoded (and leave the batch once they are half of it); the head
runs on the last position only,
and the same function serves `fincocktail eval` and `fincocktail serve`, so the server returns
exactly what local evaluation would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from fincocktail.models.forward import Scorer, left_pad, prefill_rows, run_prompts, shared_prefix_cache, split_on_oom, with_room


@dataclass(frozen=True)
class Generation:
    text: str  # decoded, cut before the first stop string
    n_tokens: int  # tokens generated (EOS included when it was produced)
    finish_reason: str  # "stop" (EOS or stop string), "length", or "cancelled" (should_stop said so)
    rechecked: bool = False  # decoded again by the fp32 reference (a close token in the bf16 pass)


GEN_CHECK_MARGIN = 0.5
"""Nats between the two best next tokens under which a bf16 greedy row is decoded again in fp32.

bf16 rounding moves a next-token margin by a few tenths of a nat (choice mode measured up to
0.13 base, 0.61 tuned, with every flipped choice under 0.34); a row whose every chosen token won
by more than this is taken to be what fp32 greedy would produce, so only rows with a close step
pay for an fp32 decode. On FinQA with SmolLM2, 5 of 6 rows had such a step, so the evaluation
runner does not use this (README, Performance: plain bf16 changed 4 of 100 FinQA answers).
"""


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one occurred."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(int(x) for x in extra)
    return ids


@torch.inference_mode()
def generate_greedy(
    scorer: Scorer,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
    share_prefix: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    reference: Scorer | None = None,
    check_margin: float = GEN_CHECK_MARGIN,
    batched_prefill: bool | None = None,
    max_batch_tokens: int | None = None,
    row_stops: Sequence[Sequence[str]] | None = None,
    row_max_tokens: Sequence[int] | None = None,
    row_gone: Callable[[int], bool] | None = None,
) -> list[Generation]:
    """Greedy continuations of `prompts` (token ids), in input order.

    `should_stop` is asked before every decoding step (the server: has the client gone?);
    once it says yes, every unfinished row ends with finish_reason "cancelled".

    As in choice mode, a prefix common to all prompts (instruction, k-shot demonstrations) is
    computed once and each batch starts from a copy of its KV cache. `on_token(prompt index,
    token id)` sees every token as it is decoded (the server streams from it); an exception it
    raises stops decoding.

    With a `reference` (the fp32 model behind a bf16 `scorer`), every row whose greedy choice
    was ever within `check_margin` nats of the runner-up is decoded again with the reference,
    so outputs are fp32's while most rows cost a bf16 decode. Not with `on_token`: tokens
    already streamed cannot be taken back.

    `batched_prefill` (default: on CUDA) prefills each batch in one padded forward instead of
    row by row; either way decoding continues on a preallocated cache. `max_batch_tokens` (on
    GPUs, `forward.memory_batch_tokens`) bounds a batch's tokens, prompt plus `max_new_tokens`.

    The server batches requests that each bring their own options: `row_stops[i]` replaces
    `stop` for prompt i, `row_max_tokens[i]` (at most `max_new_tokens`) is its budget, and once
    `row_gone(i)` says so (its client has gone) that row alone ends "cancelled".
    """
    if reference is not None and on_token is not None:
        raise ValueError("a streamed generation cannot be re-checked: pass on_token or reference, not both")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = eos_ids(tokenizer, scorer.model)
    shared, prefix = shared_prefix_cache(scorer, prompts) if share_prefix else (0, None)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    out: list[Generation | None] = [None] * len(prompts)
    margins = [float("inf")] * len(prompts)
    batched = scorer.device.type == "cuda" if batched_prefill is None else batched_prefill

    def run(idx: list[int]) -> tuple[list[Generation], list[float]]:
        seen = (lambda r, tok: on_token(idx[r], tok)) if on_token else None
        rows = _RowOptions([row_stops[i] for i in idx] if row_stops is not None else None,
                           [row_max_tokens[i] for i in idx] if row_max_tokens is not None else None,
                           (lambda r: row_gone(idx[r])) if row_gone is not None else None)
        return _generate_batch(scorer, tokenizer, [prompts[i] for i in idx], max_new_tokens, stop, stops, pad_id, prefix, shared,
                               should_stop, seen, track_margins=reference is not None, batched_prefill=batched, rows=rows)

    # A batch that runs out of GPU memory is halved and retried; not a streamed one, whose
    # tokens have already gone to the client.
    widths = [len(p) - shared + max_new_tokens for p in prompts]
    batches = split_on_oom(order, batch_size, run, "generation", widths, max_batch_tokens) if on_token is None \
        else _batches(order, batch_size, run)
    for idx, (gens, mins) in batches:
        for i, g, m in zip(idx, gens, mins):
            out[i], margins[i] = g, m
        if on_batch:
            on_batch(len(idx))
    if reference is not None:
        close = [i for i, m in enumerate(margins) if m < check_margin and out[i].finish_reason != "cancelled"]  # type: ignore[union-attr]
        if close:
            again = generate_greedy(reference, tokenizer, [prompts[i] for i in close], max_new_tokens, stop, batch_size,
                                    share_prefix=share_prefix, should_stop=should_stop, batched_prefill=batched_prefill,
                                    max_batch_tokens=max_batch_tokens)
            for i, g in zip(close, again):
                out[i] = Generation(g.text, g.n_tokens, g.finish_reason, rechecked=True)
    return out  # type: ignore[return-value]


def _batches(order: Sequence[int], batch_size: int, run: Callable[[list[int]], Any]) -> Any:
    """(indices, run(indices)) for consecutive batches, without retries."""
    for start in range(0, len(order), batch_size):
        idx = list(order[start : start + batch_size])
        yield idx, run(idx)


@dataclass(frozen=True)
class _RowOptions:
    """Per-row stop strings, budgets and cancellation of one batch (the server's requests); None: the batch's own."""

    stops: Sequence[Sequence[str]] | None = None
    max_tokens: Sequence[int] | None = None
    gone: Callable[[int], bool] | None = None

    def stop(self, row: int, default: Sequence[str]) -> Sequence[str]:
        return self.stops[row] if self.stops is not None else default

    def limit(self, row: int, default: int) -> int:
        return min(self.max_tokens[row], default) if self.max_tokens is not None else default


def _finish(tokenizer: Any, ids: list[int], stop_ids: set[int], stop: Sequence[str], limit: int) -> Generation | None:
    """The row's result once its last token (EOS, a stop string, its budget) ends it; None while it goes on."""
    if ids[-1] in stop_ids:
        return Generation(_decode(tokenizer, ids[:-1], stop)[0], len(ids), "stop")
    text, hit = _decode(tokenizer, ids, stop)
    if hit:
        return Generation(text, len(ids), "stop")
    return Generation(text, len(ids), "length") if len(ids) >= limit else None


def _generate_batch(scorer, tokenizer, prompts, max_new_tokens, stop, stop_ids, pad_id, prefix=None, shared=0, should_stop=None,
                    on_token=None, track_margins=False, batched_prefill=False, rows: _RowOptions | None = None
                    ) -> tuple[list[Generation], list[float]]:
    """Greedy rows of one batch, and (with `track_margins`; else inf) each row's smallest margin in nats between
    its chosen token and the runner-up: only a re-check reads them, so plain decoding skips the top-2."""
    n = len(prompts)
    rows = rows or _RowOptions()
    limits = [rows.limit(i, max_new_tokens) for i in range(n)]
    results: list[Generation | None] = [None] * n
    generated: list[list[int]] = [[] for _ in range(n)]
    margins = [float("inf")] * n
    for i in range(n):
        if limits[i] <= 0:
            results[i] = Generation("", 0, "length")
    if all(r is not None for r in results):
        return results, margins  # type: ignore[return-value]
    steps = max(limits)
    stacked = None if batched_prefill else prefill_rows(scorer, prompts, prefix, shared, room=steps)
    if stacked is not None:
        last, cache, mask = stacked
    else:
        padded = left_pad([p[shared:] for p in prompts], pad_id)
        hidden, cache, mask = run_prompts(scorer, padded, prefix, shared, use_cache=True)
        last = hidden[:, -1, :]
        cache = with_room(cache, steps) if batched_prefill else cache
    present = list(range(n))  # original row of each row of the batch tensors
    next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    for _step in range(steps):
        everyone = should_stop is not None and should_stop()
        for i in range(n):
            if results[i] is None and (everyone or (rows.gone is not None and rows.gone(i))):
                results[i] = Generation(_decode(tokenizer, generated[i], rows.stop(i, stop))[0], len(generated[i]), "cancelled")
        if all(r is not None for r in results):
            break
        lp = scorer.log_probs(last)
        tokens = lp.argmax(dim=-1).tolist()
        if track_margins and lp.shape[-1] > 1:
            top = lp.topk(2, dim=-1).values
            gaps = (top[:, 0] - top[:, 1]).tolist()
        else:
            gaps = [float("inf")] * len(tokens)
        for r, row in enumerate(present):
            if results[row] is not None:
                continue
            margins[row] = min(margins[row], gaps[r])
            generated[row].append(tokens[r])
            if on_token is not None:
                on_token(row, tokens[r])
            results[row] = _finish(tokenizer, generated[row], stop_ids, rows.stop(row, stop), limits[row])
        keep = [r for r, row in enumerate(present) if results[row] is None]
        if not keep:
            break
        # Finished rows ride along (fed padding) until they are half the batch: dropping them
        # copies the whole KV cache, which costs more than a few wasted rows of a decode step.
        if 2 * len(keep) <= len(present):
            sel = torch.tensor(keep, dtype=torch.long)
            cache.reorder_cache(sel.to(scorer.device))
            mask, next_pos = mask[sel], next_pos[sel]
            tokens = [tokens[r] for r in keep]
            present = [present[r] for r in keep]
        feed = [tokens[r] if results[row] is None else pad_id for r, row in enumerate(present)]
        ids = torch.tensor(feed, dtype=torch.long).unsqueeze(1)
        mask = torch.cat([mask, torch.ones((len(present), 1), dtype=torch.long)], dim=1)
        hidden, cache = scorer.hidden(ids, mask, next_pos.unsqueeze(1), cache=cache, use_cache=True)
        next_pos = next_pos + 1
        last = hidden[:, -1, :]
    return results, margins  # type: ignore[return-value]


def _decode(tokenizer: Any, ids: list[int], stop: Sequence[str]) -> tuple[str, bool]:
    return cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)
