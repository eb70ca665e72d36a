"""Open-answer text metrics as SQuAD computes them: answer normalisation, exact match, token F1.

FinanceBench's open answers are scored this way so the numbers are comparable with published
ones: token-overlap F1 and exact match after SQuAD's normalisation (lower case, no punctuation,
no articles, single spaces). A None prediction (a parse failure) scores as wrong.
"""

from __future__ import annotations

import collections
import re
import string

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
