"""Answer extractors on the kind of text models actually produce."""

from __future__ import annotations

import pytest

from fincocktail.tasks.answers import (
    ParsedNumber,
    entities_of,
    extract_entities,
    extract_final_answer,
    extract_free_text,
    extract_number,
    extract_yes_no,
    find_numbers,
    format_entities,
    parse_number,
)

# --- single numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value, percent, scale",
    [
        ("127.4", 127.4, False, None),
        ("12.5%", 12.5, True, None),
        ("12.5 %", 12.5, True, None),
        ("17 percent", 17.0, True, None),
        ("1,234,567.89", 1234567.89, False, None),
        ("(1,234.5)", -1234.5, False, None),
        ("( 1,234.5 )", -1234.5, False, None),
        ("$(1,234)", -1234.0, False, None),
        ("-$1,234", -1234.0, False, None),
        ("$-1,234", -1234.0, False, None),
        ("\u22123.2", -3.2, False, None),  # unicode minus
        ("\u20130.52485", -0.52485, False, None),  # en dash from PDF text
        ("$1.5 bn", 1.5, False, "billion"),
        ("$1.5bn", 1.5, False, "billion"),
        ("5.2 million", 5.2, False, "million"),
        ("$5m", 5.0, False, "million"),
        ("€300k", 300.0, False, "thousand"),
        ("1.2e3", 1200.0, False, None),
        ("1e-05", 1e-05, False, None),
        ("2.5E+2", 250.0, False, None),
        ("12.5%.", 12.5, True, None),  # trailing period
        ("  72  ", 72.0, False, None),
        (".5", 0.5, False, None),
        ("+4.1%", 4.1, True, None),
        ("(12.5)%", -12.5, True, None),
    ],
)
def test_parse_number_formats(text, value, percent, scale):
    parsed = parse_number(text)
    assert parsed is not None, text
    assert parsed.value == pytest.approx(value)
    assert parsed.percent is percent
    assert parsed.scale == scale


@pytest.mark.parametrize("text", ["", "n/a", "twelve", "12.5% of 40", "(1,234", "1,234)", "about 5", "12 months"])
def test_parse_number_rejects_anything_but_one_number(text):
    assert parse_number(text) is None


def test_canonical_round_trips():
    numbers = [ParsedNumber(-1234.5), ParsedNumber(12.5, percent=True), ParsedNumber(5.2, scale="million"), ParsedNumber(1e-05)]
    for number in numbers:
        assert parse_number(number.canonical()) == number
    assert ParsedNumber(72.0).canonical() == "72"  # no spurious ".0"


def test_find_numbers_reads_year_ranges_as_two_years():
    assert [n.value for n in find_numbers("from 2009-2010 it fell")] == [2009.0, 2010.0]
    assert [n.value for n in find_numbers("a loss of -5 and (3)")] == [-5.0, -3.0]


def test_find_numbers_leaves_unmatched_brackets_alone():
    numbers = find_numbers("revenue (up 12% on 2019) was $4.5bn")
    expected = [(12.0, True, None), (2019.0, False, None), (4.5, False, "billion")]
    assert [(n.value, n.percent, n.scale) for n in numbers] == expected


# --- extract_number on model outputs ---------------------------------------------------------


@pytest.mark.parametrize(
    "output, strict, flexible_first",
    [
        ("127.4", "127.4", "127.4"),
        (" 0.60306\n", "0.60306", "0.60306"),
        ("The answer is 12.5%.", "12.5%", "12.5%"),
        ("Answer: (1,234.5)", "-1234.5", "-1234.5"),
        ("#### 72", "72", "72"),
        ("\u22120.0339", "-0.0339", "-0.0339"),
        ("$ 2,457 million", "2457 million", "2457 million"),
        ("The percentage change is 14.1% from 2008 to 2009.", None, "14.1%"),
        ("Revenue grew from $10 to $12, so the answer is 20%.", None, "20%"),
        ("I cannot determine this from the context.", None, None),
        ("", None, None),
    ],
)
def test_extract_number_strict_and_flexible(output, strict, flexible_first):
    assert extract_number(output, "strict") == strict
    assert extract_number(output, "flexible", fallback="first") == flexible_first


def test_extract_number_fallback_last_for_worked_solutions():
    text = "She sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips"
    assert extract_number(text, "flexible", fallback="last") == "72"
    assert extract_number(text, "flexible", fallback="first") == "48"


