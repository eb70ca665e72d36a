"""Reading answers out of generated text: numbers, yes/no, labels, option letters, entity lists, free text.

Every extractor returns None when it cannot find an answer. A parse failure is reported as a
rate next to the score; it is never silently mapped to some default answer, because a model
that rambles and one that answers wrongly need different fixes.

Two modes per extractor:

* `strict`: the output must *be* the answer in the task's trained format (allowing only
  whitespace, a trailing period and an "Answer:"/"The answer is"/"####" lead-in). This measures
  whether a fine-tuned model learned the format.
* `flexible`: the answer may be anywhere in chatty text. This is the fair mode for base and
  instruction models that were never trained on the format.

Every task reads its answers through this module (the classification tasks' labels and
letters too), so what "the model said X" means is decided in one place.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fincocktail.metrics.entities import Entity

ExtractMode = Literal["strict", "flexible"]

# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------

_SCALES: dict[str, tuple[str, float]] = {
    "thousand": ("thousand", 1e3),
    "k": ("thousand", 1e3),
    "million": ("million", 1e6),
    "millions": ("million", 1e6),
    "mn": ("million", 1e6),
    "mm": ("million", 1e6),
    "m": ("million", 1e6),
    "billion": ("billion", 1e9),
    "billions": ("billion", 1e9),
    "bn": ("billion", 1e9),
    "b": ("billion", 1e9),
    "trillion": ("trillion", 1e12),
    "tn": ("trillion", 1e12),
}
_SCALE_BY_NAME = {name: factor for name, factor in _SCALES.values()}

# Minus signs seen in model output and in PDF-extracted filings: ASCII hyphen, U+2212 minus,
# en dash, em dash, and the small/full-width hyphen-minus variants.
_MINUS = "-\u2212\u2013\u2014\ufe63\uff0d"

_NUMBER_RE = re.compile(
    rf"""
    (?<![\w.,])                                     # not glued to a word or another number
    (?P<sign>[{_MINUS}+]\s?)?
    (?P<cur1>(?:US)?[$€£¥]\s?)?
    (?P<open>\(\s?)?
    (?P<sign2>[{_MINUS}]\s?)?
    (?P<cur2>(?:US)?[$€£¥]\s?)?
    (?P<num>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    (?P<exp>[eE][-+]?\d+)?
    (?:\s?(?P<close>\)))?
    (?:\s?(?P<pct>%|percent\b|per\s?cent\b|pct\b))?
    (?:\s?(?P<scale>thousand|millions?|billions?|trillion|mn|mm|bn|tn|[kmb])(?![A-Za-z]))?
    (?:\s?(?P<pct2>%))?
    """,
    re.VERBOSE | re.IGNORECASE,
)

# "The answer is", "Answer:", "Final answer:", "####": the marker a model uses to announce its
# final answer. In flexible mode the number right after the *last* marker wins.
_ANSWER_MARKER_RE = re.compile(
    r"(?:####|\bthe\s+(?:final\s+)?answer\s+is\s*:?|\bfinal\s+answer\s*(?:is)?\s*:?|\banswer\s*:)",
    re.IGNORECASE,
)
_LEAD_IN_RE = re.compile(
    r"^\s*(?:####|the\s+(?:final\s+)?answer\s+is\s*:?|final\s+answer\s*(?:is)?\s*:?|answer\s*:)\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedNumber:
    """A number as written. `value` has its sign but not its scale word ("5.2 million" -> 5.2).

    The scale is kept apart because financial answers are usually stated in the table's unit:
    "5.2 million" against a gold "5.2" (in millions) is right, and so is "5,200,000" against
    "5.2 million"; metrics try both readings.
    """

    value: float
    percent: bool = False
    scale: str | None = None  # "thousand", "million", "billion", "trillion"

    @property
    def factor(self) -> float:
        return _SCALE_BY_NAME[self.scale] if self.scale else 1.0

    def canonical(self) -> str:
        """A compact string that `parse_number` reads back to the same number."""
        text = format_float(self.value)
        if self.percent:
            text += "%"
        if self.scale:
            text += f" {self.scale}"
        return text


def format_float(value: float) -> str:
    """Shortest faithful text for a float: integers without ".0", others via repr."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _from_match(m: re.Match[str]) -> ParsedNumber | None:
    digits = m.group("num").replace(",", "")
    if m.group("exp"):
        digits += m.group("exp")
    try:
        value = float(digits)
    except ValueError:  # pragma: no cover - the regex only admits valid floats
        return None
    if not math.isfinite(value):
        return None
    negative = False
    for key in ("sign", "sign2"):
        sign = m.group(key)
        if sign and sign.strip() != "+":
            negative = not negative
    if m.group("open") and m.group("close"):
        negative = True  # accounting notation: (1,234.5) is -1234.5
    scale = None
    if m.group("scale"):
        scale = _SCALES[m.group("scale").lower()][0]
    percent = bool(m.group("pct") or m.group("pct2"))
    return ParsedNumber(value=-value if negative else value, percent=percent, scale=scale)


def _spans(text: str) -> list[tuple[int, int, ParsedNumber]]:
    out = []
    for m in _NUMBER_RE.finditer(text):
        parsed = _from_match(m)
        if parsed is None:
            continue
        start, end = m.start(), m.end()
        # An unmatched "(" or ")" is sentence punctuation, not accounting notation: leave it out.
        if m.group("open") and not m.group("close"):
            start = m.start("open") + len(m.group("open"))
            if m.group("sign"):
                start = m.start()  # keep the sign before it
        if m.group("close") and not m.group("open"):
            end = m.end("close") - 1
            rest = m.group(0)[m.end("close") - m.start() :]
            if rest.strip():  # "%"/scale after an unmatched ")" belongs to something else
                parsed = ParsedNumber(value=parsed.value, percent=False, scale=None)
        out.append((start, end, parsed))
    return out


def find_numbers(text: str) -> list[ParsedNumber]:
    """Every number in `text`, in order. "2009-2010" is two years, not 2009 and -2010."""
    return [parsed for _, _, parsed in _spans(text)]


def parse_number(text: str) -> ParsedNumber | None:
    """`text` read as exactly one number (currency, commas, %, scale word, sign conventions).

    A trailing period is allowed ("12.5%."); anything else around the number makes it None.
    """
    s = text.strip().rstrip(".").strip()
    if not s:
        return None
    m = _NUMBER_RE.fullmatch(s)
    if m is None:
        return None
    if bool(m.group("open")) != bool(m.group("close")):
        return None
    return _from_match(m)


NumberFallback = Literal["first", "last"]


def extract_number(text: str | None, mode: ExtractMode = "flexible", fallback: NumberFallback = "last") -> str | None:
    """The answer number in `text` as a canonical string ("12.5%", "-1234.5", "5.2 million").

    strict: the whole output is one number, optionally after "Answer:" / "The answer is" /
    "####" and before a trailing period.
    flexible: the first number after the last answer marker; without a marker, the `fallback`
    number of the text ("last" for worked solutions such as GSM8K, "first" for short answers
    such as FinQA, where a model tends to state the answer and then explain it).
    """
    if text is None:
        return None
    if mode == "strict":
        body = _LEAD_IN_RE.sub("", text.strip(), count=1)
        parsed = parse_number(body)
        return parsed.canonical() if parsed else None
    if mode != "flexible":
        raise ValueError(f"unknown extraction mode {mode!r}; expected 'strict' or 'flexible'")
    markers = list(_ANSWER_MARKER_RE.finditer(text))
    if markers:
        after = text[markers[-1].end() :]
        numbers = find_numbers(after)
        if numbers:
            return numbers[0].canonical()
    numbers = find_numbers(text)
    if not numbers:
        return None
    chosen = numbers[-1] if fallback == "last" else numbers[0]
    return chosen.canonical()


_FINAL_LINE_RE = re.compile(r"(?:^|\n)[^\S\n]*the answer is:?[^\S\n]*(?P<num>[^\n]+?)\s*$", re.IGNORECASE)


def extract_final_answer(text: str | None, mode: ExtractMode = "flexible") -> str | None:
    """The answer of a worked solution that ends with "The answer is N." (GSM8K targets).

    strict: the text must end with that line (the trained format) and N must be one number.
    flexible: `extract_number` with the last number as fallback (lm-eval's flexible extract).
    """
    if text is None:
        return None
    if mode == "strict":
        m = _FINAL_LINE_RE.search(text.strip())
        if m is None:
            return None
        parsed = parse_number(m.group("num"))
        return parsed.canonical() if parsed else None
    return extract_number(text, "flexible", fallback="last")


# --------------------------------------------------------------------------------------------
# yes / no
# --------------------------------------------------------------------------------------------

_YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def extract_yes_no(text: str | None, mode: ExtractMode = "flexible") -> str | None:
    """'yes' or 'no'. strict: the output is just the word; flexible: the first yes/no word."""
    if text is None:
        return None
    if mode == "strict":
        body = _LEAD_IN_RE.sub("", text.strip(), count=1).strip().rstrip(".").strip().lower()
        return body if body in ("yes", "no") else None
    m = _YES_NO_RE.search(text)
    return m.group(1).lower() if m else None


# --------------------------------------------------------------------------------------------
# fixed labels and option letters (classification, multiple choice)
# --------------------------------------------------------------------------------------------
# strict: the whole output, stripped of whitespace, punctuation and case, is exactly one label.
# flexible: the first line that names a label decides. "Positive.", "The sentiment is
# negative", "Bullish" (a synonym) and "Yes, it does" are read; a line that names two
# different labels ("positive/negative", "neither positive nor negative") or negates the label
# ("not positive") is a parse failure (None). Nothing is ever mapped to a default label.

_LABEL_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026\u2013\u2014"
_ANSWER_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|sentiment|label|output|response|entity\s+type)"
    r"(?:\s+(?:of|for)\s+.{1,80}?)?(?:\s+is|\s+would\s+be|\s*:)?|it\s+is|it's|this\s+is)?$",
    re.IGNORECASE,
)
_LIST_GAP = re.compile(r"^[\s,;/|]*(?:or|and|nor)?[\s,;/|]*$", re.IGNORECASE)
_NEGATION = re.compile(r"(?:\bnot|\bno|n't|\bneither|\bnor|\bnon)\W*(?:\w+\W+)?$", re.IGNORECASE)


