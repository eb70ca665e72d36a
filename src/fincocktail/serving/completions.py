"""POST /v1/completions: text completions with `echo` and `logprobs`, as harnesses score models.

lm-evaluation-harness's `local-completions` model scores a multiple-choice continuation by
sending prompt + continuation as token ids with `echo: true, logprobs: 1, max_tokens: 1` and
summing the echoed log-probabilities of the continuation tokens. So the server returns, for
every echoed token, log P(token | tokens before it) from one forward pass over the whole
sequence (None for the first, which has no context), the top-k alternatives, and the character
offsets, exactly in OpenAI's legacy `logprobs` layout. Generation is the same greedy decoder
`fincocktail eval` uses.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fincocktail.serving.openai_fields import (
    COMPLETION_FIELDS, BadRequest, greedy_only, max_tokens_field, model_field, refuse_unsupported, stop_field, stream_fields,
)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_LOGPROBS = 20


@dataclass
class CompletionRequest:
    model: str | None
    prompts: list[str | list[int]]
    max_tokens: int
    stop: tuple[str, ...]
    echo: bool
    logprobs: int | None
    stream: bool
    include_usage: bool


def _prompts(value: Any) -> list[str | list[int]]:
    def is_ids(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in x)

    if isinstance(value, str):
        return [value]
    if is_ids(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, str) or is_ids(x) for x in value):
        return list(value)
    raise BadRequest("'prompt' must be a string, a list of strings, a list of token ids, or a list of such lists")


def parse_completion_request(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if "prompt" not in body:
        raise BadRequest("'prompt' is required")
    refuse_unsupported(body, COMPLETION_FIELDS)
    greedy_only(body)
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= MAX_LOGPROBS):
        raise BadRequest(f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}")
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise BadRequest("'echo' must be true or false")
    stream, include_usage = stream_fields(body)
    if stream and logprobs is not None:
        raise BadRequest("'logprobs' is not supported with 'stream'; send the request without 'stream'")
    max_tokens = max_tokens_field(body)
    return CompletionRequest(
        model=model_field(body),
        prompts=_prompts(body["prompt"]),
        max_tokens=DEFAULT_COMPLETION_TOKENS if max_tokens is None else max_tokens,
        stop=stop_field(body),
        echo=echo,
        logprobs=logprobs,
        stream=stream,
        include_usage=include_usage,
    )


def encode_prompt(tokenizer: Any, prompt: str | list[int]) -> tuple[list[int], str]:
    """Token ids (as `fincocktail eval` encodes a prompt) and the prompt's text, for echo."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), prompt
    vocab = len(tokenizer)
    if any(t >= vocab for t in prompt):
        raise BadRequest(f"'prompt' holds a token id outside this model's vocabulary (size {vocab})")
    return list(prompt), tokenizer.decode(prompt, skip_special_tokens=False)


@torch.inference_mode()
def sequence_logprobs(scorer: Any, ids: list[int]) -> torch.Tensor:
    """[len(ids), vocab] log-probabilities: row i is the distribution of the token after ids[i], one forward pass."""
    seq = torch.tensor([ids], dtype=torch.long)
    hidden, _ = scorer.hidden(seq, None, torch.arange(len(ids)).unsqueeze(0))
    return scorer.log_probs(hidden[0])


