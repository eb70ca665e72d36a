"""User-defined YAML tasks: the shipped example, each kind, splits, and errors that name the file and field/line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from fincocktail.tasks import prompts
from fincocktail.errors import ConfigError, DataError
from fincocktail.metrics.text import token_f1
from fincocktail.tasks.custom import load_user_tasks
from fincocktail.tasks.answers import extract_number
from fincocktail.tasks.registry import get_task, task_ids

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(folder: Path, name: str, rows: list[dict]) -> None:
    _write(folder, name, "".join(json.dumps(r) + "\n" for r in rows))


CLS_YAML = """\
id: tone
kind: classification
data: tone.jsonl
fields: {input: text, label: tone}
labels: [negative, neutral, positive]
instruction: "Tone? Please choose an answer from {negative/neutral/positive}."
split: {test_fraction: 0.3, validation_fraction: 0.2, seed: 3}
"""


def _tone_rows(n: int = 40) -> list[dict]:
    tones = ["negative", "neutral", "positive"]
    return [{"text": f"Sentence number {i} about results.", "tone": tones[i % 3]} for i in range(n)]


def test_shipped_example_loads_and_renders() -> None:
    tasks = load_user_tasks(EXAMPLES)
    assert list(tasks) == ["earnings_tone"]
    task = tasks["earnings_tone"]
    sizes = {s: len(task.load(s, None)) for s in task.splits}
    assert sum(sizes.values()) == 20 and all(sizes.values())
    ex = task.load("test", None)[0]
    pair = prompts.render(task, ex)
    assert pair.prompt.startswith("Instruction: What is the tone of this earnings-call sentence?")
    assert pair.target == " " + ex.target and ex.target in ("negative", "neutral", "positive")
    assert task.extract("Upbeat!") == "positive"  # YAML synonyms
    assert task.version == f"earnings_tone@user-1+prompts.{prompts.TEMPLATE_VERSION}"


def test_registry_finds_user_tasks_by_flag_and_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "earnings_tone" in task_ids(EXAMPLES)
    assert "earnings_tone" not in task_ids()
    monkeypatch.setenv("FINCOCKTAIL_TASKS", str(EXAMPLES))
    assert get_task("earnings_tone").id == "earnings_tone"


def test_seeded_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    _write(tmp_path, "tone.yaml", CLS_YAML)
    _jsonl(tmp_path, "tone.jsonl", _tone_rows())
    task = load_user_tasks(tmp_path)["tone"]
    splits = {s: task.load(s, None) for s in ("train", "validation", "test")}
    ids = [e.id for s in splits.values() for e in s]
    assert len(ids) == len(set(ids)) == 40
    groups = {s: {e.group for e in ex} for s, ex in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
    assert 0.15 < len(splits["test"]) / 40 < 0.45
    again = load_user_tasks(tmp_path)["tone"].load("test", None)
    assert [e.id for e in again] == [e.id for e in splits["test"]]
    # scoring: accuracy / F1 against sklearn, a parse failure counted wrong
    test = splits["test"]
    preds = [task.extract(t) for t in (["positive", "The tone is negative", "hmm"] * 20)[: len(test)]]
    scores = task.score(preds, test)
    gold = [e.target for e in test]
    as_class = [p or "<x>" for p in preds]
    labels = sorted(set(gold) | {p for p in preds if p})
    assert scores["f1_macro"] == pytest.approx(f1_score(gold, as_class, labels=labels, average="macro"))
    assert scores["parse_failure_rate"] == pytest.approx(preds.count(None) / len(preds))


def test_given_split_files_and_group_field(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "t.yaml",
        """\
