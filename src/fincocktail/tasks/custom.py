"""User-defined tasks: a folder of YAML files, each describing one task over a JSONL or CSV file.

An ML engineer adds their own evaluation (or training ingredient) without writing Python:

    id: earnings_tone
    kind: classification            # classification | multiple_choice | numeric | open_qa
    data: earnings_tone.jsonl       # relative to this YAML; or `files: {train: ..., test: ...}`
    fields: {input: sentence, label: tone}
    labels: [negative, neutral, positive]
    instruction: "What is the tone of this earnings-call sentence? ..."
    metric: accuracy
    split: {test_fraction: 0.2, validation_fraction: 0.1, seed: 1}

The YAML is validated with pydantic (an error names the file and the field); a row with a bad
label or a missing field names the data file and line. Splits are made by hashing (the group
field, else the input text), never by shuffling, so they are the same on every machine.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fincocktail.errors import ConfigError, DataError
from fincocktail.plumbing.fileio import format_validation_error, load_yaml
from fincocktail.metrics.text import exact_match
from fincocktail.tasks.answers import extract_number, format_float, parse_number
from fincocktail.tasks.base import Example, ExtractMode, GenerationSpec, Task, versioned
from fincocktail.tasks.builtin import BUILTIN_TASKS
from fincocktail.tasks.classification import ClassificationTask, MultipleChoiceTask
from fincocktail.tasks.io import read_csv, read_jsonl, require_file
from fincocktail.tasks.scoring import numbers_match, numeric_scores, open_answer_scores
from fincocktail.tasks.splits import normalize_text, split_by_key

UserKind = Literal["classification", "multiple_choice", "numeric", "open_qa"]
SplitName = Literal["train", "validation", "test"]
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "f1_weighted"),
    "multiple_choice": ("accuracy",),
    "numeric": ("accuracy", "exact_match"),
    "open_qa": ("exact_match", "token_f1"),
}
LETTERS = string.ascii_uppercase


class FieldsSpec(BaseModel):
    """Which columns of the data file hold what."""

    model_config = ConfigDict(extra="forbid")

    input: str | None = None
    label: str | None = None
    answer: str | None = None
    choices: str | None = None
    group: str | None = None


class SplitSpec(BaseModel):
    """A seeded split of one data file: hash(seed, group) decides each group's side."""

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int | str = 0


