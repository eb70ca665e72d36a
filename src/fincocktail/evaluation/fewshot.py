"""Prompts with k demonstrations, for local models and for chat APIs alike.

Demonstrations are drawn once per task from its train split with a seeded RNG and the same
demonstrations precede every evaluated example (as in FinGPT's and lm-eval's fixed-shot
setups): results are reproducible and the shared prefix is cheap. They are rendered with the
task's own template: in the instruction style as complete `prompt + answer` blocks separated
by a blank line; in the chat style as earlier user/assistant turns.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from fincocktail.errors import ConfigError
from fincocktail.tasks.prompts import PromptPair, PromptStyle, render, user_text
from fincocktail.tasks.base import Example, Task

DEMO_SEPARATOR = "\n\n"


def select_demos(task: Task, data_dir: Path, k: int, seed: int = 0, exclude: Sequence[str] = ()) -> list[Example]:
    """`k` examples of the task's train split, the same for a given seed on every machine."""
    if k <= 0:
        return []
    if "train" not in task.splits:
        raise ConfigError(f"task {task.id!r} has no train split to draw {k} demonstrations from; use --shots 0")
    pool = [ex for ex in task.load("train", data_dir) if ex.id not in set(exclude)]
    if len(pool) < k:
        raise ConfigError(f"task {task.id!r}: --shots {k} but its train split has only {len(pool)} examples")
    rng = random.Random(f"{task.id}:{seed}")
    return rng.sample(pool, k)


def _instruction(task: Task, example: Example) -> str:
    return example.meta.get("instruction") or task.instruction


def chat_messages(task: Task, example: Example, demos: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The conversation sent to a chat model: one user/assistant turn per demonstration, then the question."""
    messages: list[dict[str, str]] = []
    for d in demos:
        messages.append({"role": "user", "content": user_text(_instruction(task, d), d.input)})
        messages.append({"role": "assistant", "content": d.target})
    messages.append({"role": "user", "content": user_text(_instruction(task, example), example.input)})
    return messages


def build_pair(
    task: Task,
    example: Example,
    style: PromptStyle,
    tokenizer: Any | None,
    demos: Sequence[Example] = (),
) -> PromptPair:
    """Prompt and target for `example`, demonstrations prepended. Zero-shot is exactly `tasks.prompts.render`."""
    if not demos:
        return render(task, example, style=style, tokenizer=tokenizer)
    if style == "instruction":
        prefix = "".join(
            (p := render(task, d, style="instruction")).prompt + p.target + DEMO_SEPARATOR for d in demos
        )
        pair = render(task, example, style="instruction")
        return PromptPair(prompt=prefix + pair.prompt, target=pair.target)
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("prompt style 'chat' needs a tokenizer with a chat template; use --style instruction")
        prompt = tokenizer.apply_chat_template(
            chat_messages(task, example, demos), tokenize=False, add_generation_prompt=True
        )
        return PromptPair(prompt=prompt, target=example.target)
    raise ConfigError(f"unknown prompt style {style!r}; expected 'instruction' or 'chat'")


def choice_target(task: Task, example: Example, choice: str, style: PromptStyle, tokenizer: Any | None) -> str:
    """The target text of one choice, with the separator the style puts before answers."""
    return render(task, _with_target(example, choice), style=style, tokenizer=tokenizer).target


def _with_target(example: Example, target: str) -> Example:
    from dataclasses import replace

    return replace(example, target=target)
