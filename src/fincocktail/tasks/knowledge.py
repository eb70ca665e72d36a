"""Finance knowledge, evaluation only: CFA-style three-option multiple choice (FinBen `flare-cfa`).

(FinanceBench lives in `tasks/financebench.py`.)
"""

from __future__ import annotations

from pathlib import Path

from fincocktail.errors import DataError
from fincocktail.tasks.base import Example, GenerationSpec, versioned
from fincocktail.tasks.classification import MultipleChoiceTask
from fincocktail.tasks.io import read_json, require_file
from fincocktail.tasks.splits import normalize_text

CFA_INSTRUCTION = (
    "Read the questions and answers carefully, and choose the one you think is appropriate among the three options "
    "A, B and C."
)


class CFA(MultipleChoiceTask):
    """1032 CFA-style questions; the input holds the question and its options, the answer is a letter.

    The gold answer is the `gold` index, which FinBen scores against. In 3 rows the `answer`
    letter disagrees with `gold` (a lowercase letter, probably hand-corrected upstream); we keep
    `gold` so scores stay comparable, and record `answer` in `meta["answer_field"]`.
    """

    id = "cfa"
    version = versioned("cfa@flare")
    description = "CFA-style 3-option multiple choice (FinBen flare-cfa), accuracy; evaluation only"
    instruction = CFA_INSTRUCTION
    labels = ("A", "B", "C")
    metric = "accuracy"
    splits = ("test",)
    eval_only = True
    generation = GenerationSpec(max_new_tokens=8)
    source = "cfa/flare_cfa_test.json (hub: TheFinAI/flare-cfa)"
    data_files = ("cfa/flare_cfa_test.json",)
    licence = "not stated (FinBen research release); do not redistribute"

    def __init__(self, source: str = "local") -> None:
        if source not in ("local", "hub"):
            raise DataError(f"task 'cfa': unknown source {source!r}; expected 'local' or 'hub'")
        self.data_source = source

    def _rows(self, data_dir: Path) -> tuple[str, list[dict]]:
        if self.data_source == "hub":
            try:
                import datasets  # type: ignore[import-not-found]
            except ImportError as exc:
                raise DataError("source='hub' needs the 'datasets' package (pip install datasets) to load TheFinAI/flare-cfa") from exc
            return "TheFinAI/flare-cfa", list(datasets.load_dataset("TheFinAI/flare-cfa")["test"])
        path = require_file(Path(data_dir) / "cfa" / "flare_cfa_test.json", self.id)
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of {{query, text, choices, gold}} objects")
        return str(path), data

    def load(self, split: str, data_dir: Path) -> list[Example]:
        self.check_split(split)
        where, rows = self._rows(Path(data_dir))
        out = []
        for i, row in enumerate(rows):
            here = f"{where}: item {i}"
            if not isinstance(row, dict):
                raise DataError(f"{here}: expected an object")
            text, choices, gold = row.get("text"), row.get("choices"), row.get("gold")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{here}: missing field 'text'")
            if list(choices or []) != list(self.labels):
                raise DataError(f"{here}: field 'choices' should be {list(self.labels)}, got {choices!r}")
            if not isinstance(gold, int) or not 0 <= gold < len(self.labels):
                raise DataError(f"{here}: field 'gold' should be an index 0..{len(self.labels) - 1}, got {gold!r}")
            target = self.labels[gold]
            out.append(
                self.make_example(
                    f"cfa-test-{i}", text, target, normalize_text(text), {"answer_field": row.get("answer"), "index": i}
                )
            )
        return out
