"""Choice mode: the log-probability of each allowed answer given the prompt.

One forward pass per batch of prompts reads the distribution of every choice's first token
from the prompt's last position. Only when some choice has more than one token does a second,
small forward run, over those choices' remaining tokens, continuing from the prompts' KV cache
(repeated per choice). The prompt is therefore computed once per example however many choices
it has, and the LM head runs only on the positions that are read.

It lives under `models` (below training and evaluation) because both score choices with it:
evaluation's choice mode, and training's learning curves (`training.curves`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from fincocktail.errors import ModelError
from fincocktail.tasks.prompts import PromptStyle, encoder_for, render
from fincocktail.tasks.base import Example, Task
from fincocktail.models.forward import Scorer, left_pad, run_prompts, shared_prefix_cache, split_on_oom


@dataclass(frozen=True)
class ChoiceItem:
    prompt_ids: list[int]
    choice_ids: list[list[int]]  # token ids of each choice (its separator included, no EOS)


@dataclass(frozen=True)
class ChoiceScores:
    logprobs: list[float]  # sum of the choice's token log-probs
    n_tokens: list[int]

    @property
    def logprobs_norm(self) -> list[float]:
        """Per-token average, the usual length-normalised variant."""
        return [lp / max(n, 1) for lp, n in zip(self.logprobs, self.n_tokens)]


def choice_item(
    task: Task, example: Example, style: PromptStyle, tokenizer: Any, max_prompt_tokens: int | None = None,
    encode: Callable[..., tuple[list[int], list[int]]] | None = None,
) -> ChoiceItem:
    """A zero-shot example as choice mode scores it: the prompt's ids (cut from the left to
    `max_prompt_tokens`, keeping the question and the answer cue) and each choice's target ids.

    The same texts and tokenization as evaluation's zero-shot choice mode (`tasks.prompts.render`,
    the prompt through `encode_pair` without EOS, each choice's target without special tokens),
    so a learning curve's gold probability is the number an evaluation of the checkpoint reads.
    """
    choices = list(example.choices or task.labels or ())
    if not choices:
        raise ValueError(f"task {task.id!r}: example {example.id} has no choices to score")
    ids = (encode or encoder_for(None))(tokenizer, render(task, example, style=style, tokenizer=tokenizer), False)[0]
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        ids = ids[-max_prompt_tokens:]
    targets = [render(task, replace(example, target=c), style=style, tokenizer=tokenizer).target for c in choices]
    return ChoiceItem(list(ids), [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets])


def close_margin(logprobs: Sequence[float], logprobs_norm: Sequence[float]) -> float:
    """Nats between the two best choices, raw or length-normalised, whichever is smaller: how
    close a call is for either ranking (what `--dtype auto` compares with its re-check margin)."""

    def gap(scores: Sequence[float]) -> float:
        top = sorted(scores, reverse=True)
        return top[0] - top[1] if len(top) > 1 else float("inf")

    return min(gap(logprobs), gap(logprobs_norm))


def pick(scores: Sequence[float]) -> tuple[int, bool]:
    """Index of the best score and whether it was tied; ties go to the first choice listed.

    NaN scores (a model with NaN weights) lose to every number; all-NaN is a one-line error,
    not an IndexError.
    """
    if all(math.isnan(s) for s in scores):
        raise ModelError("the model gives NaN log-probabilities for every choice (NaN weights, e.g. a diverged adapter); check the model")
    best = max(s for s in scores if not math.isnan(s))
    winners = [i for i, s in enumerate(scores) if s == best]
    return winners[0], len(winners) > 1


@torch.inference_mode()
def score_choices(
    scorer: Scorer,
    items: Sequence[ChoiceItem],
    pad_id: int,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
    share_prefix: bool = True,
    max_batch_tokens: int | None = None,
) -> list[ChoiceScores]:
    """Score every choice of every item. Results come back in the order of `items`.

    Items are processed longest prompt first, so padding inside a batch stays small and the
    memory peak shows up at the start rather than after an hour; a batch that runs out of GPU
    memory is halved and retried (`forward.split_on_oom`). When all prompts start with
    the same tokens (the instruction; k-shot demonstrations), that prefix runs once and every
    batch continues from a copy of its KV cache. `max_batch_tokens` (on GPUs,
    `forward.memory_batch_tokens`) also bounds a batch's tokens, prompt plus longest choice.
    """
    for it in items:
        if not it.choice_ids or any(len(c) == 0 for c in it.choice_ids):
            raise ValueError("every choice must have at least one token")
    shared, prefix = shared_prefix_cache(scorer, [it.prompt_ids for it in items]) if share_prefix else (0, None)
    order = sorted(range(len(items)), key=lambda i: (-len(items[i].prompt_ids), i))
    results: list[ChoiceScores | None] = [None] * len(items)

    def run(idx: list[int]) -> list[ChoiceScores]:
        return _score_batch(scorer, [items[i] for i in idx], pad_id, prefix, shared)

    widths = [len(it.prompt_ids) - shared + max(len(c) for c in it.choice_ids) for it in items]
    for idx, scores in split_on_oom(order, batch_size, run, "choice scoring", widths, max_batch_tokens):
        for i, res in zip(idx, scores):
            results[i] = res
        if on_batch:
            on_batch(len(idx))
    return results  # type: ignore[return-value]


def _score_batch(scorer: Scorer, batch: list[ChoiceItem], pad_id: int, prefix: Any, shared: int) -> list[ChoiceScores]:
    padded = left_pad([it.prompt_ids[shared:] for it in batch], pad_id)
    multi = any(len(c) > 1 for it in batch for c in it.choice_ids)
    hidden, cache, mask = run_prompts(scorer, padded, prefix, shared, use_cache=multi)
    first = scorer.log_probs(hidden[:, -1, :])  # [B, V]: next-token distribution after each prompt
    sums: list[list[float]] = []
    for b, it in enumerate(batch):
        sums.append([float(first[b, c[0]]) for c in it.choice_ids])
    if multi:
        rows = [(b, j) for b, it in enumerate(batch) for j, c in enumerate(it.choice_ids) if len(c) > 1]
        conts = [batch[b].choice_ids[j][:-1] for b, j in rows]  # inputs that predict tokens 2..n
        width = max(len(c) for c in conts)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        cmask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, c in enumerate(conts):
            ids[r, : len(c)] = torch.tensor(c, dtype=torch.long)
            cmask[r, : len(c)] = 1
        src = torch.tensor([b for b, _ in rows], dtype=torch.long)
        cache.reorder_cache(src.to(scorer.device))
        mask2 = torch.cat([mask[src], cmask], dim=1)
        pos2 = (shared + padded.lengths[src]).unsqueeze(1) + torch.arange(width).unsqueeze(0)
        h2, _ = scorer.hidden(ids, mask2, pos2, cache=cache, use_cache=True)
        sel_r, sel_t, targets = [], [], []
        for r, (b, j) in enumerate(rows):
            toks = batch[b].choice_ids[j]
            for t in range(len(toks) - 1):
                sel_r.append(r)
                sel_t.append(t)
                targets.append(toks[t + 1])
        lp = scorer.log_probs(h2[torch.tensor(sel_r), torch.tensor(sel_t)])
        picked = lp[torch.arange(len(targets)), torch.tensor(targets)].tolist()
        for (r, value) in zip(sel_r, picked):
            b, j = rows[r]
            sums[b][j] += value
    return [ChoiceScores(logprobs=s, n_tokens=[len(c) for c in it.choice_ids]) for s, it in zip(sums, batch)]