id: tone_files
kind: classification
files: {train: train.csv, test: test.csv}
fields: {input: text, label: tone, group: company}
labels: [negative, positive]
instruction: Tone?
split: {validation_fraction: 0.5}
""",
    )
    _write(tmp_path, "train.csv", "text,tone,company\n" + "".join(f"Line {i},{'positive' if i % 2 else 'NEGATIVE'},c{i % 6}\n" for i in range(30)))
    _write(tmp_path, "test.csv", "text,tone,company\nRevenue up,positive,x\nRevenue down,negative,y\n")
    task = load_user_tasks(tmp_path)["tone_files"]
    assert task.splits == ("train", "validation", "test")
    train, validation, test = (task.load(s, None) for s in ("train", "validation", "test"))
    assert len(test) == 2 and len(train) + len(validation) == 30 and validation
    assert {e.group for e in train}.isdisjoint({e.group for e in validation})
    assert {e.target for e in train} == {"negative", "positive"}  # label case is normalised to the YAML's
    assert test[0].meta["source_line"] == 2


def test_multiple_choice_numeric_and_open_qa_kinds(tmp_path: Path) -> None:
    _write(tmp_path, "mc.yaml", "id: mc\nkind: multiple_choice\ndata: mc.jsonl\nfields: {input: q, label: answer, choices: options}\ninstruction: Pick one.\neval_only: true\n")
    _jsonl(tmp_path, "mc.jsonl", [
        {"q": "Which is a liability?", "options": ["Cash", "Accounts payable", "Inventory"], "answer": "Accounts payable"},
        {"q": "Which is equity?", "options": ["Retained earnings", "Debt"], "answer": 0},
        {"q": "Which is revenue?", "options": ["Sales", "Rent"], "answer": "a"},
    ])
    _write(tmp_path, "num.yaml", "id: num\nkind: numeric\ndata: num.jsonl\nfields: {input: q, answer: a}\ninstruction: Compute.\nrel_tolerance: 0.01\neval_only: true\n")
    _jsonl(tmp_path, "num.jsonl", [{"q": "2+2?", "a": 4}, {"q": "Margin?", "a": "12.5%"}])
    _write(tmp_path, "qa.yaml", "id: qa\nkind: open_qa\ndata: qa.jsonl\nfields: {input: q, answer: a}\ninstruction: Answer.\nmetric: token_f1\neval_only: true\n")
    _jsonl(tmp_path, "qa.jsonl", [{"q": "Who audits?", "a": "The external auditor"}])
    tasks = load_user_tasks(tmp_path)

    mc = tasks["mc"].load("test", None)
    assert [e.target for e in mc] == ["B", "A", "A"]
    assert mc[0].input.endswith("\nA. Cash\nB. Accounts payable\nC. Inventory") and mc[0].choices == ("A", "B", "C")
    assert tasks["mc"].extract("The answer is (B)") == "B"
    assert tasks["mc"].score(["B", "B", None], mc)["accuracy"] == pytest.approx(1 / 3)

    num_task = tasks["num"]
    num = num_task.load("test", None)
    assert num_task.is_correct(num_task.extract("The total is 4.0"), num[0])
    assert num_task.is_correct(num_task.extract("about 12.55 percent"), num[1])  # within 1%
    assert not num_task.is_correct(num_task.extract("13.0"), num[1])
    assert num_task.score([num_task.extract("4"), None], num) == {"accuracy": 0.5, "exact_match": 0.5, "parse_failure_rate": 0.5, "n": 2.0}

    qa_task = tasks["qa"]
    qa = qa_task.load("test", None)
    assert qa_task.metric == "token_f1"
    scores = qa_task.score([qa_task.extract("external auditor\nmore text")], qa)
    assert scores["exact_match"] == 1.0 and scores["token_f1"] == 1.0


def test_numeric_kind_reads_and_matches_numbers_like_finqa(tmp_path: Path) -> None:
    """User numeric tasks share FinQA's reader and matcher: percent, currency, scale words, accounting negatives."""
    _write(tmp_path, "num.yaml", "id: num\nkind: numeric\ndata: num.jsonl\nfields: {input: q, answer: a}\ninstruction: Compute.\nrel_tolerance: 0.01\neval_only: true\n")
    _jsonl(tmp_path, "num.jsonl", [{"q": "Margin?", "a": "12.5%"}, {"q": "Loss?", "a": "$(1,234)"}, {"q": "Count?", "a": 7}])
    task = load_user_tasks(tmp_path)["num"]
    margin, loss, count = task.load("test", None)
    assert count.target == "7" and loss.meta["value"] == -1234.0
    assert task.is_correct(task.extract("The margin is 0.125."), margin)  # "12.5%" read as 0.125 too
    assert not task.is_correct(task.extract("The margin is 1.25"), margin)
    assert task.is_correct(task.extract("Answer: -1.234 thousand"), loss)  # scale word applied
    assert not task.is_correct(task.extract("1,234"), loss)  # the sign matters
    assert task.extract("Answer: 7", "strict") == "7" and task.extract("about 7", "strict") is None
    with pytest.raises(ValueError, match="2 predictions for 3 examples of task 'num'"):
        task.score(["7", "7"], [margin, loss, count])
    with pytest.raises(ConfigError, match="task 'num' has no split 'train'"):
        task.load("train", None)
    _jsonl(tmp_path, "num.jsonl", [{"q": "Bad?", "a": "1,23"}])
    with pytest.raises(DataError, match=r"num\.jsonl:1: field 'a' value '1,23' is not a number"):
        task.load("test", None)