def _clean_label(text: str) -> str:
    return text.strip().strip(_LABEL_PUNCT + string.whitespace).strip().lower()


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w\-])({alternatives})(?![\w\-])", re.IGNORECASE)


def _exactly_one_of(text: str, options: Sequence[str]) -> str | None:
    """The option `text` is, once cleaned (case, punctuation, markup), in its canonical spelling: what
    `strict` extraction accepts and what `flexible` extraction tries first."""
    return {option.lower(): option for option in options}.get(_clean_label(text))


def extract_label(
    text: str | None,
    labels: Sequence[str],
    synonyms: Mapping[str, str] | None = None,
    mode: ExtractMode = "flexible",
) -> str | None:
    """The label named in `text` (canonical spelling from `labels`), or None when unreadable or ambiguous."""
    if text is None:
        return None
    exact = _exactly_one_of(text, labels)
    if exact is not None or mode == "strict":
        return exact
    canonical = {label.lower(): label for label in labels}
    cleaned = _clean_label(text)
    words = {word.lower(): label for word, label in (synonyms or {}).items()}
    words.update(canonical)
    if cleaned in words:
        return words[cleaned]
    pattern = _word_pattern(list(words))
    for line in text.splitlines():
        matches = list(pattern.finditer(line))
        if not matches:
            continue
        found = [words[m.group(1).lower()] for m in matches]
        first = matches[0]
        # an echoed option list ("person, organization, location", "Yes/No") is not an answer
        if len(matches) > 1 and found[1] != found[0] and _LIST_GAP.match(line[first.end() : matches[1].start()]):
            return None
        prefix = line[: first.start()].strip().strip(_LABEL_PUNCT + string.whitespace)
        rest = line[first.end() :]
        # "Yes, there is no doubt" / "Positive. Costs fell but ...": a leading answer word closed
        # by sentence punctuation is the answer, whatever the explanation after it mentions.
        closed = not rest.strip() or rest.lstrip()[:1] in ",.;:!)"
        if _ANSWER_PREFIX.match(prefix) and closed and not _NEGATION.search(line[: first.start()]):
            return found[0]
        if len(set(found)) > 1:
            return None
        if any(_NEGATION.search(line[: m.start()]) for m in matches):
            return None
        return found[0]
    return None


