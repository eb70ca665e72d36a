"""The two model calls evaluation needs: the transformer body, and the LM head on chosen rows only.

It lives under `models` (below training and evaluation) because both score with it: evaluation's
choice and generate modes, and training's learning curves (`training.curves`).

Calling `model(...)` computes vocabulary logits for every position, which for a small model
with a large vocabulary (SmolLM2: 49k) is a large share of the cost and of the memory. Choice
scoring and greedy decoding read a handful of positions, so we run the decoder body, pick the
hidden states we need, and apply the head to those alone, in float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable, Iterator
from typing import Any, Sequence, TypeVar

import torch

from fincocktail.errors import ModelError
from fincocktail.models.kv_cache import cache_kwargs, output_cache

R = TypeVar("R")
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


MEMORY_SHARE = 0.6  # of the GPU memory free when evaluation starts, for one batch's cache and activations


def tokens_that_fit(config: Any, dtype_bytes: int, free_bytes: int, share: float = MEMORY_SHARE) -> int:
    """How many tokens one batch may hold in `share` of `free_bytes`: each token keeps its keys and
    values in every layer, and one layer's activations (attention and MLP) at a time.

    An estimate, deliberately simple: it only has to keep batches of long prompts from asking
    for several times the memory there is; `split_on_oom` catches what it gets wrong.
    """
    hidden = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    layers = int(config.num_hidden_layers)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    per_token = (2 * layers * kv_heads * head_dim + 4 * hidden + 2 * intermediate) * dtype_bytes
    return max(1, int(free_bytes * share / per_token))


def memory_batch_tokens(model: Any) -> int | None:
    """On a CUDA GPU, the tokens a batch may hold in the memory free now (`tokens_that_fit`);
    None elsewhere: CPU batches are bounded by the batch size alone, as before."""
    from fincocktail.models.loading import text_config

    param = next(iter(model.parameters()), None)
    if param is None or param.device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(param.device)
    return tokens_that_fit(text_config(model.config), param.element_size(), free)


def release_memory() -> None:
    """Hand the blocks an out-of-memory batch left in torch's CUDA cache back, before the retry."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def split_on_oom(order: Sequence[int], batch_size: int, run: Callable[[list[int]], R], what: str,
                 widths: Sequence[int] | None = None, max_tokens: int | None = None) -> Iterator[tuple[list[int], R]]:
    """(indices, run(indices)) for consecutive batches of `order`; a batch that runs out of GPU
    memory is halved and retried, down to one example, and the smaller size is kept from then on.
    With `max_tokens`, a batch also holds at most that many tokens, `widths[i]` each (`order` is
    longest first, so its first row's width is the batch's).

    Why: batch sizes are chosen before the GPU's free memory is known (another process, a long
    prompt at the start of the length-sorted order), and a crash there would fail a run hours
    into a sweep. Halving keeps the batches aligned with a plain run at the smaller size, so the
    results are those of that run. Only one example that does not fit is an error, in one line.
    """
    size, start = max(1, batch_size), 0
    while start < len(order):
        rows = size
        if max_tokens is not None and widths is not None:
            rows = min(size, max(1, max_tokens // max(1, widths[order[start]])))
        idx = list(order[start : start + rows])
        failed = False
        try:
            result = run(idx)
        except OUT_OF_MEMORY:
            failed = True  # retried below, once the exception (and the tensors its frames hold) is gone
        if failed:
            release_memory()
            if len(idx) == 1:
                raise ModelError(
                    f"{what}: one example does not fit in the GPU's memory even alone; use --max-prompt-tokens, "
                    "fewer --max-new-tokens, a lower-precision --dtype or a GPU with more memory"
                )
            size = max(1, (rows if rows < size else size) // 2)  # a multiple of the next size: batches line up with a plain run at it
            continue
        yield idx, result
        start += len(idx)


@dataclass
class Padded:
    """A left-padded batch, with the position ids a left-padded row needs."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    lengths: torch.Tensor  # [B] true lengths


def left_pad(rows: list[list[int]], pad_id: int) -> Padded:
    """Left padding keeps every row's last real token in the last column, where decoding continues."""
    if any(len(r) == 0 for r in rows):
        raise ValueError("cannot score an empty prompt")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Padded(ids, mask, pos, torch.tensor([len(r) for r in rows], dtype=torch.long))


class Scorer:
    """Wraps a causal LM (plain or peft) for body-only forwards and a float32 head."""

    def __init__(self, model: Any):
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.body = base.get_decoder()
        head = base.get_output_embeddings()
        self._weight = head.weight
        self._bias = getattr(head, "bias", None)
        self.device = self._weight.device
        self.softcap = getattr(getattr(base, "config", None), "final_logit_softcapping", None)
        self._w32: torch.Tensor | None = None

    def hidden(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False):
        """Last hidden states (and the cache); a None mask means no padding (SDPA's causal fast path)."""
        out = self.body(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device) if attention_mask is not None else None,
            position_ids=position_ids.to(self.device),
            use_cache=use_cache,
            **cache_kwargs(self.body, cache),
        )
        return out.last_hidden_state, (output_cache(out) if use_cache else None)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 log-softmax over the vocabulary for hidden states of shape [N, H]."""
        if self._weight.dtype == torch.float32:
            w = self._weight
        else:
            if self._w32 is None:
                self._w32 = self._weight.float()
            w = self._w32
        logits = hidden.float() @ w.T
        if self._bias is not None:
            logits = logits + self._bias.float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.log_softmax(logits, dim=-1)


MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth the cache copies


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens all rows start with, leaving at least one token of each row to run."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows) - 1
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def shared_prefix_cache(scorer: Scorer, rows: Sequence[Sequence[int]]) -> tuple[int, Any]:
    """(length, KV cache) of the prefix all rows share, or (0, None) when it is too short to pay off."""
    shared = common_prefix_length(rows) if len(rows) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        return 0, None
    ids = torch.tensor([list(rows[0][:shared])], dtype=torch.long)
    _, cache = scorer.hidden(ids, torch.ones_like(ids), torch.arange(shared).unsqueeze(0), use_cache=True)
    return shared, cache


def run_prompts(scorer: Scorer, padded: Padded, prefix: Any, shared: int, use_cache: bool):
    """Forward the (suffixes of the) prompts, after a copy of the shared prefix's cache if any.

    Returns the hidden states, the cache and the full attention mask (prefix columns included).
    """
    mask, cache = padded.attention_mask, None
    if prefix is not None:
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(padded.input_ids.shape[0])
        mask = torch.cat([torch.ones((padded.input_ids.shape[0], shared), dtype=torch.long), mask], dim=1)
        use_cache = True
    hidden, cache = scorer.hidden(padded.input_ids, mask, padded.position_ids + shared, cache=cache, use_cache=use_cache)
    return hidden, cache, mask


@lru_cache(maxsize=None)
def _preallocated_layer():
    """A `DynamicLayer` whose keys and values live in a buffer with room for the tokens still to come.

    transformers' `DynamicLayer` concatenates on every update, so each decoding step copies the
    whole cache of every layer (for 16 FinQA prompts of ~1,100 tokens in fp32: ~0.8 GB a step).
    Here a step writes one column in place and attention reads a view of the filled part.
    Defined on first use (once), so importing this module does not import transformers.
    """
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int):
            """`keys`/`values`: buffers [B, heads, filled + room, head_dim] whose first `filled` columns hold the cache."""
            super().__init__()
            self._k, self._v, self._n = keys, values, filled
            self.device, self.is_initialized = keys.device, True
            self._views()

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self._n, key_states.shape[-2]
            if n + m > self._k.shape[2]:  # out of room (a caller decoding further than it said): grow
                grow = max(m, self._k.shape[2])
                self._k = torch.cat([self._k, self._k.new_empty((*self._k.shape[:2], grow, self._k.shape[3]))], dim=2)
                self._v = torch.cat([self._v, self._v.new_empty((*self._v.shape[:2], grow, self._v.shape[3]))], dim=2)
            self._k[:, :, n : n + m], self._v[:, :, n : n + m] = key_states, value_states
            self._n = n + m
            self._views()
            return self.keys, self.values

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self._k, self._v = self._k.index_select(0, beam_idx), self._v.index_select(0, beam_idx)
            self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self._views()

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a preallocated decoding cache is not cropped")

    return PreallocatedLayer


def with_room(cache: Any, room: int) -> Any:
    """The cache of a padded batch prefill, copied into preallocated buffers with `room` free
    columns per layer, so decoding writes in place; other cache layouts are returned as they are.

    Why: on a GPU one padded forward of the whole batch beats prefilling rows one by one (the
    CPU's choice, `prefill_rows`), and decoding then needs the same preallocated cache.
    """
    from transformers.cache_utils import Cache, DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return cache
    preallocated = _preallocated_layer()
    stacked = []
    for layer in layers:
        k, v = layer.keys, layer.values
        keys = k.new_zeros((k.shape[0], k.shape[1], k.shape[2] + room, k.shape[3]))
        values = v.new_zeros((v.shape[0], v.shape[1], v.shape[2] + room, v.shape[3]))
        keys[:, :, : k.shape[2]], values[:, :, : v.shape[2]] = k, v
        stacked.append(preallocated(keys, values, k.shape[2]))
    return Cache(layers=stacked)


def prefill_rows(
    scorer: Scorer, rows: Sequence[Sequence[int]], prefix: Any, shared: int, room: int = 0
) -> tuple[torch.Tensor, Any, torch.Tensor] | None:
    """Run each prompt alone, then stack the caches left-padded into one batch cache.

    For long prompts this beats one padded batch on CPU: no compute on padding, and attention
    without a mask takes SDPA's causal fast path. The batch cache has `room` free columns for
    the tokens decoding will add, so decoding steps do not re-allocate it. Returns (last hidden
    [B, H], cache, mask), or None for cache layouts other than plain per-layer key/value tensors
    (sliding windows ...).
    """
    from transformers.cache_utils import Cache, DynamicLayer

    lasts, caches = [], []
    for row in rows:
        ids = torch.tensor([list(row[shared:])], dtype=torch.long)
        pos = torch.arange(shared, len(row)).unsqueeze(0)
        cache = copy.deepcopy(prefix) if prefix is not None else None
        hidden, cache = scorer.hidden(ids, None, pos, cache=cache, use_cache=True)
        lasts.append(hidden[:, -1, :])
        caches.append(cache)
    layers = [getattr(c, "layers", None) for c in caches]
    if any(ls is None or any(type(layer) is not DynamicLayer for layer in ls) for ls in layers):
        return None
    width = max(len(r) for r in rows)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        mask[i, width - len(r) :] = 1
    preallocated = _preallocated_layer()
    stacked = []
    for layer_idx in range(len(layers[0])):
        k0, v0 = layers[0][layer_idx].keys, layers[0][layer_idx].values
        keys = k0.new_zeros((len(rows), k0.shape[1], width + room, k0.shape[3]))
        values = v0.new_zeros((len(rows), v0.shape[1], width + room, v0.shape[3]))
        for i, r in enumerate(rows):
            keys[i, :, width - len(r) : width] = layers[i][layer_idx].keys[0]
            values[i, :, width - len(r) : width] = layers[i][layer_idx].values[0]
        stacked.append(preallocated(keys, values, width))
    return torch.cat(lasts, dim=0), Cache(layers=stacked), mask


@torch.inference_mode()
def answer_logprobs(
    scorer: Scorer, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, batch_size: int = 8
) -> list[tuple[float, int]]:
    """Teacher-forced log-likelihood of each (prompt ids, answer ids) row: (summed log-prob of the
    answer tokens, their count), in the order of `rows`.

    One forward of prompt + answer per row, no generation: this is what makes the likelihood
    metric of generative tasks cheap (FinQA's answers are a few tokens after a long prompt).
    Left padding puts every row's answer in the last columns, so one slice reads them all, and
    the head runs on those positions only.
    """
    for prompt, answer in rows:
        if not prompt or not answer:
            raise ValueError("teacher forcing needs a non-empty prompt and answer")
    order = sorted(range(len(rows)), key=lambda i: (-(len(rows[i][0]) + len(rows[i][1])), i))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)

    def run(idx: list[int]) -> list[tuple[float, int]]:
        padded = left_pad([list(rows[i][0]) + list(rows[i][1]) for i in idx], pad_id)
        hidden, _ = scorer.hidden(padded.input_ids, padded.attention_mask, padded.position_ids)
        width = padded.input_ids.shape[1]
        got = []
        for b, i in enumerate(idx):
            answer = list(rows[i][1])
            n = len(answer)
            lp = scorer.log_probs(hidden[b, width - n - 1 : width - 1])  # [n, V]: the positions that predict the answer
            picked = lp[torch.arange(n), torch.tensor(answer, dtype=torch.long, device=lp.device)]
            got.append((float(picked.sum()), n))
        return got

    for idx, got in split_on_oom(order, batch_size, run, "answer log-likelihood"):
        for i, value in zip(idx, got):
            out[i] = value
    return out
