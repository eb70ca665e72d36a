"""The FIN5 / FIN3 CoNLL files (SEC filings, Alvarado et al. 2015), read once for every task
built on them (finner: entity lists to generate; ner_cls: one entity's type to choose).

One strict reader: four space-separated fields per line (`token POS chunk tag`), blank lines
end sentences, `-DOCSTART-` lines are skipped, and any other shape or an unknown tag is an
error naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fincocktail.errors import DataError
from fincocktail.tasks.io import read_text

KNOWN_TAGS = {"O"} | {f"{p}-{t}" for p in ("B", "I") for t in ("PER", "ORG", "LOC", "MISC")}


@dataclass(frozen=True)
class Sentence:
    """One CoNLL sentence: its tokens and tags, and where it starts in its file."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    line: int
    file: str

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def read_conll(path: Path) -> list[Sentence]:
    """Sentences of a CoNLL file with lines `token POS chunk tag`; blank lines end sentences.

    A line with another number of fields, or a tag outside PER/ORG/LOC/MISC (IO or IOB), is an
    error naming the file and line.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for lineno, line in enumerate(read_text(path), start=1):
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags), start, path.name))
                tokens, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split(" ")
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 space-separated fields 'token POS chunk tag', got {len(parts)}")
        if parts[3] not in KNOWN_TAGS:
            raise DataError(f"{path}:{lineno}: unknown tag {parts[3]!r}; expected O or I-/B- with PER, ORG, LOC, MISC")
        if not tokens:
            start = lineno
        tokens.append(parts[0])
        tags.append(parts[3])
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags), start, path.name))
    return sentences
