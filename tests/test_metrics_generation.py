"""Generation metrics against hand-worked cases and independent computations."""

from __future__ import annotations

import collections
import re
import string

import pytest
from seqeval.metrics import f1_score as seqeval_f1

from fincocktail.metrics.entities import entity_sequences, place_entities
from fincocktail.metrics.text import exact_match, normalize_answer, token_f1
from fincocktail.tasks.answers import format_entities
from fincocktail.tasks.scoring import (
    answers_match,
    entities_equal,
    entity_scores,
    numbers_match,
    numeric_scores,
    open_answer_scores,
)

# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("127.4", "127.4", True),
        ("127", "127.4", True),  # 0.3% off
        ("126", "127.4", False),  # 1.1% off
        ("12.5%", "0.125", True),  # percent vs fraction, as FinQA reads "%"
        ("12.5%", "12.5", True),  # percent vs percent number
        ("0.125", "12.5%", True),
        ("12.5", "0.125", False),  # unmarked x100 is not accepted
        ("500", "5.0", False),
        ("5.2 million", "5.2", True),  # stated in the table's unit
        ("5200000", "5.2 million", True),
        ("-0.52485", "-0.52485", True),
        ("0.52485", "-0.52485", False),  # sign matters
        ("0", "0.0", True),
        ("0.001", "0.0", False),
        ("33%", "0.33333", True),  # rounding within 1%
        (None, "1", False),
        ("yes", "1", False),
    ],
)
def test_numbers_match_default_tolerance(pred, gold, expected):
    assert numbers_match(pred, gold) is expected


def test_numbers_match_tolerance_is_relative_to_gold():
    assert numbers_match("101", "100", rtol=0.01)
    assert not numbers_match("101.01", "100", rtol=0.01)
    assert not numbers_match("101", "100", rtol=1e-9)
    assert numbers_match(72.0, "72", rtol=1e-9)


def test_answers_match_handles_yes_no_golds():
    assert answers_match("yes", "yes")
    assert answers_match("Yes", "yes")
    assert not answers_match("no", "yes")
    assert not answers_match("1", "yes")
    assert not answers_match(None, "no")


def test_numeric_scores_hand_worked():
    golds = ["0.125", "100", "no", "7"]
    preds = ["12.5%", "100.5", "no", None]
    scores = numeric_scores(preds, golds, rtol=0.01)
    assert scores["accuracy"] == pytest.approx(3 / 4)
    assert scores["exact_match"] == pytest.approx(2 / 4)  # 100.5 is within 1% but not equal
    assert scores["parse_failure_rate"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        numeric_scores(["1"], golds)


# --- SQuAD token F1 -------------------------------------------------------------------------


def _squad_reference_f1(prediction: str, truth: str) -> float:
    """The SQuAD v1.1 evaluation script's f1_score, written out independently."""

    def normalize(s: str) -> str:
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    p, t = normalize(prediction).split(), normalize(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def test_token_f1_hand_worked():
    # pred tokens: capital expenditure was 1577 ; gold tokens: 1577 -> P = 1/4, R = 1, F1 = 0.4
    assert token_f1("The capital expenditure was $1,577.", "$1577") == pytest.approx(0.4)
    assert token_f1("$1577.00", "$1577.00") == 1.0
    assert token_f1("The consumer segment shrunk.", "The consumer segment shrunk by 0.9% organically.") == pytest.approx(
        2 * 1.0 * (3 / 6) / (1.0 + 3 / 6)
    )
    assert token_f1(None, "x") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("No, the quick ratio was 0.96", "No. The quick ratio for 3M was 0.96 by Jun'23 close"),
        ("Operating margin decreased by 1.7%", "Operating Margin for 3M in FY2022 has decreased by 1.7%"),
        ("yes yes yes", "yes"),
    ],
)
def test_token_f1_equals_squad_script(pred, gold):
    assert token_f1(pred, gold) == pytest.approx(_squad_reference_f1(pred, gold))


def test_normalize_and_exact_match():
    assert normalize_answer("The  Answer, is: $1,577!") == "answer is 1577"
    assert exact_match("the $1577", "1577")
    assert not exact_match(None, "1577")


