"""Prompt templates, in one place, and the one tokenization both training and evaluation use.

Two styles: FinGPT's `Instruction / Input / Answer` text, and the model's own chat template.
The answer separator belongs to the *target* (" positive" after "Answer:"), and prompt and
target are tokenized separately and concatenated. Training masks the prompt ids and scores the
target ids; evaluation scores exactly the same target ids. Keeping this in one function is what
keeps the two consistent (trl, for instance, silently drops a trailing prompt space).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable, Literal, Protocol

PromptStyle = Literal["instruction", "chat"]

# Bump when the text below changes: it is part of every task's version.
TEMPLATE_VERSION = "v1"

INSTRUCTION_TEMPLATE = "Instruction: {instruction}\nInput: {input}\nAnswer:"
INSTRUCTION_TEMPLATE_NO_INPUT = "Instruction: {instruction}\nAnswer:"


class HasInstruction(Protocol):
    """What `render` reads of a task (`tasks.base.Task`). `tasks.base` imports this module (a
    task's version holds TEMPLATE_VERSION), so importing `Task` back would close a cycle; the
    shape is named here instead."""

    @property
    def instruction(self) -> str: ...


class Promptable(Protocol):
    """What `render` reads of an example (`tasks.base.Example`), named here for the same reason."""

    @property
    def input(self) -> str: ...

    @property
    def target(self) -> str: ...

    @property
    def meta(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class PromptPair:
    prompt: str
    target: str  # includes its leading separator for the instruction style


def user_text(instruction: str, input_text: str) -> str:
    """The user turn of a prompt: the instruction, then the input after a blank line (few-shot
    demonstrations in `evaluation.fewshot` are written the same way as the question itself)."""
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def render(
    task: HasInstruction,
    example: Promptable,
    style: PromptStyle = "instruction",
    tokenizer: Any | None = None,
    instruction: str | None = None,
) -> PromptPair:
    """Render `example` of `task` as a prompt and its target answer.

    `instruction` overrides the task's instruction (instruction-data tasks carry their own
    per-example instruction in `example.meta["instruction"]`).
    """
    instr = instruction or example.meta.get("instruction") or task.instruction
    return render_text(instr, example.input, example.target, style=style, tokenizer=tokenizer)


def render_text(
    instruction: str,
    input_text: str,
    target: str,
    style: PromptStyle = "instruction",
    tokenizer: Any | None = None,
) -> PromptPair:
    if style == "instruction":
        template = INSTRUCTION_TEMPLATE if input_text else INSTRUCTION_TEMPLATE_NO_INPUT
        prompt = template.format(instruction=instruction, input=input_text)
        return PromptPair(prompt=prompt, target=" " + target if target else "")
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; use style 'instruction'")
        messages = [{"role": "user", "content": user_text(instruction, input_text)}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return PromptPair(prompt=prompt, target=target)
    raise ValueError(f"unknown prompt style {style!r}; expected 'instruction' or 'chat'")


def encode_pair(tokenizer: Any, pair: PromptPair, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the target, tokenized separately.

    The prompt gets the tokenizer's special prefix (BOS) if it uses one; the target never does.
    With `add_eos` the target ends with EOS so a trained model learns to stop.
    """
    prompt_ids = tokenizer(pair.prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(pair.target, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        target_ids = list(target_ids) + [tokenizer.eos_token_id]
    return list(prompt_ids), list(target_ids)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of everything that decides a tokenizer's output (its full definition and special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = [type(tokenizer).__name__] + [
        str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "eos_token_id", "add_bos_token", "add_eos_token")
    ]
    return hashlib.sha256((body + "\0" + "\0".join(extra)).encode("utf-8")).hexdigest()


class TokenCache:
    """`encode_pair` memoised by content, for code that tokenizes the same texts again and again.

    A sweep worker trains and evaluates many runs on the same examples: the single-task runs,
    every cocktail that contains a task, each evaluation. Handing one cache to the training data
    and to the evaluator of every run tokenizes each (tokenizer, prompt, target) once per
    worker. The key is a sha256 of the tokenizer's full definition and the texts, so another
    tokenizer or template never gets a stale entry. Past `max_entries` it starts over.
    """

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._fingerprints: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def _fingerprint(self, tokenizer: Any) -> str:
        try:
            return self._fingerprints[tokenizer]
        except (KeyError, TypeError):
            pass
        fp = tokenizer_fingerprint(tokenizer)
        try:
            self._fingerprints[tokenizer] = fp
        except TypeError:  # pragma: no cover - not weak-referenceable
            pass
        return fp

    def encode_pair(self, tokenizer: Any, pair: PromptPair, add_eos: bool = True) -> tuple[list[int], list[int]]:
        """What `encode_pair(tokenizer, pair, add_eos)` returns, computed once per content."""
        key = hashlib.sha256(f"{self._fingerprint(tokenizer)}\0{int(add_eos)}\0{pair.prompt}\0{pair.target}".encode()).digest()
        hit = self._entries.get(key)
        if hit is None:
            self.misses += 1
            prompt_ids, target_ids = encode_pair(tokenizer, pair, add_eos)
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            hit = self._entries[key] = (tuple(prompt_ids), tuple(target_ids))
        else:
            self.hits += 1
        return list(hit[0]), list(hit[1])


Encoder = Callable[[Any, PromptPair, bool], "tuple[list[int], list[int]]"]


def encoder_for(tokens: TokenCache | None) -> Encoder:
    """`encode_pair` itself, or through the caller's cache when it keeps one across runs."""
    return tokens.encode_pair if tokens is not None else encode_pair
