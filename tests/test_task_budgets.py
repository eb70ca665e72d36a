"""Every built-in task's generation budget fits its answers: long enough for the longest gold
answer of the splits we may look at (train, validation), yet not far beyond it, since a model
that never emits a stop string decodes the whole budget (issue 16: budgets fitted to the answers).
Measured with the default model's tokenizer on the real data."""

from __future__ import annotations

import pytest

from fincocktail.tasks.registry import all_tasks

# Budgets deliberately below the longest answer, and why.
CAPPED = {"general": "instruction answers run to ~3,600 tokens; 512 bounds what an open-ended check costs"}
LOOKED_AT = ("train", "validation")  # a budget fitted on test answers would be fitted on test


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from fincocktail.models import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.mark.parametrize("task", [t for t in all_tasks() if any(s in t.card().splits for s in LOOKED_AT)], ids=lambda t: t.id)
def test_the_generation_budget_covers_the_longest_answer_and_not_much_more(task, tokenizer, data_dir):
    longest, where = 0, ""
    for split in (s for s in LOOKED_AT if s in task.card().splits):
        for ex in task.load(split, data_dir):
            n = len(tokenizer(ex.target, add_special_tokens=False)["input_ids"])
            if n > longest:
                longest, where = n, f"{split} {ex.id}"
    budget = task.generation.max_new_tokens
    if task.id in CAPPED:
        assert budget < longest, f"{task.id}: no longer capped ({CAPPED[task.id]}); fit it like the others"
        return
    assert longest <= budget, f"{task.id}: budget {budget} tokens cuts the gold answer of {where} ({longest} tokens)"
    assert budget <= 2 * longest + 16, f"{task.id}: budget {budget} tokens, but the longest answer ({where}) is {longest}"