def test_open_answer_scores():
    golds = ["$1577.00", "The consumer segment shrunk by 0.9% organically.", "24.26"]
    preds = ["1,577", "The consumer segment shrunk by 0.9% organically.", None]
    scores = open_answer_scores(preds, golds)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["token_f1"] == pytest.approx(1 / 3)  # "1577" vs "157700": no overlap
    assert scores["numeric_n"] == 2.0  # "$1577.00" and "24.26" are numbers
    assert scores["numeric_accuracy"] == pytest.approx(1 / 2)  # 1,577 matches, None does not
    assert scores["parse_failure_rate"] == pytest.approx(1 / 3)


# --- entities -------------------------------------------------------------------------------

TOKENS = "This LOAN AGREEMENT between SILICON VALLEY BANK and Apple Inc . , of Santa Clara , California , and John Smith".split()


def test_place_entities_first_free_occurrence_ignoring_case_and_spacing():
    tags, left = place_entities(
        TOKENS,
        [
            ("Silicon Valley Bank", "organization"),
            ("Apple Inc.", "organization"),
            ("California", "location"),
            ("Paris", "location"),
        ],
    )
    assert tags[4:7] == ["B-ORG", "I-ORG", "I-ORG"]
    assert tags[8:11] == ["B-ORG", "I-ORG", "I-ORG"]  # "Apple Inc." covers the tokens Apple, Inc, "."
    assert tags[TOKENS.index("California")] == "B-LOC"
    assert left == [("Paris", "location")]
    # A repeated entity takes the next free occurrence, and fails once none is left.
    tags, left = place_entities(["Bank", "and", "Bank"], [("Bank", "organization")] * 3)
    assert tags == ["B-ORG", "O", "B-ORG"] and left == [("Bank", "organization")]


def _multiset_prf(preds, golds):
    """Independent span-level micro P/R/F1: multisets of (lower-cased text without spaces, type)."""
    tp = n_pred = n_gold = 0
    for p, g in zip(preds, golds):
        cp = collections.Counter((t.replace(" ", "").lower(), k) for t, k in p)
        cg = collections.Counter((t.replace(" ", "").lower(), k) for t, k in g)
        tp += sum((cp & cg).values())
        n_pred += sum(cp.values())
        n_gold += sum(cg.values())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


SENTENCES = [
    "SILICON VALLEY BANK lends to Apple Inc . in Santa Clara".split(),
    "John Smith signed for Goldman Sachs in London".split(),
    "Bank will lend to Borrower and Borrower will repay Bank".split(),
]
GOLDS = [
    [("SILICON VALLEY BANK", "organization"), ("Apple Inc .", "organization"), ("Santa Clara", "location")],
    [("John Smith", "person"), ("Goldman Sachs", "organization"), ("London", "location")],
    [("Bank", "organization"), ("Borrower", "person"), ("Borrower", "person"), ("Bank", "organization")],
]
PREDS = [
    # 2 right, 1 wrong type
    [("Silicon Valley Bank", "organization"), ("Apple Inc.", "organization"), ("Santa Clara", "organization")],
    # 1 right, 1 hallucinated (not in the sentence), 2 missed
    [("John Smith", "person"), ("Morgan Stanley", "organization")],
    # 3 of 4 found
    [("Bank", "organization"), ("Borrower", "person"), ("Bank", "organization")],
]


def test_entity_scores_hand_worked():
    scores = entity_scores([format_entities(p) for p in PREDS], [format_entities(g) for g in GOLDS], SENTENCES)
    # true positives 2 + 1 + 3 = 6; predicted 3 + 2 + 3 = 8; gold 3 + 3 + 4 = 10
    assert scores["entity_precision"] == pytest.approx(6 / 8)
    assert scores["entity_recall"] == pytest.approx(6 / 10)
    assert scores["entity_f1"] == pytest.approx(2 * (6 / 8) * (6 / 10) / (6 / 8 + 6 / 10))
    # FinGPT ignores "Morgan Stanley" (not in the sentence): precision 6/7
    assert scores["entity_f1_fingpt"] == pytest.approx(2 * (6 / 7) * (6 / 10) / (6 / 7 + 6 / 10))
    assert scores["sentence_accuracy"] == 0.0
    assert scores["parse_failure_rate"] == 0.0


