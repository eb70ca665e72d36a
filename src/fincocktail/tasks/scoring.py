"""Scores of answers that must be read before they can be compared: numbers, entity lists, open answers.

They live with the tasks, next to the extraction they read with (`parse_number`,
`entities_of`, `extract_number`); the `metrics` package below keeps what only counts (SQuAD's
text scores in `metrics.text`, the entity-level F1 of read lists in `metrics.entities`). Each
follows the evaluation its anchor uses, so numbers are comparable with published ones:

* numbers (FinQA, ConvFinQA, GSM8K): a prediction matches when it is within a relative
  tolerance of the gold (1% by default for FinQA-style tasks, exact for GSM8K). A number
  written with "%" is read both as written and divided by 100, as FinQA's evaluation turns
  "12.5%" into 0.125; so "12.5%" matches a gold 0.125 and a gold 12.5. An *unmarked* 12.5 does
  not match 0.125: accepting any factor of 100 would also accept "500" for a gold "5.0".
  A scale word is read both ways too ("5.2 million" matches 5.2 and 5200000).
* entities (FinNER): canonical entity answers read back into lists and scored by
  `metrics.entities` (FinGPT's placement on the sentence, seqeval's entity-level F1).
* open answers (FinanceBench): `metrics.text`'s token F1 and exact match, plus numeric accuracy
  over the golds that are one number.

A parse failure (prediction None) is always scored as wrong and reported as a rate.
"""

from __future__ import annotations

from typing import Sequence

from fincocktail.tasks.answers import ParsedNumber, entities_of, extract_number, parse_number
from fincocktail.metrics.classification import parse_failure_rate
from fincocktail.metrics.entities import entity_list_scores, same_entities
from fincocktail.metrics.per_example import check_lengths, mean
from fincocktail.metrics.text import exact_match, token_f1

# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------

DEFAULT_RTOL = 0.01
EXACT_RTOL = 1e-9  # "exact": equal up to float representation


def _as_number(value: str | float | int | ParsedNumber | None) -> ParsedNumber | None:
    if value is None:
        return None
    if isinstance(value, ParsedNumber):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ParsedNumber(float(value))
    if isinstance(value, str):
        return parse_number(value)
    raise TypeError(f"cannot read {value!r} as a number")


def _readings(number: ParsedNumber) -> list[float]:
    values = [number.value]
    if number.scale:
        values.append(number.value * number.factor)
    if number.percent:
        values += [v / 100 for v in values]
    return values


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return abs(a - b) <= max(rtol * abs(b), atol)


def numbers_match(
    prediction: str | float | ParsedNumber | None,
    gold: str | float | ParsedNumber,
    rtol: float = DEFAULT_RTOL,
    atol: float = 1e-9,
) -> bool:
    """True when the prediction is within `rtol` (relative to the gold) of the gold.

    Both sides may be percent-marked or carry a scale word; every reading of each is tried
    (see the module docstring). An unreadable prediction never matches.
    """
    pred = _as_number(prediction)
    ref = _as_number(gold)
    if pred is None or ref is None:
        return False
    return any(_close(p, g, rtol, atol) for p in _readings(pred) for g in _readings(ref))


def answers_match(prediction: str | None, gold: str, rtol: float = DEFAULT_RTOL) -> bool:
    """Numeric match when the gold is a number, else normalised exact match (FinQA's yes/no)."""
    if prediction is None:
        return False
    if parse_number(gold) is not None:
        return numbers_match(prediction, gold, rtol=rtol)
    return exact_match(prediction, gold)


def numeric_scores(predictions: Sequence[str | None], golds: Sequence[str], rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """`accuracy` (within `rtol`), `exact_match` (equal as numbers), `parse_failure_rate`."""
    check_lengths(predictions, golds)
    correct = [answers_match(p, g, rtol) for p, g in zip(predictions, golds)]
    exact = [answers_match(p, g, EXACT_RTOL) for p, g in zip(predictions, golds)]
    return {
        "accuracy": mean([float(c) for c in correct]),
        "exact_match": mean([float(c) for c in exact]),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


# --------------------------------------------------------------------------------------------
# entities
# --------------------------------------------------------------------------------------------


def entity_scores(
    predictions: Sequence[str | None],
    golds: Sequence[str],
    tokens: Sequence[Sequence[str]],
) -> dict[str, float]:
    """Entity-level micro P/R/F1 (seqeval) from canonical entity answers (see `extract_entities`)."""
    check_lengths(predictions, golds)
    pred_lists = [entities_of(p) for p in predictions]
    gold_lists = []
    for g in golds:
        parsed = entities_of(g)
        if parsed is None:
            raise ValueError(f"gold entity answer {g!r} is not in the canonical format")
        gold_lists.append(parsed)
    return {
        **entity_list_scores(pred_lists, gold_lists, tokens),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


def entities_equal(prediction: str | None, gold: str) -> bool:
    """Per-sentence correctness: the same multiset of (entity, type), spacing and case aside."""
    pred = entities_of(prediction)
    ref = entities_of(gold)
    if pred is None or ref is None:
        return False
    return same_entities(pred, ref)


# --------------------------------------------------------------------------------------------
# open answers
# --------------------------------------------------------------------------------------------


def open_answer_scores(predictions: Sequence[str | None], golds: Sequence[str], rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """`token_f1`, `exact_match`, and `numeric_accuracy` over the golds that are one number."""
    check_lengths(predictions, golds)
    numeric = [
        numbers_match(_first_number(p), g, rtol=rtol)
        for p, g in zip(predictions, golds)
        if parse_number(g) is not None
    ]
    return {
        "token_f1": mean([token_f1(p, g) for p, g in zip(predictions, golds)]),
        "exact_match": mean([float(exact_match(p, g)) for p, g in zip(predictions, golds)]),
        "numeric_accuracy": mean([float(m) for m in numeric]),
        "numeric_n": float(len(numeric)),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


def _first_number(text: str | None) -> str | None:
    return extract_number(text, "flexible", fallback="first")