_LETTER_LEAD = r"^[\s\*\"'`]*(?:(?:the\s+)?(?:correct\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"


def extract_letter(text: str | None, letters: Sequence[str] = ("A", "B", "C"), mode: ExtractMode = "flexible") -> str | None:
    """The option letter in `text`: "C", "(B)", "Answer: A", "The answer is B: liquidity."; else None."""
    if text is None:
        return None
    exact = _exactly_one_of(text, letters)
    if exact is not None or mode == "strict":
        return exact
    canonical = {letter.lower(): letter for letter in letters}
    group = "".join(re.escape(letter) for letter in letters)
    # A letter at the start must be closed by punctuation or end the line: "A good answer" is not "A".
    lead = re.compile(_LETTER_LEAD + rf"[\(\[]?([{group}])[\)\]]?(?=$|[.:,;)\]]|\s+[-\u2013:])", re.IGNORECASE)
    keyword = re.compile(rf"\b(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[\(\[]?([{group}])\b(?![\w'])", re.IGNORECASE)
    for line in text.splitlines():
        if not line.strip():
            continue
        m = lead.match(line)
        if m:
            # "A, B or C" / "A or B": a list of options, not an answer
            rest = line[m.end() :]
            if re.match(rf"\s*(?:,|/|\bor\b|\band\b)\s*[\(\[]?[{group}]\b", rest):
                return None
            # "A: 555, B: 563, C: 576": the options echoed, each with its marker
            others = {x.upper() for x in re.findall(rf"(?<![\w])([{group}])[:.)](?=\s|$)", rest)} - {m.group(1).upper()}
            if others:
                return None
            return canonical[m.group(1).lower()]
        found = {
            canonical[k.group(1).lower()]
            for k in keyword.finditer(line)
            # "the answer is a bit unclear": a lowercase letter counts only when it stands alone
            if k.group(1).isupper() or re.match(r"\s*(?:$|[.:,;)\]])", line[k.end() :])
        }
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