def test_entity_f1_equals_seqeval_and_span_count():
    preds = [format_entities(p) for p in PREDS]
    golds = [format_entities(g) for g in GOLDS]
    ours = entity_scores(preds, golds, SENTENCES)
    y_true, y_pred = entity_sequences(PREDS, GOLDS, SENTENCES)
    assert ours["entity_f1"] == pytest.approx(seqeval_f1(y_true, y_pred))
    assert ours["entity_f1"] == pytest.approx(_multiset_prf(PREDS, GOLDS)[2])


def test_entity_f1_matches_seqeval_on_gold_io_tags():
    """Gold built from the original IO tags scores the same as seqeval on those tags directly."""
    tokens = ["SILICON", "VALLEY", "BANK", "(", "Bank", ")", "of", "California"]
    io_tags = ["I-ORG", "I-ORG", "I-ORG", "O", "I-ORG", "O", "O", "I-LOC"]
    pred_io = ["I-ORG", "I-ORG", "I-ORG", "O", "O", "O", "O", "I-PER"]
    gold = [("SILICON VALLEY BANK", "organization"), ("Bank", "organization"), ("California", "location")]
    pred = [("SILICON VALLEY BANK", "organization"), ("California", "person")]
    ours = entity_scores([format_entities(pred)], [format_entities(gold)], [tokens])
    assert ours["entity_f1"] == pytest.approx(seqeval_f1([io_tags], [pred_io]))  # P 1/2, R 1/3 -> 0.4
    assert ours["entity_f1"] == pytest.approx(0.4)


def test_entity_parse_failure_counts_as_no_entities():
    gold = [format_entities(GOLDS[1])]
    scores = entity_scores([None], gold, [SENTENCES[1]])
    assert scores["entity_recall"] == 0.0 and scores["parse_failure_rate"] == 1.0
    empty = entity_scores(["No entities."], gold, [SENTENCES[1]])
    assert empty["entity_recall"] == 0.0 and empty["parse_failure_rate"] == 0.0


def test_entities_equal_is_a_multiset_comparison():
    gold = format_entities(GOLDS[2])
    assert entities_equal(format_entities(list(reversed(GOLDS[2]))), gold)
    assert not entities_equal(format_entities(PREDS[2]), gold)
    assert entities_equal("Apple Inc. is an organization.", "Apple Inc . is an organization.")
    assert not entities_equal(None, gold)


def test_squeezing_shared_o_positions_changes_nothing():
    """Our sequences drop runs of O/O positions for speed; seqeval on the full ones agrees."""
    from seqeval.metrics import precision_score, recall_score

    long_sentence = ("the the the Bank of America the the and the the Bank the London".split()) * 3
    sentences = SENTENCES + [long_sentence]
    golds = GOLDS + [[("Bank of America", "organization"), ("Bank", "organization"), ("London", "location")] * 3]
    preds = PREDS + [[("Bank", "organization"), ("of America", "organization"), ("London", "person"), ("London", "location")]]
    full_true, full_pred, counted_true, counted_pred = [], [], [], []
    labels = {"person": "PER", "organization": "ORG", "location": "LOC"}
    for p, g, toks in zip(preds, golds, sentences):
        gold_tags, gold_left = place_entities(toks, g)
        pred_tags, pred_left = place_entities(toks, p)
        assert not gold_left
        full_true.append(gold_tags)
        full_pred.append(pred_tags)
        counted_true.append(gold_tags + ["O"] * len(pred_left))
        counted_pred.append(pred_tags + [f"B-{labels[k]}" for _, k in pred_left])
    assert any(len(t) > 40 for t in full_true)
    ours = entity_scores([format_entities(p) for p in preds], [format_entities(g) for g in golds], sentences)
    assert ours["entity_f1_fingpt"] == pytest.approx(seqeval_f1(full_true, full_pred))
    assert ours["entity_precision"] == pytest.approx(precision_score(counted_true, counted_pred))
    assert ours["entity_recall"] == pytest.approx(recall_score(counted_true, counted_pred))
    # Placement is positional: "Bank" lands inside the gold "Bank of America", so a bag-of-entities
    # count would differ here (it agrees on unambiguous sentences, see above).
    assert ours["entity_f1"] < _multiset_prf(preds, golds)[2]
