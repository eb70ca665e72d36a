"""FinNER, FinQA, ConvFinQA, GSM8K, General, FinanceBench: splits, targets, scoring, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fincocktail.errors import ConfigError, DataError
from fincocktail.tasks.prompts import encode_pair, render
from fincocktail.tasks.financebench import (
    MAX_EVIDENCE_CHARS,
    FinanceBench,
    fit_evidence,
)
from fincocktail.tasks.conll import read_conll
from fincocktail.tasks.finner import FinNER
from fincocktail.tasks.finqa import ConvFinQA, FinQA, document_split
from fincocktail.tasks.general import General
from fincocktail.tasks.gsm8k import GSM8K, worked_solution
from fincocktail.tasks.registry import get_task

GENERATIVE = ["finner", "finqa", "convfinqa", "gsm8k", "general", "financebench"]


@pytest.fixture(scope="module")
def loaded(data_dir):
    """Every split of every task, loaded once for the module."""
    out = {}
    for task_id in GENERATIVE:
        task = get_task(task_id)
        out[task_id] = {split: task.load(split, data_dir) for split in task.splits}
    return out


def _ids(examples):
    return [e.id for e in examples]


# --- registry and task attributes ---------------------------------------------------------


@pytest.mark.parametrize(
    "task_id, cls",
    [
        ("finner", FinNER),
        ("finqa", FinQA),
        ("convfinqa", ConvFinQA),
        ("gsm8k", GSM8K),
        ("general", General),
        ("financebench", FinanceBench),
    ],
)
def test_registry_resolves_the_tasks(task_id, cls):
    task = get_task(task_id)
    assert isinstance(task, cls) and task.id == task_id
    assert task.version.startswith(f"{task_id}@") and "+prompts." in task.version
    assert task.description and task.source and task.licence


def test_train_only_and_eval_only_flags():
    assert General.train_only and General.splits == ("train", "validation")
    assert FinanceBench.eval_only and FinanceBench.splits == ("test",)
    for cls in (FinNER, FinQA, ConvFinQA, GSM8K):
        assert cls.splits == ("train", "validation", "test") and not cls.eval_only and not cls.train_only


def test_unknown_split_and_source_are_errors(data_dir):
    with pytest.raises(ConfigError, match="financebench.*train"):
        FinanceBench().load("train", data_dir)
    with pytest.raises(DataError, match="unknown source"):
        FinQA(source="web")


# --- split sizes and separation -------------------------------------------------------------


def test_finner_reads_published_sentence_counts(data_dir):
    assert len(read_conll(data_dir / "finner" / "FIN5.txt")) == 1164
    assert len(read_conll(data_dir / "finner" / "FIN3.txt")) == 303


def test_finner_splits_follow_fingpt(loaded):
    s = loaded["finner"]
    # FinGPT keeps the sentences with a PER/ORG/LOC entity: 511 of FIN5, 98 of FIN3.
    assert len(s["test"]) == 98
    assert len(s["train"]) + len(s["validation"]) == 511
    assert (len(s["train"]), len(s["validation"])) == (464, 47)
    texts = {split: {e.group for e in ex} for split, ex in s.items()}
    assert not texts["train"] & texts["test"] and not texts["validation"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert all("MISC" not in e.target and "is a misc" not in e.target for ex in s.values() for e in ex)
    assert all(e.target != "No entities." for ex in s.values() for e in ex)


def test_finner_example_shape(loaded):
    ex = loaded["finner"]["train"][0]
    assert ex.input == " ".join(ex.meta["tokens"])
    assert ex.target.startswith("SILICON VALLEY BANK is an organization, Bank is an organization, California is a location")
    assert ex.id == "finner/train/FIN5-3" and ex.meta["source_line"] == 3


def test_finqa_splits_by_document(loaded):
    s = loaded["finqa"]
    assert sum(len(ex) for ex in s.values()) == 883
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (506, 100, 277)
    groups = {split: {e.group for e in ex} for split, ex in s.items()}
    assert not groups["train"] & groups["test"]
    assert not groups["train"] & groups["validation"] and not groups["validation"] & groups["test"]
    assert all(document_split(e.group) == split for split, ex in s.items() for e in ex)


def test_convfinqa_turns_and_documents(loaded):
    s = loaded["convfinqa"]
    assert sum(len(ex) for ex in s.values()) == 1490
    conversations = {e.meta["conversation_id"] for ex in s.values() for e in ex}
    assert len(conversations) == 421
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (863, 191, 436)
    groups = {split: {e.group for e in ex} for split, ex in s.items()}
    assert not groups["train"] & groups["test"] and not groups["validation"] & groups["test"]
    # each turn carries the earlier turns (gold answers) as history
    first, second = s["test"][0], s["test"][1]
    assert first.meta["turn"] == 0 and "Conversation history" not in first.input
    assert second.meta["turn"] == 1 and f"Q: {first.meta['question']}\nA: {first.target}" in second.input


def test_finqa_and_convfinqa_share_documents_on_the_same_side(loaded):
    """ConvFinQA's pages are FinQA pages: a page must sit on one side in both tasks."""
    finqa = {split: {e.group for e in ex} for split, ex in loaded["finqa"].items()}
    conv = {split: {e.group for e in ex} for split, ex in loaded["convfinqa"].items()}
    shared = set().union(*finqa.values()) & set().union(*conv.values())
    assert len(shared) == len(set().union(*conv.values()))  # every ConvFinQA page is a FinQA page
    for a in finqa:
        for b in conv:
            if a != b:
                assert not finqa[a] & conv[b], (a, b)