@torch.inference_mode()
def token_logprobs(tokenizer: Any, lp: torch.Tensor, ids: list[int], start: int, top: int) -> dict[str, Any]:
    """OpenAI `logprobs` for ids[start:] from `sequence_logprobs` rows (at least len(ids) - 1 of them).

    Each token's log-probability given all before it (None for the first), its top-k
    alternatives, and character offsets from the start of the returned text (the echoed prompt,
    or the completion when `start` is the prompt's length).
    """
    values: list[float | None] = [None]
    tops: list[dict[str, float] | None] = [None]
    if len(ids) > 1:
        rows = lp[: len(ids) - 1]
        values += rows.gather(1, torch.tensor(ids[1:]).unsqueeze(1).to(rows.device)).squeeze(1).tolist()
        best = torch.topk(rows, k=max(top, 1), dim=-1)
        for row_v, row_i in zip(best.values.tolist(), best.indices.tolist()):
            d: dict[str, float] = {}
            for v, i in zip(row_v[:top], row_i[:top]):
                d.setdefault(tokenizer.decode([i]), v)
            tops.append(d)
    base = len(tokenizer.decode(ids[:start], skip_special_tokens=False)) if start else 0
    offsets = [len(tokenizer.decode(ids[:i], skip_special_tokens=False)) - base if i else 0 for i in range(start, len(ids))]
    return {
        "tokens": [tokenizer.decode([t]) for t in ids[start:]],
        "token_logprobs": values[start:],
        "top_logprobs": tops[start:],
        "text_offset": [max(o, 0) for o in offsets],
    }


