"""Entity-level scores of entity lists that are already read (FinNER), as FinGPT computes them.

Each (entity, type) of the gold and of the prediction is placed on the sentence's tokens
(first free occurrence, case- and spacing-insensitive), giving IOB2 tag sequences that seqeval
scores at entity level (micro P/R/F1). FinGPT drops predicted entities that do not occur in the
sentence, which hides hallucinations; our headline `entity_f1` counts them as false positives,
and `entity_f1_fingpt` reproduces FinGPT's number.

Reading the lists out of model text is the task's job (`tasks.answers`); this module only
counts, so it takes the lists and never a string.
"""

from __future__ import annotations

import functools
from typing import Sequence

from fincocktail.metrics.per_example import check_lengths, mean

Entity = tuple[str, str]  # (surface text, type), type one of ENTITY_LABELS' keys
ENTITY_LABELS = {"person": "PER", "organization": "ORG", "location": "LOC"}


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


def same_entities(prediction: Sequence[Entity], gold: Sequence[Entity]) -> bool:
    """The same multiset of (entity, type), spacing and case aside: a sentence answered right."""
    return sorted((_squash(t), k) for t, k in prediction) == sorted((_squash(t), k) for t, k in gold)


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
    check_lengths(predictions, golds)
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


def entity_list_scores(
    predictions: Sequence[Sequence[Entity] | None],
    golds: Sequence[Sequence[Entity]],
    tokens: Sequence[Sequence[str]],
) -> dict[str, float]:
    """Entity-level micro P/R/F1 (seqeval), FinGPT's F1 and the share of sentences answered exactly.

    A None prediction (unreadable) places nothing and never answers its sentence exactly.
    """
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    (y_true, y_pred), (f_true, f_pred) = _entity_sequences_both(predictions, golds, tokens)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    _, _, f1_fingpt, _ = precision_recall_fscore_support(f_true, f_pred, average="micro", zero_division=0)
    exact = [p is not None and same_entities(p, g) for p, g in zip(predictions, golds)]
    return {
        "entity_f1": float(f1),
        "entity_precision": float(precision),
        "entity_recall": float(recall),
        "entity_f1_fingpt": float(f1_fingpt),
        "sentence_accuracy": mean([float(e) for e in exact]),
    }