def test_number_and_token_f1_helpers() -> None:
    assert extract_number("1,234.5") == repr(1234.5)
    assert extract_number("(12)") == "-12"  # the shared extractor writes whole numbers without ".0"
    assert extract_number("It rose from 10 to 12.5%") == "12.5%"  # and keeps the percent mark
    assert extract_number("no number", "flexible") is None
    assert extract_number("about 3", "strict") is None
    assert token_f1("the net income", "net income rose") == pytest.approx(2 * (1 * 2 / 3) / (1 + 2 / 3))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("id: x\nkind: classification\n  bad: [indent\n", r"t\.yaml:\d+: invalid YAML"),
        ("- just\n- a list\n", r"t\.yaml: expected a mapping"),
        ("id: x\nkind: classification\ndata: d.jsonl\nfields: {input: a, label: b}\nlabels: [p, n]\n", r"t\.yaml: field 'instruction': Field required"),
        ("id: x\nkind: regression\ndata: d.jsonl\nfields: {input: a}\ninstruction: i\n", r"t\.yaml: field 'kind'"),
        ("id: x\nkind: classification\ndata: d.jsonl\nfields: {input: a, label: b}\ninstruction: i\n", r"t\.yaml: kind 'classification' needs 'labels'"),
        ("id: x\nkind: classification\ndata: d.jsonl\nfields: {input: a, label: b}\nlabels: [p, n]\ninstruction: i\nmetric: bleu\n", r"metric 'bleu' is not available for kind 'classification'"),
        ("id: x\nkind: classification\ndata: d.jsonl\nfiles: {test: t.jsonl}\nfields: {input: a, label: b}\nlabels: [p, n]\ninstruction: i\n", r"give exactly one of 'data'"),
        ("id: x\nkind: classification\ndata: d.jsonl\nfields: {input: a, label: b}\nlabels: [p, n]\ninstruction: i\nsplit: {test_fraction: 1.5}\n", r"field 'split\.test_fraction'"),
        ("id: X Y\nkind: numeric\ndata: d.jsonl\nfields: {input: a, answer: b}\ninstruction: i\n", r"field 'id'"),
        ("id: x\nkind: numeric\ndata: d.jsonl\nfields: {input: a, answer: b}\ninstruction: i\ntypo_field: 1\n", r"field 'typo_field': Extra inputs"),
    ],
)
def test_bad_yaml_names_the_file_and_field(tmp_path: Path, yaml_text: str, message: str) -> None:
    _write(tmp_path, "t.yaml", yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_user_tasks(tmp_path)
    assert "\n" not in str(info.value)


def test_id_collisions_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", CLS_YAML.replace("id: tone", "id: fpb"))
    with pytest.raises(ConfigError, match=r"a\.yaml: field 'id': 'fpb' is a built-in task"):
        load_user_tasks(tmp_path)
    _write(tmp_path, "a.yaml", CLS_YAML)
    _write(tmp_path, "b.yml", CLS_YAML)
    with pytest.raises(ConfigError, match=r"b\.yml: field 'id': 'tone' is already defined in .*a\.yaml"):
        load_user_tasks(tmp_path)


def test_missing_tasks_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user tasks folder .* not found"):
        load_user_tasks(tmp_path / "nope")


def test_bad_rows_name_the_data_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "tone.yaml", CLS_YAML)
    rows = _tone_rows(5)
    rows[3]["tone"] = "ecstatic"
    _jsonl(tmp_path, "tone.jsonl", rows)
    task = load_user_tasks(tmp_path)["tone"]
    with pytest.raises(DataError, match=r"tone\.jsonl:4: field 'tone' value 'ecstatic' is not one of negative, neutral, positive"):
        task.load("train", None)
    rows[3] = {"text": "no label here"}
    _jsonl(tmp_path, "tone.jsonl", rows)
    with pytest.raises(DataError, match=r"tone\.jsonl:4: missing field 'tone'"):
        task.load("train", None)
    (tmp_path / "tone.jsonl").unlink()
    with pytest.raises(DataError, match=r"task 'tone': data file .*tone\.jsonl not found"):
        task.load("test", None)


def test_example_folder_is_copyable(tmp_path: Path) -> None:
    """The example refers to its data relative to the YAML, so a copied folder keeps working."""
    shutil.copytree(EXAMPLES, tmp_path / "mine")
    task = load_user_tasks(tmp_path / "mine")["earnings_tone"]
    assert str(task.source_files(None)[0]).startswith(str(tmp_path / "mine"))
    assert len(task.load("train", None)) == len(load_user_tasks(EXAMPLES)["earnings_tone"].load("train", None))
