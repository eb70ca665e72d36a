"""GSM8K grade-school math: the study's math ingredient (Orca-Math when online), and an eval task.

Version `gsm8k@v1`: the official train (7473) and test (1319) files; validation is about 5% of
the train questions, chosen by hash of the normalised question (so train + validation = 7473).

Targets are worked solutions, because training on the reasoning is what the math ingredient is
for: the original answer with its calculator annotations ("<<48/2=24>>") removed and the final
"#### 72" line rewritten as "The answer is 72." (commas dropped from the number). The original
answer and the final number stay in `meta["rationale"]` / `meta["answer"]`. Evaluation
compares the number extracted from the model's output (flexible: after "The answer is" /
"####", else the last number, as lm-eval's flexible extract) with `meta["answer"]`, exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from fincocktail.errors import DataError
from fincocktail.tasks.answers import extract_final_answer, parse_number
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, versioned
from fincocktail.tasks.generative import GenerativeTask, hub_dataset
from fincocktail.tasks.io import field, read_jsonl, require_file
from fincocktail.tasks.scoring import EXACT_RTOL, numbers_match, numeric_scores
from fincocktail.tasks.splits import carve_validation, normalize_text

VALIDATION_FRACTION = 0.05
HUB_ID = "openai/gsm8k"

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?####\s*(?P<answer>[^\n]+?)\s*$")


def worked_solution(answer: str) -> tuple[str, str] | None:
    """(solution ending "The answer is N.", N) from a GSM8K answer, or None if it has no "#### N"."""
    m = _FINAL.search(answer)
    if m is None:
        return None
    number = parse_number(m.group("answer"))
    if number is None:
        return None
    final = number.canonical()
    steps = _CALCULATOR.sub("", answer[: m.start()]).strip()
    solution = f"{steps}\nThe answer is {final}." if steps else f"The answer is {final}."
    return solution, final


class GSM8K(GenerativeTask):
    id = "gsm8k"
    version = versioned("gsm8k@v1")
    kind = "numeric"
    description = (
        "Grade-school math word problems (the study's math ingredient); target = worked solution ending "
        "'The answer is N.'; scored by exact match of the final number."
    )
    instruction = "Solve the math word problem step by step, then give the final answer as 'The answer is N.'"
    metric = "accuracy"
    splits = ("train", "validation", "test")
    # Reasoning first, then the number: the longest solution has 1156 characters. A blank line
    # or a new prompt ends an answer; single newlines separate the steps.
    generation = GenerationSpec(max_new_tokens=400, stop=("\n\n", "\nInstruction:", "\nQuestion:"))
    source = "gsm8k/train.jsonl, gsm8k/test.jsonl (hub: openai/gsm8k, config main)"
    licence = "MIT"
    data_files = ("gsm8k/train.jsonl", "gsm8k/test.jsonl")

    def source_files(self, data_dir: Path, split: str | None = None) -> list[Path]:
        """Train and validation come from train.jsonl only; test from test.jsonl only."""
        files = super().source_files(data_dir, split)
        if split is None:
            return files
        wanted = "test.jsonl" if split == "test" else "train.jsonl"
        return [f for f in files if f.name == wanted]

    def _rows(self, split: str, data_dir: Path) -> list[tuple[str, int, str, str]]:
        """(file, line, question, answer) for the original train or test file."""
        if self.data_source == "hub":
            ds = hub_dataset(self.id, HUB_ID, "main", split=split)
            return [(f"{HUB_ID}:{split}", i + 1, r["question"], r["answer"]) for i, r in enumerate(ds)]
        path = require_file(Path(data_dir) / "gsm8k" / f"{split}.jsonl", self.id)
        return [
            (path.name, lineno, field(obj, "question", path, lineno), field(obj, "answer", path, lineno))
            for lineno, obj in read_jsonl(path)
        ]

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        if split == "test":
            rows = self._rows("test", data_dir)
        else:
            train, validation = carve_validation(
                self._rows("train", data_dir),
                key=lambda r: normalize_text(r[2]),
                salt="gsm8k@v1/validation",
                fraction=VALIDATION_FRACTION,
            )
            rows = train if split == "train" else validation
        return [self._example(split, *row) for row in rows]

    def _example(self, split: str, file: str, line: int, question: str, answer: str) -> Example:
        parsed = worked_solution(answer)
        if parsed is None:
            raise DataError(f"{file}:{line}: field 'answer' should end with '#### <number>'")
        solution, final = parsed
        return Example(
            id=f"{self.id}/{split}/{Path(file).stem}-{line}",
            input=question.strip(),
            target=solution,
            group=normalize_text(question),
            meta={"answer": final, "rationale": answer, "source_line": line},
        )

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_final_answer(text, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return numbers_match(prediction, example.meta["answer"], rtol=EXACT_RTOL)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        return numeric_scores(predictions, [e.meta["answer"] for e in examples], rtol=EXACT_RTOL)