def test_gsm8k_sizes(loaded):
    s = loaded["gsm8k"]
    assert len(s["test"]) == 1319
    assert len(s["train"]) + len(s["validation"]) == 7473
    assert (len(s["train"]), len(s["validation"])) == (7052, 421)
    assert not {e.group for e in s["train"]} & {e.group for e in s["validation"]}


def test_general_sizes_and_instructions(loaded):
    s = loaded["general"]
    assert len(s["train"]) + len(s["validation"]) == 1029 + 999
    assert (len(s["train"]), len(s["validation"])) == (1926, 102)
    every = s["train"] + s["validation"]
    assert sum(e.meta["multi_turn_opening"] for e in every) == 29
    assert all(e.meta["instruction"] and e.target for e in every)
    assert {e.meta["source"] for e in every} == {"lima", "alpaca"}


def test_financebench_examples(loaded):
    ex = loaded["financebench"]["test"]
    assert len(ex) == 150
    assert sum(e.meta["evidence_truncated"] for e in ex) == 1
    first = ex[0]
    assert first.target == "$1577.00" and first.input.endswith(first.meta["question"])
    assert "Purchases of property, plant and equipment (PP&E) (1,577)" in first.input


def test_fit_evidence_shares_the_budget():
    short, long = "a " * 50, "word " * 5000
    fitted = fit_evidence([long, short.strip(), long], budget=1000)
    assert fitted[1] == short.strip()  # a short excerpt is kept whole
    assert all(f.endswith(" [...]") for f in (fitted[0], fitted[2]))
    assert sum(len(f) for f in fitted) <= 1000
    assert fit_evidence(["x" * 10], budget=MAX_EVIDENCE_CHARS) == ["x" * 10]


