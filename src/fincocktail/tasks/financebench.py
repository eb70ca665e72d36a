"""FinanceBench: open questions about public companies' filings, evaluation only.

Version `financebench@open-source-v1`: the 150 open-source questions. The input is the
annotated evidence (the excerpt the answer rests on, not the whole filing: this measures
reading, not retrieval) followed by the question. Evidence text extracted from PDFs puts
every table cell on its own line; whitespace runs are collapsed to one space, and the evidence
of one question is capped at 6000 characters (~1500 tokens) in all, shared fairly between its
excerpts (a short excerpt keeps all of its text, the rest split what is left) and cut at a word
boundary with " [...]". Only 1 of the 150 questions is cut.

Scored with SQuAD token-overlap F1 against the reference answer (headline), exact match, and
numeric accuracy (1% tolerance) on the questions whose answer is a single number. An LLM judge
can replace token F1 later through the API client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from fincocktail.errors import DataError
from fincocktail.tasks.base import Example, GenerationSpec, versioned
from fincocktail.tasks.generative import OpenAnswerTask, hub_dataset
from fincocktail.tasks.io import field, read_jsonl, require_file

MAX_EVIDENCE_CHARS = 6000
HUB_ID = "PatronusAI/financebench"
TRUNCATION_MARK = " [...]"


def squeeze(text: str) -> str:
    return " ".join(text.split())


def truncate_at_word(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(TRUNCATION_MARK))]
    if " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut + TRUNCATION_MARK


def fit_evidence(pieces: Sequence[str], budget: int = MAX_EVIDENCE_CHARS) -> list[str]:
    """Cut `pieces` to `budget` characters in all: short pieces whole, long ones share the rest."""
    allowed = [0] * len(pieces)
    remaining = budget
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
    for n, i in enumerate(order):
        share = remaining // (len(pieces) - n)
        allowed[i] = min(len(pieces[i]), share)
        remaining -= allowed[i]
    return [truncate_at_word(p, a) for p, a in zip(pieces, allowed)]


class FinanceBench(OpenAnswerTask):
    id = "financebench"
    version = versioned("financebench@open-source-v1")
    kind = "open_qa"
    description = (
        "Open questions on public companies' 10-K/10-Q filings with the annotated evidence given "
        "(FinanceBench open-source 150); evaluation only; token-overlap F1."
    )
    instruction = "Answer the question about the company's financial filing, using the evidence given."
    metric = "token_f1"
    splits = ("test",)
    eval_only = True
    generation = GenerationSpec(max_new_tokens=128, stop=("\n\n", "\nInstruction:", "\nQuestion:"))
    source = "financebench/financebench_open_source.jsonl (hub: PatronusAI/financebench)"
    data_files = ("financebench/financebench_open_source.jsonl",)
    licence = "not stated (dataset card: CC BY-NC 4.0)"

    def _rows(self, data_dir: Path) -> list[tuple[str, int, dict[str, Any]]]:
        if self.data_source == "hub":
            ds = hub_dataset(self.id, HUB_ID, split="train")
            return [(f"{HUB_ID}:train", i + 1, dict(r)) for i, r in enumerate(ds)]
        path = require_file(Path(data_dir) / "financebench" / "financebench_open_source.jsonl", self.id)
        return [(str(path), lineno, obj) for lineno, obj in read_jsonl(path)]

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        return [self._example(where, lineno, row) for where, lineno, row in self._rows(data_dir)]

    def _example(self, where: str, lineno: int, row: dict[str, Any]) -> Example:
        path = Path(where)
        question = field(row, "question", path, lineno).strip()
        answer = field(row, "answer", path, lineno).strip()
        evidence = field(row, "evidence", path, lineno, list)
        fid = field(row, "financebench_id", path, lineno)
        doc = field(row, "doc_name", path, lineno)
        pieces = []
        for k, item in enumerate(evidence):
            if not isinstance(item, dict) or not isinstance(item.get("evidence_text"), str):
                raise DataError(f"{where}:{lineno}: evidence[{k}] should be an object with a string 'evidence_text'")
            pieces.append(squeeze(item["evidence_text"]))
        fitted = fit_evidence(pieces)
        text = "\n".join(f"Evidence {k + 1}: {p}" for k, p in enumerate(fitted))
        return Example(
            id=f"{self.id}/test/{fid}",
            input=f"Filing: {doc}\n{text}\nQuestion: {question}",
            target=answer,
            group=str(row.get("company") or doc),
            meta={
                "question": question,
                "justification": row.get("justification"),
                "question_type": row.get("question_type"),
                "company": row.get("company"),
                "doc_name": doc,
                "evidence_truncated": fitted != pieces,
                "source_line": lineno,
            },
        )
