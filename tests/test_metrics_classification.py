"""Classification metrics against scikit-learn and hand-worked cases."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import accuracy_score, f1_score

from fincocktail.metrics.classification import (
    accuracy,
    classification_scores,
    confusion_counts,
    f1,
    grouped_f1,
    parse_failure_rate,
    per_label_f1,
)

LABELS = ["negative", "neutral", "positive"]
UNPARSED = "<unparsed>"


def _random_case(seed: int, n: int, none_rate: float) -> tuple[list[str], list[str | None]]:
    rng = random.Random(seed)
    gold = [rng.choice(LABELS) for _ in range(n)]
    pred: list[str | None] = [None if rng.random() < none_rate else rng.choice(LABELS) for _ in range(n)]
    return gold, pred


@pytest.mark.parametrize("seed", range(8))
def test_matches_sklearn_without_parse_failures(seed: int) -> None:
    gold, pred = _random_case(seed, n=50 + seed * 7, none_rate=0.0)
    assert accuracy(gold, pred) == pytest.approx(accuracy_score(gold, pred))
    assert f1(gold, pred, "macro") == pytest.approx(f1_score(gold, pred, average="macro"))
    assert f1(gold, pred, "weighted") == pytest.approx(f1_score(gold, pred, average="weighted"))


@pytest.mark.parametrize("seed", range(8))
def test_parse_failures_count_as_wrong_like_an_extra_class_outside_the_average(seed: int) -> None:
    gold, pred = _random_case(100 + seed, n=60, none_rate=0.3)
    as_class = [p if p is not None else UNPARSED for p in pred]
    labels = sorted(set(gold) | {p for p in pred if p is not None})
    scores = classification_scores(gold, pred)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, as_class))
    assert scores["f1_macro"] == pytest.approx(f1_score(gold, as_class, labels=labels, average="macro"))
    assert scores["f1_weighted"] == pytest.approx(f1_score(gold, as_class, labels=labels, average="weighted"))
    assert scores["parse_failure_rate"] == pytest.approx(sum(p is None for p in pred) / len(pred))
    assert scores["n"] == len(gold)


def test_hand_worked_case() -> None:
    gold = ["positive", "positive", "negative", "neutral"]
    pred = ["positive", "negative", "negative", None]
    # positive: tp 1, fn 1 -> F1 2/3; negative: tp 1, fp 1 -> 2/3; neutral: fn 1 -> 0
    per = per_label_f1(gold, pred)
    assert per["positive"] == (pytest.approx(2 / 3), 2)
    assert per["negative"] == (pytest.approx(2 / 3), 1)
    assert per["neutral"] == (0.0, 1)
    assert f1(gold, pred, "macro") == pytest.approx(4 / 9)
    assert f1(gold, pred, "weighted") == pytest.approx((2 / 3 * 2 + 2 / 3 * 1 + 0 * 1) / 4)
    assert accuracy(gold, pred) == 0.5
    assert parse_failure_rate(pred) == 0.25
    assert confusion_counts(gold, pred) == {
        "positive": {"positive": 1, "negative": 1},
        "negative": {"negative": 1},
        "neutral": {UNPARSED: 1},
    }


def test_all_unparsed_scores_zero() -> None:
    gold = ["Yes", "No", "No"]
    scores = classification_scores(gold, [None, None, None])
    assert scores["accuracy"] == 0.0 and scores["f1_macro"] == 0.0 and scores["f1_weighted"] == 0.0
    assert scores["parse_failure_rate"] == 1.0


def test_grouped_f1_matches_sklearn_per_group() -> None:
    rng = random.Random(7)
    groups = [rng.choice(["up", "down", "past"]) for _ in range(90)]
    gold = [rng.choice(["Yes", "No"]) for _ in groups]
    pred = [rng.choice(["Yes", "No", None]) for _ in groups]
    per = grouped_f1(gold, pred, groups, average="weighted")
    assert set(per) == {"up", "down", "past"}
    for g, value in per.items():
        idx = [i for i, x in enumerate(groups) if x == g]
        t = [gold[i] for i in idx]
        p = [pred[i] if pred[i] is not None else UNPARSED for i in idx]
        labels = sorted(set(t) | {x for x in p if x != UNPARSED})
        assert value == pytest.approx(f1_score(t, p, labels=labels, average="weighted"))


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        f1(["a"], ["a"], average="micro-ish")