# --------------------------------------------------------------------------------------------
# entity lists (FinNER)
# --------------------------------------------------------------------------------------------

ENTITY_TYPES: tuple[str, ...] = ("person", "organization", "location")

_TYPE_WORDS: dict[str, str] = {
    "person": "person",
    "persons": "person",
    "people": "person",
    "per": "person",
    "organization": "organization",
    "organisation": "organization",
    "organizations": "organization",
    "organisations": "organization",
    "org": "organization",
    "company": "organization",
    "location": "location",
    "locations": "location",
    "loc": "location",
    "place": "location",
}
_TYPE_ALT = "|".join(sorted(_TYPE_WORDS, key=len, reverse=True))

# One FinGPT item: "<entity> is a person" / "<entity> is an organization". The entity may hold
# commas ("EVERGREEN SOLAR , INC"), so an item ends only where the next one can start.
_STRICT_ITEM_RE = re.compile(r"(?P<ent>\S.*?) is an? (?P<type>person|organization|location)(?P<end>, |\.?$)")
_INNER_ITEM_RE = re.compile(r" is an? (?:person|organization|location)\b")
_FLEX_ITEM_RE = re.compile(
    rf"(?P<ent>[^,;\n]+?)\s+(?:is|are)\s+(?:an?\s+|the\s+)?(?P<type>{_TYPE_ALT})\b",
    re.IGNORECASE,
)
_PAIR_RE = re.compile(
    rf"^(?P<ent>.+?)\s*(?:,|:|\(|\s-\s|\s–\s|\s—\s|\|)\s*(?P<type>{_TYPE_ALT})\s*\)?\.?$",
    re.IGNORECASE,
)
_TYPE_FIRST_RE = re.compile(rf"^(?P<type>{_TYPE_ALT})\s*:\s*(?P<ents>.+)$", re.IGNORECASE)
_NONE_RE = re.compile(
    r"^\s*(?:none|no entities?(?: found)?|there are no entities|n/a)\b|\bno (?:named )?entit(?:y|ies)\b",
    re.IGNORECASE,
)
_BULLET_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NO_ENTITIES_TARGET = "No entities."


