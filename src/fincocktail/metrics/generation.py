"""Metrics for generated answers: numeric match, exact match, entity-level F1, token-overlap F1.

Each follows the evaluation its anchor uses, so numbers are comparable with published ones:

* numbers (FinQA, ConvFinQA, GSM8K): a prediction matches when it is within a relative
  tolerance of the gold (1% by default for FinQA-style tasks, exact for GSM8K). A number
  written with "%" is read both as written and divided by 100, as FinQA's evaluation turns
  "12.5%" into 0.125; so "12.5%" matches a gold 0.125 and a gold 12.5. An *unmarked* 12.5 does
  not match 0.125: accepting any factor of 100 would also accept "500" for a gold "5.0".
  A scale word is read both ways too ("5.2 million" matches 5.2 and 5200000).
* entities (FinNER): FinGPT's procedure. Each (entity, type) of the gold and of the prediction
  is placed on the sentence's tokens (first free occurrence, case- and spacing-insensitive),
  giving IOB2 tag sequences that seqeval scores at entity level (micro P/R/F1). FinGPT drops
  predicted entities that do not occur in the sentence, which hides hallucinations; our
  headline `entity_f1` counts them as false positives, and `entity_f1_fingpt` reproduces
  FinGPT's number.
* open answers (FinanceBench): SQuAD's token-overlap F1 and exact match after SQuAD's answer
  normalisation (lower case, no punctuation, no articles, single spaces).

A parse failure (prediction None) is always scored as wrong and reported as a rate.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from typing import Sequence

from fincocktail.metrics.classification import parse_failure_rate
from fincocktail.answers import Entity, ParsedNumber, entities_of, extract_number, parse_number

# --------------------------------------------------------------------------------------------
# shared
# --------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _check_lengths(predictions: Sequence[object], golds: Sequence[object]) -> None:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")


# --------------------------------------------------------------------------------------------
# SQuAD normalisation, exact match, token F1
# --------------------------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, gold: str) -> bool:
    if prediction is None:
        return False
    return normalize_answer(prediction) == normalize_answer(gold)


def token_f1(prediction: str | None, gold: str) -> float:
    """SQuAD's bag-of-tokens F1 between a prediction and one gold answer."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


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
    _check_lengths(predictions, golds)
    correct = [answers_match(p, g, rtol) for p, g in zip(predictions, golds)]
    exact = [answers_match(p, g, EXACT_RTOL) for p, g in zip(predictions, golds)]
    return {
        "accuracy": _mean([float(c) for c in correct]),
        "exact_match": _mean([float(c) for c in exact]),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


# --------------------------------------------------------------------------------------------
# entities
# --------------------------------------------------------------------------------------------

ENTITY_LABELS = {"person": "PER", "organization": "ORG", "location": "LOC"}


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


def _free_span(tokens: Sequence[str], target: str, tags: Sequence[str]) -> tuple[int, int] | None:
    if not target:
        return None
    for i in range(len(tokens)):
        acc = ""
        for j in range(i, len(tokens)):
            if tags[j] != "O":
                break
            acc += tokens[j]
            if acc == target:
                return i, j + 1
            if not target.startswith(acc):
                break
    return None


def place_entities(tokens: Sequence[str], entities: Sequence[Entity]) -> tuple[list[str], list[Entity]]:
    """IOB2 tags for `entities` on `tokens`, and the entities that could not be placed.

    Like FinGPT's `cvt_text_to_pred`, each entity goes to its first occurrence not already
    taken; unlike it, matching ignores case and spacing ("Inc." finds the tokens "Inc" ".").
    """
    squashed = [_squash(t) for t in tokens]
    tags = ["O"] * len(tokens)
    unplaced: list[Entity] = []
    for text, kind in entities:
        label = ENTITY_LABELS.get(kind)
        span = _free_span(squashed, _squash(text), tags) if label else None
        if span is None or label is None:
            unplaced.append((text, kind))
            continue
        start, end = span
        tags[start] = f"B-{label}"
        for k in range(start + 1, end):
            tags[k] = f"I-{label}"
    return tags, unplaced


def entity_sequences(
    predictions: Sequence[Sequence[Entity] | None],
    golds: Sequence[Sequence[Entity]],
    tokens: Sequence[Sequence[str]],
    count_unplaced: bool = True,
) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted IOB2 sequences for seqeval.

    With `count_unplaced`, every entity that cannot be placed on the sentence gets an extra
    position of its own (tagged only on its side), so seqeval counts a hallucinated entity as a
    false positive (and an unplaceable gold one as a false negative).
    """
    both = _entity_sequences_both(predictions, golds, tokens)
    return both[0] if count_unplaced else both[1]


_Sequences = tuple[list[list[str]], list[list[str]]]


@functools.lru_cache(maxsize=8192)
def _place_cached(tokens: tuple[str, ...], entities: tuple[Entity, ...]) -> tuple[tuple[str, ...], tuple[Entity, ...]]:
    """`place_entities`, memoised: the bootstrap re-scores the same sentences many times."""
    tags, unplaced = place_entities(tokens, entities)
    return tuple(tags), tuple(unplaced)


def _drop_shared_o(gold_tags: list[str], pred_tags: list[str]) -> tuple[list[str], list[str]]:
    """Squeeze runs of positions that are O on both sides to one O.

    Entity counts cannot change: every placed entity starts with B- and is contiguous on its
    own side, so no entity spans a position that is O on that side. It only keeps seqeval fast
    on long filings sentences (the bootstrap scores thousands of resamples).
    """
    g_out: list[str] = []
    p_out: list[str] = []
    for g, p in zip(gold_tags, pred_tags):
        if g == "O" and p == "O" and g_out and g_out[-1] == "O" and p_out[-1] == "O":
            continue
        g_out.append(g)
        p_out.append(p)
    return g_out, p_out


def _entity_sequences_both(
    predictions: Sequence[Sequence[Entity] | None],
    golds: Sequence[Sequence[Entity]],
    tokens: Sequence[Sequence[str]],
) -> tuple[_Sequences, _Sequences]:
    """(sequences counting unplaced entities, sequences ignoring them), from one placement."""
    _check_lengths(predictions, golds)
    counted: _Sequences = ([], [])
    ignored: _Sequences = ([], [])
    for pred, gold, toks in zip(predictions, golds, tokens):
        key = tuple(toks)
        gold_tags, gold_left = _place_cached(key, tuple(gold))
        pred_tags, pred_left = _place_cached(key, tuple(pred or ()))
        gold_tags, pred_tags = _drop_shared_o(list(gold_tags), list(pred_tags))
        ignored[0].append(gold_tags)
        ignored[1].append(pred_tags)
        extra_gold = [f"B-{ENTITY_LABELS.get(kind, 'MISC')}" for _, kind in gold_left] + ["O"] * len(pred_left)
        extra_pred = ["O"] * len(gold_left) + [f"B-{ENTITY_LABELS.get(kind, 'MISC')}" for _, kind in pred_left]
        counted[0].append(gold_tags + extra_gold)
        counted[1].append(pred_tags + extra_pred)
    return counted, ignored


def entity_scores(
    predictions: Sequence[str | None],
    golds: Sequence[str],
    tokens: Sequence[Sequence[str]],
) -> dict[str, float]:
    """Entity-level micro P/R/F1 (seqeval) from canonical entity answers (see `extract_entities`)."""
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    _check_lengths(predictions, golds)
    pred_lists = [entities_of(p) for p in predictions]
    gold_lists = []
    for g in golds:
        parsed = entities_of(g)
        if parsed is None:
            raise ValueError(f"gold entity answer {g!r} is not in the canonical format")
        gold_lists.append(parsed)
    (y_true, y_pred), (f_true, f_pred) = _entity_sequences_both(pred_lists, gold_lists, tokens)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    _, _, f1_fingpt, _ = precision_recall_fscore_support(f_true, f_pred, average="micro", zero_division=0)
    exact = [
        p is not None and sorted((_squash(t), k) for t, k in p) == sorted((_squash(t), k) for t, k in g)
        for p, g in zip(pred_lists, gold_lists)
    ]
    return {
        "entity_f1": float(f1),
        "entity_precision": float(precision),
        "entity_recall": float(recall),
        "entity_f1_fingpt": float(f1_fingpt),
        "sentence_accuracy": _mean([float(e) for e in exact]),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


def entities_equal(prediction: str | None, gold: str) -> bool:
    """Per-sentence correctness: the same multiset of (entity, type), spacing and case aside."""
    pred = entities_of(prediction)
    ref = entities_of(gold)
    if pred is None or ref is None:
        return False
    return sorted((_squash(t), k) for t, k in pred) == sorted((_squash(t), k) for t, k in ref)


# --------------------------------------------------------------------------------------------
# open answers
# --------------------------------------------------------------------------------------------


def open_answer_scores(predictions: Sequence[str | None], golds: Sequence[str], rtol: float = DEFAULT_RTOL) -> dict[str, float]:
    """`token_f1`, `exact_match`, and `numeric_accuracy` over the golds that are one number."""
    _check_lengths(predictions, golds)
    numeric = [
        numbers_match(_first_number(p), g, rtol=rtol)
        for p, g in zip(predictions, golds)
        if parse_number(g) is not None
    ]
    return {
        "token_f1": _mean([token_f1(p, g) for p, g in zip(predictions, golds)]),
        "exact_match": _mean([float(exact_match(p, g)) for p, g in zip(predictions, golds)]),
        "numeric_accuracy": _mean([float(m) for m in numeric]),
        "numeric_n": float(len(numeric)),
        "parse_failure_rate": parse_failure_rate(predictions),
        "n": float(len(golds)),
    }


def _first_number(text: str | None) -> str | None:
    return extract_number(text, "flexible", fallback="first")
