"""FinQA and ConvFinQA: numerical reasoning over a filing's text and table.

Offline only the dev sets exist (FinQA 883 questions as PIXIU prompts; ConvFinQA 421
conversations, 1490 turns). Version `*@dev-split-v1` divides them by *document* into train /
validation / test (about 60 / 10 / 30% of documents): every question about one page lands on
one side. ConvFinQA's conversations are built from FinQA's documents (the 218 pages behind its
421 dev conversations are all FinQA dev pages), so both tasks use one document key
(`document_key`, which also keeps together the few pages that open with the same 200
characters, e.g. one company's note in two years) and one hash: a page
is on the same side in both, and a cocktail that trains on one and tests on the other sees no
test page in training.

ConvFinQA example = one turn: the context, the earlier turns' questions with their gold
(executed) answers as history, and the turn's question (the standard teacher-forced reading;
1490 examples). Targets are the executed answers (FinQA's and ConvFinQA's `exe_ans`, five
decimals, fractions for percentages, e.g. 0.125); a few are "yes"/"no".

Scoring: accuracy = numeric match within 1% relative (a "%" answer also read divided by 100,
see `fincocktail.tasks.scoring`), plus exact numeric match; yes/no golds need the same
word. With `source="hub"` the official train / dev / test splits of PIXIU's copies are used
as they are (version `*@flare-official-v1`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from fincocktail.errors import DataError
from fincocktail.tasks.answers import extract_number, extract_yes_no, format_float
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, versioned
from fincocktail.tasks.generative import GenerativeTask, Source, document_key, hub_dataset
from fincocktail.tasks.io import read_json, read_jsonl, require_file, typed
from fincocktail.tasks.scoring import DEFAULT_RTOL, answers_match, numeric_scores
from fincocktail.tasks.splits import unit_hash

TEST_FRACTION = 0.3
VALIDATION_FRACTION = 0.1
SPLIT_SALT = "finqa-documents@dev-split-v1"  # shared by FinQA and ConvFinQA on purpose

_PIXIU_PROMPT = re.compile(
    r"^(?P<instruction>[^\n]*)\nContext: (?P<context>.*)\nQuestion: (?P<question>.*?)\nAnswer:\s*$", re.DOTALL
)
_LEADING_YES_NO = re.compile(r"^\W*(?:answer\s*:\s*)?(yes|no)\b", re.IGNORECASE)


def document_split(key: str) -> str:
    """'train', 'validation' or 'test' for a document key, the same for FinQA and ConvFinQA."""
    u = unit_hash(key, SPLIT_SALT)
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VALIDATION_FRACTION:
        return "validation"
    return "train"


def extract_numeric_answer(text: str | None, mode: ExtractMode = "flexible") -> str | None:
    """A number ("12.5%", "-1234.5") or "yes"/"no" for FinQA-style answers.

    flexible: an output that opens with yes/no is that word ("No, it fell to 0.5" answers a
    yes/no question); otherwise the first number after an answer marker, else the first number.
    """
    if text is None:
        return None
    if mode == "flexible":
        lead = _LEADING_YES_NO.match(text)
        if lead:
            return lead.group(1).lower()
    number = extract_number(text, mode, fallback="first")
    if number is not None:
        return number
    return extract_yes_no(text, mode)


def format_answer(value: Any) -> str:
    """An executed answer as target text: floats compactly (0.125, 1e-05), words lower-cased."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format_float(float(value))
    return str(value).strip().lower()


def linearize_table(table: str) -> str:
    """ConvFinQA's "a | b | c" rows in PIXIU's FinQA markup "|a|b|c|", so both tasks read alike."""
    rows = [line for line in table.splitlines() if line.strip()]
    return "\n".join("|" + "|".join(cell.strip() for cell in row.split(" | ")) + "|" for row in rows)