def _entry(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


@torch.inference_mode()
def chat_logprob_entries(tokenizer: Any, rows: torch.Tensor, produced: list[int], top: int) -> list[dict[str, Any]]:
    """Chat `logprobs.content`: for each generated token, log P(token | all before it) and the `top` best alternatives.

    `rows[k]` is the log-softmax of the step that produced `produced[k]` (`sequence_logprobs` rows).
    """
    chosen = rows.gather(1, torch.tensor(produced).unsqueeze(1).to(rows.device)).squeeze(1).tolist()
    best = torch.topk(rows, k=max(top, 1), dim=-1)
    out = []
    for tok, value, vs, ids in zip(produced, chosen, best.values.tolist(), best.indices.tolist()):
        entry = _entry(tokenizer, tok, value)
        entry["top_logprobs"] = [_entry(tokenizer, i, v) for v, i in zip(vs[:top], ids[:top])]
        out.append(entry)
    return out


def one_token(scorer: Any, tokenizer: Any, ids: list[int], stop: tuple[str, ...]) -> tuple[Any, list[int], torch.Tensor]:
    """Greedy decoding of a single token from the same forward pass that scores the prompt.

    How harnesses score choices (`echo`, `logprobs`, `max_tokens: 1`): one pass instead of a
    prefill for the token and a second pass for the log-probabilities.
    """
    from fincocktail.evaluation.generate import Generation, cut_at_stop, eos_ids

    lp = sequence_logprobs(scorer, ids)
    tok = int(lp[-1].argmax())
    if tok in eos_ids(tokenizer, scorer.model):
        return Generation("", 1, "stop"), [tok], lp
    text, hit = cut_at_stop(tokenizer.decode([tok], skip_special_tokens=True), stop)
    return Generation(text, 1, "stop" if hit else "length"), [tok], lp


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def prompt_ids(tokenizer: Any, prompt: str | list[int], index: int, max_tokens: int, max_context: int | None) -> tuple[list[int], str, int]:
    """The prompt's ids and text, and its token budget cut to what the model's context leaves; a 400 when it does not fit."""
    ids, prompt_text = encode_prompt(tokenizer, prompt)
    if not ids:
        raise BadRequest(f"prompt {index} is empty")
    if max_context:
        if len(ids) > max_context or (len(ids) == max_context and max_tokens > 0):
            raise BadRequest(f"prompt {index} has {len(ids)} tokens; this model's context is {max_context}")
        max_tokens = min(max_tokens, max_context - len(ids))
    return ids, prompt_text, max_tokens


def batched_completion(batcher: Any, tokenizer: Any, max_context: int | None, name: str, req: CompletionRequest,
                       should_stop: Callable[[], bool] | None, timeout_s: float | None) -> dict[str, Any]:
    """A plain (not streamed, no logprobs) text completion decoded through the server's batches (`batching`).

    Why: harnesses send generation requests concurrently (lm-eval's `num_concurrent`) or several
    prompts in one request; both then share forward passes, as chat requests do. The result is
    run_completion's, a "cancelled" choice included when the client has gone.
    """
    from fincocktail.serving.batching import Job, wait_result

    prepared = [prompt_ids(tokenizer, p, i, req.max_tokens, max_context) for i, p in enumerate(req.prompts)]
    jobs = [Job(name, ids, max_tokens, req.stop, should_stop) for ids, _, max_tokens in prepared]
    batcher.enqueue(jobs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        for job in jobs:
            batcher.wait_started(job, None if deadline is None else max(0.0, deadline - time.monotonic()))
        gens = [wait_result(job) for job in jobs]
    except BaseException:
        batcher.abandon(jobs)
        raise
    if any(g.finish_reason == "cancelled" for g in gens):
        return {"choices": [{"finish_reason": "cancelled"}]}
    choices = [{"index": i, "text": (text if req.echo else "") + g.text, "logprobs": None, "finish_reason": g.finish_reason}
               for i, ((_, text, _), g) in enumerate(zip(prepared, gens))]
    prompt_tokens, completion_tokens = sum(len(ids) for ids, _, _ in prepared), sum(g.n_tokens for g in gens)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    return {"id": completion_id(), "object": "text_completion", "created": int(time.time()), "model": name, "choices": choices, "usage": usage}


def run_completion(
    scorer: Any, tokenizer: Any, max_context: int | None, name: str, req: CompletionRequest,
    emit: Callable[[dict[str, Any]], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The whole completion response; with `emit`, also streams it as chunks (text only).

    `should_stop` (the client has gone) cancels decoding: the result then has a choice whose
    finish_reason is "cancelled", which the server does not send.
    """
    from fincocktail.evaluation.generate import Generation, generate_greedy
    from fincocktail.serving.streaming import generate_streamed

    cid, created = completion_id(), int(time.time())
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, prompt in enumerate(req.prompts):
        ids, prompt_text, max_tokens = prompt_ids(tokenizer, prompt, index, req.max_tokens, max_context)

        def chunk(text: str, finish: str | None = None, index: int = index) -> dict[str, Any]:
            return {"id": cid, "object": "text_completion", "created": created, "model": name,
                    "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}

        produced: list[int] = []
        lp = None
        if max_tokens == 0:
            gen = Generation("", 0, "length")
            if emit and req.echo:
                emit(chunk(prompt_text))
        elif max_tokens == 1 and emit is None and req.logprobs is not None:
            gen, produced, lp = one_token(scorer, tokenizer, ids, req.stop)
        elif emit is not None:
            if req.echo:
                emit(chunk(prompt_text))
            gen, produced = generate_streamed(scorer, tokenizer, ids, max_tokens, req.stop, lambda t: emit(chunk(t)), should_stop)
        else:
            gen = generate_greedy(scorer, tokenizer, [ids], max_tokens, req.stop, batch_size=1, should_stop=should_stop,
                                  on_token=lambda _r, t: produced.append(t))[0]
        if gen.finish_reason == "cancelled":
            return {"choices": [{"finish_reason": "cancelled"}]}
        if emit is not None:
            emit(chunk("", gen.finish_reason))
        text = (prompt_text if req.echo else "") + gen.text
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": gen.finish_reason}
        if req.logprobs is not None:
            full = ids + produced
            if lp is None or lp.shape[0] < len(full) - 1:
                lp = sequence_logprobs(scorer, full)
            choice["logprobs"] = token_logprobs(tokenizer, lp, full, 0 if req.echo else len(ids), req.logprobs)
        choices.append(choice)
        prompt_tokens += len(ids)
        completion_tokens += gen.n_tokens
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    if emit is not None and req.include_usage:
        emit({"id": cid, "object": "text_completion", "created": created, "model": name, "choices": [], "usage": usage})
    return {"id": cid, "object": "text_completion", "created": created, "model": name, "choices": choices, "usage": usage}