def test_extract_number_uses_the_last_answer_marker():
    text = "Answer: let me think. 3 + 4 = 7, doubled is 14.\nThe answer is 14."
    assert extract_number(text, "flexible") == "14"


def test_extract_number_rejects_unknown_mode():
    with pytest.raises(ValueError):
        extract_number("1", "loose")  # type: ignore[arg-type]


def test_final_answer_strict_needs_the_trained_last_line():
    good = "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is 72."
    assert extract_final_answer(good, "strict") == "72"
    assert extract_final_answer("She sold 72 clips altogether.", "strict") is None
    assert extract_final_answer("The answer is 1,080.\n", "strict") == "1080"
    assert extract_final_answer("The answer is 72 clips.", "strict") is None
    assert extract_final_answer("She sold 72 clips altogether.", "flexible") == "72"
    assert extract_final_answer("#### 1,080", "flexible") == "1080"
    assert extract_final_answer("no idea", "flexible") is None


@pytest.mark.parametrize(
    "output, strict, flexible",
    [
        ("yes", "yes", "yes"),
        ("No.", "no", "no"),
        ("Answer: Yes", "yes", "yes"),
        ("Yes, it increased.", None, "yes"),
        ("It is not clear", None, None),
    ],
)
def test_extract_yes_no(output, strict, flexible):
    assert extract_yes_no(output, "strict") == strict
    assert extract_yes_no(output, "flexible") == flexible


# --- entity lists ---------------------------------------------------------------------------


def test_format_entities_is_fingpt_wording():
    entities = [("SILICON VALLEY BANK", "organization"), ("John Smith", "person"), ("California", "location")]
    assert format_entities(entities) == (
        "SILICON VALLEY BANK is an organization, John Smith is a person, California is a location."
    )
    assert entities_of(format_entities(entities)) == entities
    assert format_entities([]) == "No entities."
    assert entities_of("No entities.") == []


def test_strict_entities_accept_commas_inside_an_entity():
    text = "EVERGREEN SOLAR , INC is an organization, Provence is a location."
    assert entities_of(extract_entities(text, "strict")) == [("EVERGREEN SOLAR , INC", "organization"), ("Provence", "location")]


@pytest.mark.parametrize(
    "output",
    [
        "Apple is an organization and John is a person.",  # not the trained format
        "- Apple Inc.: organization",
        "Sure! Here are the entities.",
        "Apple is an organization, John is a",
    ],
)
def test_strict_entities_reject_other_formats(output):
    assert extract_entities(output, "strict") is None


@pytest.mark.parametrize(
    "output, expected",
    [
        (
            "Sure! The entities are: Apple Inc. is an organization and Tim Cook is a person.",
            [("Apple Inc.", "organization"), ("Tim Cook", "person")],
        ),
        (
            "- Apple Inc.: organization\n- Tim Cook (person)\n- Cupertino, location\n",
            [("Apple Inc.", "organization"), ("Tim Cook", "person"), ("Cupertino", "location")],
        ),
        (
            "Organization: Apple, Goldman Sachs; Person: Tim Cook",
            [("Apple", "organization"), ("Goldman Sachs", "organization"), ("Tim Cook", "person")],
        ),
        ("1. Goldman Sachs - ORG\n2. London - LOC", [("Goldman Sachs", "organization"), ("London", "location")]),
        ("Bank is an organization, Borrower is a person", [("Bank", "organization"), ("Borrower", "person")]),
        ("There are no named entities in this sentence.", []),
        ("None", []),
    ],
)
def test_flexible_entities_on_chatty_outputs(output, expected):
    assert entities_of(extract_entities(output, "flexible")) == expected


@pytest.mark.parametrize("output", ["", "The sentence talks about a loan agreement.", "organization"])
def test_flexible_entities_unparseable_is_none(output):
    assert extract_entities(output, "flexible") is None


# --- free text ------------------------------------------------------------------------------


def test_free_text():
    assert extract_free_text("Answer: $1577.00\n\nExplanation: from the cash flow statement", "strict") == "$1577.00"
    assert extract_free_text("Answer: $1577.00\n\nExplanation: x", "flexible").startswith("$1577.00\n\nExplanation")
    assert extract_free_text("   \n", "flexible") is None
    assert extract_free_text(None) is None