class _NumericReasoningTask(GenerativeTask):
    kind = "numeric"
    metric = "accuracy"
    splits = ("train", "validation", "test")
    generation = GenerationSpec(max_new_tokens=24, stop=("\n",))
    licence = "MIT"
    rtol = DEFAULT_RTOL
    HUB_ID: str
    HUB_SPLITS: ClassVar[dict[str, str]] = {"train": "train", "validation": "valid", "test": "test"}
    HUB_VERSION: str  # the version when reading the hub copy: its official splits, not ours

    def __init__(self, source: Source = "local") -> None:
        super().__init__(source)
        if source == "hub":
            self.version = self.HUB_VERSION

    def _hub_rows(self, split: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(index, where, row) of PIXIU's copy of `split`, each row checked for a string `query` and an `answer`."""
        name = self.HUB_SPLITS[split]
        for i, r in enumerate(hub_dataset(self.id, self.HUB_ID, split=name)):
            where = f"{self.HUB_ID}:{name} row {i}"
            if not isinstance(r.get("query"), str) or r.get("answer") is None:
                raise DataError(f"{where}: expected string fields 'query' and 'answer'")
            yield i, where, r

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_numeric_answer(text, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return answers_match(prediction, example.target, rtol=self.rtol)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        return numeric_scores(predictions, [e.target for e in examples], rtol=self.rtol)


# --------------------------------------------------------------------------------------------
# FinQA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinQARow:
    key: str  # PIXIU id ("finqa12")
    line: int
    instruction: str
    context: str
    question: str
    answer: str


def parse_pixiu_prompt(prompt: str, where: str) -> tuple[str, str, str]:
    """(instruction, context, question) of a PIXIU FinQA prompt; DataError naming `where` if not one."""
    m = _PIXIU_PROMPT.match(prompt)
    if m is None:
        raise DataError(f"{where}: expected a prompt 'INSTRUCTION\\nContext: ...\\nQuestion: ...\\nAnswer:'")
    return m.group("instruction").strip(), m.group("context"), m.group("question").strip()


def read_pixiu_finqa(path: Path) -> list[FinQARow]:
    """PIXIU's FinQA JSONL: `{id, conversations: [{from: human, value}, {from: assistant, value}]}`."""
    rows: list[FinQARow] = []
    for lineno, obj in read_jsonl(path):
        conv = obj.get("conversations")
        if not isinstance(conv, list) or len(conv) != 2 or not all(isinstance(c, dict) for c in conv):
            raise DataError(f"{path}:{lineno}: field 'conversations' should be a list of 2 turns (human, assistant)")
        human, assistant = conv
        for k, (turn, role) in enumerate(((human, "human"), (assistant, "assistant"))):
            if turn.get("from") != role or not isinstance(turn.get("value"), str):
                raise DataError(f"{path}:{lineno}: conversations[{k}] should be {{'from': '{role}', 'value': <string>}}")
        instruction, context, question = parse_pixiu_prompt(human["value"], f"{path}:{lineno}")
        answer = assistant["value"].strip()
        if not answer:
            raise DataError(f"{path}:{lineno}: empty answer")
        key = obj.get("id")
        rows.append(FinQARow(str(key) if key is not None else str(lineno), lineno, instruction, context, question, answer))
    return rows


class FinQA(_NumericReasoningTask):
    id = "finqa"
    version = versioned("finqa@dev-split-v1")
    description = (
        "Numerical reasoning over a filing's text and table (FinQA dev set as PIXIU prompts, split by "
        "document into train/validation/test; the full train and test sets need network)."
    )
    instruction = "Please answer the given financial question based on the context."
    source = "finqa/pixiu_finqa_dev.jsonl (hub: ChanceFocus/flare-finqa)"
    data_files = ("finqa/pixiu_finqa_dev.jsonl",)

    HUB_ID = "ChanceFocus/flare-finqa"
    HUB_VERSION = versioned("finqa@flare-official-v1")

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        if self.data_source == "hub":
            return self._load_hub(split)
        path = require_file(Path(data_dir) / "finqa" / "pixiu_finqa_dev.jsonl", self.id)
        rows = read_pixiu_finqa(path)
        return [self._example(r, split) for r in rows if document_split(document_key(r.context)) == split]

    def _example(self, row: FinQARow, split: str) -> Example:
        return Example(
            id=f"{self.id}/{split}/{row.key}",
            input=f"Context: {row.context}\nQuestion: {row.question}",
            target=row.answer,
            group=document_key(row.context),
            meta={"question": row.question, "source_id": row.key, "source_line": row.line},
        )

    def _load_hub(self, split: str) -> list[Example]:
        out = []
        for i, where, r in self._hub_rows(split):
            instruction, context, question = parse_pixiu_prompt(r["query"], where)
            row = FinQARow(str(r.get("id", i)), i, instruction, context, question, format_answer(r["answer"]))
            out.append(self._example(row, split))
        return out


# --------------------------------------------------------------------------------------------
# ConvFinQA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    id: str
    index: int  # position in the file
    context: str  # pre-text, table (PIXIU markup), post-text
    questions: tuple[str, ...]
    answers: tuple[str, ...]  # executed answers as target text

    @property
    def document(self) -> str:
        """The page's id: "Single_MRO/2007/page_134.pdf-1" -> "MRO/2007/page_134.pdf"."""
        doc = re.sub(r"^(?:Single|Double)_", "", self.id)
        return re.sub(r"-\d+$", "", doc)


def _require(obj: Any, path: list[str], where: str, kind: type | tuple[type, ...]) -> Any:
    value = obj
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise DataError(f"{where}: missing field {'.'.join(path)!r}")
        value = value[name]
    return typed(value, kind, where, ".".join(path))


def read_convfinqa(turns_path: Path, pot_path: Path) -> list[Conversation]:
    """Conversations from the turns file (questions, executed answers, text) and the final-turn
    file (the table as text, which the turns file only keeps as a lossy dict)."""
    data = read_json(turns_path)
    entries = data.get("dev") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DataError(f"{turns_path}: expected a list of conversations (or {{'dev': [...]}})")
    pot = read_json(pot_path)
    if not isinstance(pot, list):
        raise DataError(f"{pot_path}: expected a list of conversations")
    tables: dict[str, str] = {}
    for i, p in enumerate(pot):
        where = f"{pot_path}: entry {i}"
        tables[_require(p, ["id"], where, str)] = _require(p, ["table"], where, str)
    out: list[Conversation] = []
    for i, e in enumerate(entries):
        where = f"{turns_path}: entry {i}"
        cid = _require(e, ["id"], where, str)
        where = f"{turns_path}: entry {i} ({cid})"
        pre = _require(e, ["doc", "pre_text"], where, str)
        post = _require(e, ["doc", "post_text"], where, str)
        questions = _require(e, ["dialogue", "conv_questions"], where, list)
        answers = _require(e, ["dialogue", "executed_answers"], where, list)
        if len(questions) != len(answers) or not questions:
            raise DataError(f"{where}: {len(questions)} questions but {len(answers)} executed answers")
        if not all(isinstance(q, str) for q in questions):
            raise DataError(f"{where}: field 'dialogue.conv_questions' should hold strings")
        if not all(isinstance(a, (int, float, str)) for a in answers):
            raise DataError(f"{where}: field 'dialogue.executed_answers' should hold numbers or strings")
        if cid not in tables:
            raise DataError(f"{pot_path}: no entry with id {cid!r} (needed for its table)")
        context = "\n".join(part for part in (pre.strip(), linearize_table(tables[cid]), post.strip()) if part)
        out.append(Conversation(cid, i, context, tuple(q.strip() for q in questions), tuple(format_answer(a) for a in answers)))
    return out


def conversation_input(context: str, questions: Sequence[str], answers: Sequence[str], turn: int) -> str:
    """Context, then the earlier turns as "Q:/A:" history, then the turn's question."""
    parts = [f"Context: {context}"]
    if turn > 0:
        history = "\n".join(f"Q: {q}\nA: {a}" for q, a in zip(questions[:turn], answers[:turn]))
        parts.append(f"Conversation history:\n{history}")
    parts.append(f"Question: {questions[turn]}")
    return "\n".join(parts)


class ConvFinQA(_NumericReasoningTask):
    id = "convfinqa"
    version = versioned("convfinqa@dev-split-v1")
    description = (
        "Conversational numerical reasoning over a filing (ConvFinQA dev set, one example per turn with the "
        "earlier turns as history; split by document, consistently with FinQA)."
    )
    instruction = (
        "Please answer the last question of the conversation based on the context and the previous questions and answers."
    )
    source = "convfinqa/convfinqa_dev_turns.json + convfinqa/pot_convfinqa_dev.json (hub: ChanceFocus/flare-convfinqa)"
    data_files = ("convfinqa/convfinqa_dev_turns.json", "convfinqa/pot_convfinqa_dev.json")

    HUB_ID = "ChanceFocus/flare-convfinqa"
    HUB_VERSION = versioned("convfinqa@flare-official-v1")

    def conversations(self, data_dir: Path) -> list[Conversation]:
        turns = require_file(Path(data_dir) / "convfinqa" / "convfinqa_dev_turns.json", self.id)
        pot = require_file(Path(data_dir) / "convfinqa" / "pot_convfinqa_dev.json", self.id)
        return read_convfinqa(turns, pot)

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        if self.data_source == "hub":
            return self._load_hub(split)
        out: list[Example] = []
        for conv in self.conversations(data_dir):
            key = document_key(conv.context)
            if document_split(key) != split:
                continue
            for turn in range(len(conv.questions)):
                out.append(
                    Example(
                        id=f"{self.id}/{split}/{conv.id}/turn{turn}",
                        input=conversation_input(conv.context, conv.questions, conv.answers, turn),
                        target=conv.answers[turn],
                        group=key,
                        meta={
                            "conversation_id": conv.id,
                            "document": conv.document,
                            "turn": turn,
                            "question": conv.questions[turn],
                            "source_index": conv.index,
                        },
                    )
                )
        return out

    def _load_hub(self, split: str) -> list[Example]:
        """PIXIU's copy: one row per turn, the history already inside `query` (untested offline)."""
        out = []
        for i, _, r in self._hub_rows(split):
            query = re.sub(r"\s*Answer:\s*$", "", r["query"].strip())
            out.append(
                Example(
                    id=f"{self.id}/{split}/{r.get('id', i)}",
                    input=query,
                    target=format_answer(r["answer"]),
                    group=document_key(query),
                    meta={"source_index": i},
                )
            )
        return out