class UserTaskSpec(BaseModel):
    """The YAML file of one user task."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$")
    kind: UserKind
    description: str = ""
    instruction: str
    input_template: str | None = None
    data: str | None = None
    files: dict[SplitName, str] | None = None
    fields: FieldsSpec
    labels: list[str] | None = None
    synonyms: dict[str, str] = Field(default_factory=dict)
    metric: str | None = None
    split: SplitSpec = Field(default_factory=SplitSpec)
    version: str = "1"
    licence: str = ""
    eval_only: bool = False
    max_new_tokens: int = Field(16, gt=0)
    rel_tolerance: float = Field(1e-3, ge=0.0)

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least two labels")
            lowered = [v.lower() for v in value]
            if len(set(lowered)) != len(lowered):
                raise ValueError("labels must be distinct (case-insensitively)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UserTaskSpec:
        if (self.data is None) == (self.files is None):
            raise ValueError("give exactly one of 'data' (one file, split by 'split') or 'files' (train/validation/test)")
        if self.fields.input is None and self.input_template is None:
            raise ValueError("fields.input (or input_template) is required")
        if self.kind == "classification":
            if not self.labels:
                raise ValueError("kind 'classification' needs 'labels'")
            if not self.fields.label:
                raise ValueError("kind 'classification' needs fields.label")
        if self.kind == "multiple_choice" and not (self.fields.label and self.fields.choices):
            raise ValueError("kind 'multiple_choice' needs fields.label and fields.choices")
        if self.kind in ("numeric", "open_qa") and not self.fields.answer:
            raise ValueError(f"kind '{self.kind}' needs fields.answer")
        allowed = METRICS[self.kind]
        if self.metric is None:
            self.metric = allowed[0]
        elif self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} is not available for kind '{self.kind}'; expected one of {', '.join(allowed)}")
        for word, label in self.synonyms.items():
            if not self.labels or label not in self.labels:
                raise ValueError(f"synonym {word!r} maps to {label!r}, which is not one of the labels")
        return self


def parse_spec(path: Path) -> UserTaskSpec:
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of task fields (id, kind, data, fields, instruction ...)")
    try:
        return UserTaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), label=lambda loc: f"field '{loc}'", plain_messages=True)) from None


# ---------------------------------------------------------------------------- reading rows


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return list(read_jsonl(path))
    if suffix == ".csv":
        return list(read_csv(path))
    if suffix == ".tsv":
        return list(read_csv(path, delimiter="\t"))
    raise DataError(f"{path}: unsupported data file type {suffix!r}; expected .jsonl, .csv or .tsv")


def _value(row: dict[str, Any], name: str, path: Path, lineno: int) -> Any:
    if name not in row or row[name] is None or (isinstance(row[name], str) and not row[name].strip()):
        raise DataError(f"{path}:{lineno}: missing field {name!r}")
    return row[name]


# ---------------------------------------------------------------------------- the task


class _UserTaskMixin:
    """Loading and splitting shared by every user-task kind."""

    spec: UserTaskSpec
    spec_path: Path
    id: str
    check_split: Callable[[str], None]  # from Task, which every user task also derives from

    def _setup(self, spec: UserTaskSpec, spec_path: Path) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.id = spec.id
        self.version = versioned(f"{spec.id}@user-{spec.version}")
        self.description = spec.description or f"user task from {spec_path.name}"
        self.instruction = spec.instruction
        self.metric = spec.metric or METRICS[spec.kind][0]
        self.generation = GenerationSpec(max_new_tokens=spec.max_new_tokens)
        self.eval_only = spec.eval_only
        self.licence = spec.licence
        if spec.files is not None:
            order = [s for s in ("train", "validation", "test") if s in spec.files]
            if "train" in spec.files and "validation" not in spec.files:
                order.insert(1, "validation")
            self.splits = tuple(order)
            self.source = ", ".join(f"{s}: {f}" for s, f in spec.files.items())
        else:
            self.source = spec.data or ""
            self.splits = ("test",) if spec.eval_only else ("train", "validation", "test")

    def source_files(self, data_dir: Path | None = None, split: str | None = None) -> list[Path]:
        """The user's data file(s) `load(split)` reads, next to the YAML (`data_dir` is ignored, as in `load`)."""
        spec = self.spec
        if spec.files is None:
            names = [spec.data]
        elif split is None:
            names = list(dict.fromkeys(spec.files.values()))
        elif split in spec.files:
            names = [spec.files[split]]
        else:  # validation without its own file is carved from train
            names = [spec.files["train"]] if split == "validation" and "train" in spec.files else []
        return [self.spec_path.parent / name for name in names if name]

    def _input(self, row: dict[str, Any], path: Path, lineno: int) -> str:
        if self.spec.input_template:
            try:
                return self.spec.input_template.format_map({k: "" if v is None else v for k, v in row.items()})
            except KeyError as exc:
                raise DataError(f"{path}:{lineno}: missing field {exc.args[0]!r} used by input_template") from exc
        return str(_value(row, self.spec.fields.input or "", path, lineno))

    def _examples(self, split: str, path: Path) -> list[Example]:
        require_file(path, self.id)
        out = []
        for lineno, row in _read_rows(path):
            text = self._input(row, path, lineno)
            group_field = self.spec.fields.group
            group = str(_value(row, group_field, path, lineno)) if group_field else normalize_text(text)
            out.append(self._row_example(f"{self.id}-{split}-{path.stem}-{lineno}", text, group, row, path, lineno))
        return out

    def _row_example(self, id: str, text: str, group: str, row: dict[str, Any], path: Path, lineno: int) -> Example:
        raise NotImplementedError

    def load(self, split: str, data_dir: Path | None = None) -> list[Example]:
        """Read `split`. `data_dir` is ignored: user data lives next to the YAML."""
        self.check_split(split)
        spec = self.spec
        base = self.spec_path.parent
        if spec.files is not None:
            if split in spec.files:
                examples = self._examples(split, base / spec.files[split])
                if split == "train" and "validation" not in spec.files:
                    return self._carve(examples, "train")
                return examples
            # validation carved from the train file
            return self._carve(self._examples(split, base / spec.files["train"]), "validation")
        assert spec.data is not None
        examples = self._examples(split, base / spec.data)
        salt = f"{self.id}/{spec.split.seed}"
        rest, test = split_by_key(examples, key=lambda e: e.group or "", fraction=spec.split.test_fraction, salt=salt + "/test")
        if split == "test":
            return test if not spec.eval_only else examples
        train, validation = split_by_key(rest, key=lambda e: e.group or "", fraction=spec.split.validation_fraction, salt=salt + "/validation")
        return train if split == "train" else validation

    def _carve(self, examples: list[Example], split: str) -> list[Example]:
        train, validation = split_by_key(
            examples, key=lambda e: e.group or "", fraction=self.spec.split.validation_fraction,
            salt=f"{self.id}/{self.spec.split.seed}/validation",
        )
        return train if split == "train" else validation