def _article(entity_type: str) -> str:
    return "an" if entity_type[0] in "aeiou" else "a"


def format_entities(entities: Sequence[Entity]) -> str:
    """FinGPT's NER answer: "SILICON VALLEY BANK is an organization, California is a location."

    FinGPT's `cvt_text_to_pred` reads exactly this wording; an empty list (not in FinGPT's
    data, which keeps only sentences with entities) is written "No entities.".
    """
    if not entities:
        return _NO_ENTITIES_TARGET
    return ", ".join(f"{text} is {_article(kind)} {kind}" for text, kind in entities) + "."


def _clean_entity(text: str) -> str:
    text = text.rsplit(":", 1)[-1]  # "The entities are: Apple" -> "Apple"
    text = _BULLET_RE.sub("", text.strip())
    text = text.strip().strip("\"'“”‘’`*").strip()
    text = re.sub(r"^(?:and|also)\s+", "", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text)


def parse_entities_strict(text: str) -> list[Entity] | None:
    body = _LEAD_IN_RE.sub("", text.strip(), count=1).strip()
    if body.rstrip(".").strip().lower() in ("no entities", "none"):
        return []
    out: list[Entity] = []
    pos = 0
    while pos < len(body):
        m = _STRICT_ITEM_RE.match(body, pos)
        if m is None:
            return None
        out.append((m.group("ent").strip(), m.group("type")))
        pos = m.end()
        if m.group("end") != ", ":
            break
    if pos != len(body) or not out:
        return None
    if any(_INNER_ITEM_RE.search(ent) for ent, _ in out):
        return None  # "X is an organization and Y is a person" is not the trained format
    return out


def parse_entities_flexible(text: str) -> list[Entity] | None:
    strict = parse_entities_strict(text)
    if strict is not None:
        return strict
    body = _LEAD_IN_RE.sub("", text.strip(), count=1)
    found: list[Entity] = []
    for m in _FLEX_ITEM_RE.finditer(body):
        ent = _clean_entity(m.group("ent"))
        if ent:
            found.append((ent, _TYPE_WORDS[m.group("type").lower()]))
    if found:
        return found
    for item in re.split(r"[;\n]", body):
        item = _BULLET_RE.sub("", item.strip()).strip()
        if not item:
            continue
        m = _TYPE_FIRST_RE.match(item)
        if m:
            kind = _TYPE_WORDS[m.group("type").lower()]
            found.extend((e, kind) for e in map(_clean_entity, m.group("ents").split(",")) if e)
            continue
        m = _PAIR_RE.match(item)
        if m:
            ent = _clean_entity(m.group("ent"))
            if ent:
                found.append((ent, _TYPE_WORDS[m.group("type").lower()]))
    if found:
        return found
    if _NONE_RE.search(body):
        return []
    return None


def extract_entities(text: str | None, mode: ExtractMode = "flexible") -> str | None:
    """The (entity, type) list in `text`, re-written in the canonical FinGPT wording.

    Returns "No entities." for an explicit empty answer and None when nothing can be read.
    """
    if text is None:
        return None
    if mode == "strict":
        entities = parse_entities_strict(text)
    elif mode == "flexible":
        entities = parse_entities_flexible(text)
    else:
        raise ValueError(f"unknown extraction mode {mode!r}; expected 'strict' or 'flexible'")
    return None if entities is None else format_entities(entities)


def entities_of(canonical: str | None) -> list[Entity] | None:
    """Read back a canonical entity answer (what `extract_entities` returns)."""
    if canonical is None:
        return None
    return parse_entities_strict(canonical)


# --------------------------------------------------------------------------------------------
# free text (FinanceBench)
# --------------------------------------------------------------------------------------------


def extract_free_text(text: str | None, mode: ExtractMode = "flexible") -> str | None:
    """An open answer: strict keeps the first paragraph, flexible the whole text; empty is None.

    Both drop an "Answer:" lead-in. Strict stops at the first blank line so that a model which
    keeps writing after its answer is not rewarded (or punished) for the extra text.
    """
    if text is None:
        return None
    body = _LEAD_IN_RE.sub("", text.strip(), count=1).strip()
    if mode == "strict":
        body = re.split(r"\n\s*\n", body, maxsplit=1)[0].strip()
    return body or None