def test_splits_are_deterministic_and_order_free(tmp_path, data_dir):
    """Reversing the file's rows changes no example's split."""
    source = (data_dir / "finqa" / "pixiu_finqa_dev.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "finqa").mkdir()
    (tmp_path / "finqa" / "pixiu_finqa_dev.jsonl").write_text("\n".join(reversed(source)) + "\n", encoding="utf-8")
    for split in ("train", "validation", "test"):
        original = {e.meta["source_id"] for e in FinQA().load(split, data_dir)}
        reversed_rows = {e.meta["source_id"] for e in FinQA().load(split, tmp_path)}
        assert original == reversed_rows


# --- targets read back and score perfectly -----------------------------------------------


@pytest.mark.parametrize("task_id", ["finner", "finqa", "convfinqa", "gsm8k", "financebench"])
def test_gold_targets_extract_and_score_perfectly(loaded, task_id):
    task = get_task(task_id)
    examples = loaded[task_id]["test"]
    for mode in ("strict", "flexible"):
        preds = [task.extract(e.target, mode) for e in examples]
        assert all(p is not None for p in preds), mode
        assert all(task.is_correct(p, e) for p, e in zip(preds, examples))
        scores = task.score(preds, examples)
        assert scores[task.metric] == pytest.approx(1.0)
        assert scores["parse_failure_rate"] == 0.0


@pytest.mark.parametrize("task_id", ["finner", "finqa", "convfinqa", "gsm8k", "financebench"])
def test_failures_score_zero(loaded, task_id):
    task = get_task(task_id)
    examples = loaded[task_id]["test"][:20]
    scores = task.score([None] * len(examples), examples)
    assert scores[task.metric] == 0.0 and scores["parse_failure_rate"] == 1.0
    assert not any(task.is_correct(None, e) for e in examples)
    with pytest.raises(ValueError):
        task.score([None], examples)


def test_numeric_tasks_score_model_like_outputs(loaded):
    task = get_task("finqa")
    examples = [e for e in loaded["finqa"]["test"] if e.target not in ("yes", "no")][:3]
    gold = [float(e.target) for e in examples]
    outputs = [
        f"The answer is {gold[0] * 100:.2f}%.",  # percent of a fraction gold
        f"{gold[1] * 1.005}",  # within 1%
        "I am not sure.",
    ]
    preds = [task.extract(o) for o in outputs]
    assert preds[2] is None
    assert [task.is_correct(p, e) for p, e in zip(preds, examples)] == [True, True, False]
    scores = task.score(preds, examples)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["parse_failure_rate"] == pytest.approx(1 / 3)


def test_finqa_yes_no_answers(loaded):
    task = get_task("finqa")
    yes_no = [e for split in loaded["finqa"].values() for e in split if e.target in ("yes", "no")]
    assert len(yes_no) == 10
    e = yes_no[0]
    assert task.is_correct(task.extract(f"{e.target.capitalize()}, because 12.5% is less"), e)


def test_gsm8k_targets_are_worked_solutions(loaded):
    ex = loaded["gsm8k"]["train"][0]
    assert ex.target.endswith("\nThe answer is 72.") and "<<" not in ex.target
    assert ex.meta["answer"] == "72" and ex.meta["rationale"].endswith("#### 72")
    assert worked_solution("2 + 2 = <<2+2=4>>4\n#### 1,080") == ("2 + 2 = 4\nThe answer is 1080.", "1080")
    assert worked_solution("no final line") is None
    task = get_task("gsm8k")
    assert task.is_correct(task.extract("Each costs $3, so 24 * 3 = 72 dollars"), ex)
    assert not task.is_correct(task.extract("The answer is 73."), ex)  # exact, no tolerance


def test_render_and_encode_every_task(loaded, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for task_id, splits in loaded.items():
        task = get_task(task_id)
        example = next(iter(splits.values()))[0]
        for style in ("instruction", "chat"):
            pair = render(task, example, style=style, tokenizer=tokenizer)
            prompt_ids, target_ids = encode_pair(tokenizer, pair)
            assert prompt_ids and target_ids[-1] == tokenizer.eos_token_id
            instruction = example.meta.get("instruction") or task.instruction
            assert instruction in pair.prompt
    general = loaded["general"]["train"][0]
    assert render(get_task("general"), general).prompt.startswith(f"Instruction: {general.meta['instruction']}")


# --- malformed and missing data -------------------------------------------------------------


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_files_name_task_and_path(tmp_path):
    for task, rel in [
        (FinNER(), "finner/FIN5.txt"),
        (FinQA(), "finqa/pixiu_finqa_dev.jsonl"),
        (ConvFinQA(), "convfinqa/convfinqa_dev_turns.json"),
        (GSM8K(), "gsm8k/test.jsonl"),
        (General(), "lima/lima.json"),
        (FinanceBench(), "financebench/financebench_open_source.jsonl"),
    ]:
        with pytest.raises(DataError) as info:
            task.load(task.splits[-1], tmp_path)
        assert repr(task.id) in str(info.value) and str(tmp_path / rel) in str(info.value)


def test_finner_malformed_lines(tmp_path):
    good = "-DOCSTART- -X- O O\n\nApple NNP - I-ORG\nrose VBD - O\n\n"
    _write(tmp_path, "finner/FIN3.txt", good)
    path = _write(tmp_path, "finner/FIN5.txt", good + "Bad line\n")
    with pytest.raises(DataError, match=rf"{path}:6: expected 4 space-separated fields"):
        FinNER().load("train", tmp_path)
    _write(tmp_path, "finner/FIN5.txt", good + "Apple NNP - I-COMPANY\n")
    with pytest.raises(DataError, match=r"FIN5.txt:6: unknown tag 'I-COMPANY'"):
        FinNER().load("train", tmp_path)
    (tmp_path / "finner" / "FIN5.txt").write_bytes(b"Apple NNP - I-ORG\n\xff\xfe NNP - O\n")
    with pytest.raises(DataError, match=r"FIN5.txt:2: not valid utf-8"):
        FinNER().load("train", tmp_path)


def test_finner_drops_train_sentences_that_are_test_sentences(tmp_path):
    shared = "Apple NNP - I-ORG\nrose VBD - O\n\n"
    own = "John NNP - I-PER\nSmith NNP - I-PER\nleft VBD - O\n\n"
    misc_only = "Euro NNP - I-MISC\nrose VBD - O\n\n"
    _write(tmp_path, "finner/FIN3.txt", shared)
    _write(tmp_path, "finner/FIN5.txt", shared + own + misc_only + own)
    train = FinNER().load("train", tmp_path) + FinNER().load("validation", tmp_path)
    assert [e.input for e in train] == ["John Smith left", "John Smith left"]  # repeats kept, together
    assert len({e.group for e in train}) == 1
    (test,) = FinNER().load("test", tmp_path)
    assert test.target == "Apple is an organization."


def test_finqa_malformed_rows(tmp_path):
    question = {"from": "human", "value": "Please answer.\nContext: text\n|a|b|\nQuestion: what?\nAnswer:"}
    answer = {"from": "assistant", "value": "1.5"}
    ok = {"id": "finqa0", "conversations": [question, answer]}
    cases = [
        ("{not json", r":2: invalid JSON"),
        (json.dumps({"id": "x"}), r":2: field 'conversations' should be a list of 2 turns"),
        (json.dumps({"conversations": [{"from": "human", "value": "no context"}, answer]}), r":2: expected a prompt"),
        (
            json.dumps({"conversations": [question, {"from": "assistant", "value": 1.5}]}),
            r":2: conversations\[1\] should be \{'from': 'assistant'",
        ),
    ]
    for bad, message in cases:
        path = _write(tmp_path, "finqa/pixiu_finqa_dev.jsonl", json.dumps(ok) + "\n" + bad + "\n")
        with pytest.raises(DataError, match=str(path).replace(".", r"\.") + message):
            FinQA().load("test", tmp_path)


def test_convfinqa_malformed_entries(tmp_path):
    conv = {"id": "Single_X/2010/page_1.pdf-1", "doc": {"pre_text": "p", "post_text": "q"},
            "dialogue": {"conv_questions": ["a?", "b?"], "executed_answers": [1.0, 2.0]}}
    pot = [{"id": conv["id"], "table": "- | 2010\nrevenue | 5"}]
    _write(tmp_path, "convfinqa/pot_convfinqa_dev.json", json.dumps(pot))
    turns = _write(tmp_path, "convfinqa/convfinqa_dev_turns.json", json.dumps({"dev": [conv]}))
    examples = [e for split in ConvFinQA.splits for e in ConvFinQA().load(split, tmp_path)]
    assert [e.target for e in examples] == ["1", "2"] and "|revenue|5|" in examples[0].input
    broken = json.loads(json.dumps(conv))
    del broken["dialogue"]["executed_answers"]
    turns.write_text(json.dumps({"dev": [conv, broken]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"entry 1 \(Single_X/2010/page_1.pdf-1\): missing field 'dialogue.executed_answers'"):
        ConvFinQA().load("test", tmp_path)
    broken = json.loads(json.dumps(conv))
    broken["dialogue"]["executed_answers"] = [1.0]
    turns.write_text(json.dumps([broken]), encoding="utf-8")
    with pytest.raises(DataError, match=r"2 questions but 1 executed answers"):
        ConvFinQA().load("test", tmp_path)


def test_gsm8k_malformed_rows(tmp_path):
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    _write(tmp_path, "gsm8k/train.jsonl", good + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:2: missing field 'answer'"):
        GSM8K().load("train", tmp_path)
    _write(tmp_path, "gsm8k/test.jsonl", good + "\n" + json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:2: field 'answer' should end with '#### <number>'"):
        GSM8K().load("test", tmp_path)
    _write(tmp_path, "gsm8k/test.jsonl", json.dumps({"question": ["q"], "answer": "#### 1"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: field 'question' should be str, got list"):
        GSM8K().load("test", tmp_path)


def test_general_malformed_entries(tmp_path):
    alpaca = [{"instruction": "Say hi", "input": "", "output": "hi"}]
    _write(tmp_path, "alpaca/alpaca_gpt4_en_demo_llamafactory.json", json.dumps(alpaca))
    _write(tmp_path, "lima/lima.json", json.dumps([{"instruction": "q", "input": "", "output": 3, "history": []}]))
    with pytest.raises(DataError, match=r"lima.json: entry 0: field 'output' should be a string, got int"):
        General().load("train", tmp_path)
    _write(tmp_path, "lima/lima.json", json.dumps([{"instruction": "q", "output": "a", "history": [["only one"]]}]))
    with pytest.raises(DataError, match=r"lima.json: entry 0: field 'history' should be a list of \[user, assistant\]"):
        General().load("train", tmp_path)
    _write(tmp_path, "lima/lima.json", json.dumps([{"instruction": "follow-up", "output": "a2", "history": [["first", "a1"]]}]))
    examples = General().load("train", tmp_path) + General().load("validation", tmp_path)
    opening = next(e for e in examples if e.meta["source"] == "lima")
    assert (opening.meta["instruction"], opening.target) == ("first", "a1")


def test_financebench_malformed_rows(tmp_path):
    row = {"financebench_id": "fb1", "doc_name": "X_10K", "question": "q?", "answer": "1", "evidence": [{"evidence_text": "e"}]}
    bad = dict(row, evidence=[{"page": 1}])
    _write(tmp_path, "financebench/financebench_open_source.jsonl", json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    message = r"financebench_open_source.jsonl:2: evidence\[0\] should be an object with a string 'evidence_text'"
    with pytest.raises(DataError, match=message):
        FinanceBench().load("test", tmp_path)
    no_answer = {k: v for k, v in row.items() if k != "answer"}
    _write(tmp_path, "financebench/financebench_open_source.jsonl", json.dumps(no_answer) + "\n")
    with pytest.raises(DataError, match=r"financebench_open_source.jsonl:1: missing field 'answer'"):
        FinanceBench().load("test", tmp_path)


# --- hub source (the `datasets` package faked: no network here) ------------------------------


class _FakeDatasets:
    """Stands in for the `datasets` module: `load_dataset` returns canned rows."""

    def __init__(self, tables):
        self.tables = tables
        self.calls = []

    def load_dataset(self, name, config=None, split=None):
        self.calls.append((name, config, split))
        return self.tables[(name, split)]


def test_hub_sources_map_rows(monkeypatch):
    import sys

    fake = _FakeDatasets({
        ("openai/gsm8k", "test"): [{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}],
        ("ChanceFocus/flare-finqa", "test"): [
            {"id": "q1", "query": "Please answer.\nContext: revenue 5\nQuestion: what is revenue?\nAnswer:", "answer": "5.0"}
        ],
        ("tner/fin", None): {
            "train": [{"tokens": ["Apple", "rose"], "tags": [3, 0]}],
            "validation": [],
            "test": [{"tokens": ["John", "Smith", "left"], "tags": [1, 5, 0]}],
        },
    })
    monkeypatch.setitem(sys.modules, "datasets", fake)
    gsm = GSM8K(source="hub").load("test", Path("/nonexistent"))
    assert gsm[0].target == "1+1=2\nThe answer is 2." and fake.calls[-1] == ("openai/gsm8k", "main", "test")
    finqa = FinQA(source="hub")
    assert finqa.version.startswith("finqa@flare-official-v1")
    (q,) = finqa.load("test", Path("/nonexistent"))
    assert q.input == "Context: revenue 5\nQuestion: what is revenue?" and q.target == "5.0"
    (ner,) = FinNER(source="hub").load("test", Path("/nonexistent"))
    assert ner.target == "John Smith is a person."


def test_hub_source_without_datasets_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DataError, match="needs the 'datasets' package"):
        GSM8K(source="hub").load("test", Path("/nonexistent"))