class UserClassificationTask(_UserTaskMixin, ClassificationTask):
    def __init__(self, spec: UserTaskSpec, spec_path: Path) -> None:
        self._setup(spec, spec_path)
        self.labels = tuple(spec.labels or ())
        self.synonyms = dict(spec.synonyms)
        self._canonical = {label.lower(): label for label in self.labels}

    def _row_example(self, id: str, text: str, group: str, row: dict[str, Any], path: Path, lineno: int) -> Example:
        name = self.spec.fields.label or ""
        raw = str(_value(row, name, path, lineno)).strip()
        label = self._canonical.get(raw.lower())
        if label is None:
            raise DataError(f"{path}:{lineno}: field {name!r} value {raw!r} is not one of {', '.join(self.labels)}")
        return self.make_example(id, text, label, group, {"source_line": lineno})


class UserMultipleChoiceTask(_UserTaskMixin, MultipleChoiceTask):
    """Options are rendered into the input as lettered lines; the answer is the letter."""

    def __init__(self, spec: UserTaskSpec, spec_path: Path) -> None:
        self._setup(spec, spec_path)
        self.labels = tuple(LETTERS[:10])

    def _row_example(self, id: str, text: str, group: str, row: dict[str, Any], path: Path, lineno: int) -> Example:
        cname, lname = self.spec.fields.choices or "", self.spec.fields.label or ""
        choices = _value(row, cname, path, lineno)
        if isinstance(choices, str):
            choices = [c.strip() for c in choices.split("|")]
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(self.labels) or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{path}:{lineno}: field {cname!r} should be a list of 2 to {len(self.labels)} strings (CSV: 'a|b|c')")
        letters = self.labels[: len(choices)]
        raw = _value(row, lname, path, lineno)
        target = None
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(choices):
            target = letters[raw]
        elif isinstance(raw, str):
            stripped = raw.strip()
            if stripped.upper() in letters:
                target = stripped.upper()
            elif stripped in choices:
                target = letters[choices.index(stripped)]
            elif stripped.isdigit() and int(stripped) < len(choices):
                target = letters[int(stripped)]
        if target is None:
            raise DataError(
                f"{path}:{lineno}: field {lname!r} value {raw!r} is not a letter {letters[0]}-{letters[-1]}, "
                "an index or one of the choices"
            )
        rendered = text + "\n" + "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, choices))
        return Example(id=id, input=rendered, target=target, choices=letters, group=group, meta={"source_line": lineno})


class UserNumericTask(_UserTaskMixin, Task):
    """A number as the answer; right when within `rel_tolerance` of the gold value.

    Read and matched as FinQA's answers are (`tasks.answers`, `tasks.scoring`): currency,
    accounting negatives, "%" and scale words are understood, and "12.5%" also matches 0.125.
    """

    kind = "numeric"

    def __init__(self, spec: UserTaskSpec, spec_path: Path) -> None:
        self._setup(spec, spec_path)

    def _row_example(self, id: str, text: str, group: str, row: dict[str, Any], path: Path, lineno: int) -> Example:
        name = self.spec.fields.answer or ""
        raw = _value(row, name, path, lineno)
        is_number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        target = (format_float(float(raw)) if math.isfinite(raw) else "") if is_number else str(raw).strip()
        parsed = parse_number(target)
        if parsed is None:
            raise DataError(f"{path}:{lineno}: field {name!r} value {raw!r} is not a number")
        return Example(id=id, input=text, target=target, group=group, meta={"source_line": lineno, "value": parsed.value})

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        return extract_number(text, mode)

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return numbers_match(prediction, example.target, rtol=self.spec.rel_tolerance)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        self.check_lengths(predictions, examples)
        return numeric_scores(predictions, [e.target for e in examples], rtol=self.spec.rel_tolerance)


class UserOpenQATask(_UserTaskMixin, Task):
    """Free-text answer: exact match and token F1 after SQuAD-style normalisation."""

    kind = "open_qa"

    def __init__(self, spec: UserTaskSpec, spec_path: Path) -> None:
        self._setup(spec, spec_path)

    def _row_example(self, id: str, text: str, group: str, row: dict[str, Any], path: Path, lineno: int) -> Example:
        answer = str(_value(row, self.spec.fields.answer or "", path, lineno)).strip()
        return Example(id=id, input=text, target=answer, group=group, meta={"source_line": lineno})

    def extract(self, text: str, mode: ExtractMode = "flexible") -> str | None:
        if text is None:
            return None
        if mode == "strict":
            return text.strip() or None
        for line in text.splitlines():
            if line.strip():
                return line.strip()
        return None

    def is_correct(self, prediction: str | None, example: Example) -> bool:
        return exact_match(prediction, example.target)

    def score(self, predictions: Sequence[str | None], examples: Sequence[Example]) -> dict[str, float]:
        """FinanceBench's scores: exact match, token F1, and numeric accuracy over the number golds."""
        self.check_lengths(predictions, examples)
        return open_answer_scores(predictions, [e.target for e in examples], rtol=self.spec.rel_tolerance)


_KINDS: dict[str, type] = {
    "classification": UserClassificationTask,
    "multiple_choice": UserMultipleChoiceTask,
    "numeric": UserNumericTask,
    "open_qa": UserOpenQATask,
}


def build_user_task(spec: UserTaskSpec, spec_path: Path) -> Task:
    return _KINDS[spec.kind](spec, spec_path)


def load_user_tasks(tasks_dir: str | Path) -> dict[str, Task]:
    """Every `*.yaml` / `*.yml` task in `tasks_dir`, by id. Ids may not collide with built-ins or each other."""
    folder = Path(tasks_dir).expanduser().absolute()  # relative: the working directory's (`registry.user_tasks_dir`)
    if not folder.is_dir():
        raise ConfigError(f"user tasks folder {folder} not found (from --tasks-dir or FINCOCKTAIL_TASKS)")
    tasks: dict[str, Task] = {}
    where: dict[str, Path] = {}
    for path in sorted(list(folder.glob("*.yaml")) + list(folder.glob("*.yml"))):
        spec = parse_spec(path)
        if spec.id in BUILTIN_TASKS:
            raise ConfigError(f"{path}: field 'id': {spec.id!r} is a built-in task; choose another id")
        if spec.id in tasks:
            raise ConfigError(f"{path}: field 'id': {spec.id!r} is already defined in {where[spec.id]}")
        tasks[spec.id] = build_user_task(spec, path)
        where[spec.id] = path
    return tasks


__all__ = ["UserTaskSpec", "build_user_task", "load_user_tasks", "parse_spec"]
