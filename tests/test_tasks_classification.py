"""Part A of the task suite on the real data: split sizes, no leakage, FinGPT prompts, extraction, scoring, errors."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from fincocktail.tasks import prompts
from fincocktail.errors import ConfigError, DataError
from fincocktail.tasks.base import Example
from fincocktail.tasks.answers import extract_label, extract_letter
from fincocktail.tasks.registry import get_task
from fincocktail.tasks.splits import normalize_text

MY_TASKS = ("fpb", "fiqa_sa", "tfns", "headline", "ner_cls", "cfa")
SENTIMENT = ("negative", "neutral", "positive")
SYNONYMS = {"bullish": "positive", "bearish": "negative"}


@cache
def _load(task_id: str, split: str, data_dir: str) -> tuple[Example, ...]:
    return tuple(get_task(task_id).load(split, Path(data_dir)))


def load(task_id: str, split: str, data_dir: Path) -> tuple[Example, ...]:
    return _load(task_id, split, str(data_dir))


# ------------------------------------------------------------------ sizes and partitions


def test_fpb_partition_matches_the_published_counts(data_dir: Path) -> None:
    part = get_task("fpb")._partition(data_dir)
    assert len(part.test) == 1212
    assert len(part.rest) == 3634  # the published train count: 4846 - 1212
    # 50Agree repeats some sentences; the 5 non-test copies of test sentences are dropped
    assert len(part.dropped) == 5
    assert len(load("fpb", "train", data_dir)) + len(load("fpb", "validation", data_dir)) == 3634 - 5
    labels = [e.target for e in load("fpb", "test", data_dir)]
    assert (labels.count("neutral"), labels.count("positive"), labels.count("negative")) == (729, 338, 145)


def test_fiqa_partition_matches_the_published_counts(data_dir: Path) -> None:
    part = get_task("fiqa_sa")._partition(data_dir)
    assert len(part.test) + len(part.rest) == 1173  # 498 headline targets + 675 posts
    assert (len(part.test), len(part.rest)) == (235, 938)
    assert len(part.dropped) == 23  # other targets of multi-target headlines that are in test
    sizes = [len(load("fiqa_sa", s, data_dir)) for s in ("train", "validation")]
    assert sum(sizes) == 938 - 23


def test_tfns_sizes(data_dir: Path) -> None:
    part = get_task("tfns")._partition(data_dir)
    assert (len(part.test), len(part.rest), len(part.dropped)) == (2388, 9543, 1)
    assert len(load("tfns", "train", data_dir)) + len(load("tfns", "validation", data_dir)) == 9542


@pytest.mark.parametrize(
    "task_id, sizes",
    [
        ("fpb", (3268, 361, 1212)),
        ("fiqa_sa", (826, 89, 235)),
        ("tfns", (8644, 898, 2388)),
        ("headline", (45738, 4830, 12852)),
        ("ner_cls", (715, 87, 3502)),
    ],
)
def test_split_sizes_are_pinned(data_dir: Path, task_id: str, sizes: tuple[int, int, int]) -> None:
    """Hash splits: these numbers change only when the split rule (and so the version) changes."""
    assert tuple(len(load(task_id, s, data_dir)) for s in ("train", "validation", "test")) == sizes


def test_headline_has_six_questions_per_headline_and_all_headlines(data_dir: Path) -> None:
    total = sum(len(load("headline", s, data_dir)) for s in ("train", "validation", "test"))
    assert total == 10570 * 6
    test = load("headline", "test", data_dir)
    assert 0.18 < len(test) / total < 0.22
    per_group: dict[str, set[str]] = {}
    for e in test:
        per_group.setdefault(e.group or "", set()).add(e.meta["question_type"])
    assert all(len(types) == 6 for types in per_group.values())


def test_cfa_is_eval_only(data_dir: Path) -> None:
    task = get_task("cfa")
    assert task.eval_only and task.splits == ("test",)
    test = load("cfa", "test", data_dir)
    assert len(test) == 1032
    assert {e.target for e in test} == {"A", "B", "C"}
    with pytest.raises(ConfigError, match="no split 'train'"):
        task.load("train", data_dir)


# ------------------------------------------------------------------ no leakage, determinism


@pytest.mark.parametrize("task_id", [t for t in MY_TASKS if t != "cfa"])
def test_no_overlap_between_train_validation_and_test(data_dir: Path, task_id: str) -> None:
    splits = {s: load(task_id, s, data_dir) for s in ("train", "validation", "test")}
    texts = {s: {normalize_text(e.input) for e in ex} for s, ex in splits.items()}
    groups = {s: {e.group for e in ex} for s, ex in splits.items()}
    for a, b in (("train", "test"), ("validation", "test"), ("train", "validation")):
        assert not texts[a] & texts[b], f"{task_id}: {a} and {b} share input texts"
        assert not groups[a] & groups[b], f"{task_id}: {a} and {b} share groups"
    for s, ex in splits.items():
        assert ex, f"{task_id} {s} is empty"
        assert len({e.id for e in ex}) == len(ex), f"{task_id} {s}: ids are not unique"


@pytest.mark.parametrize("task_id", MY_TASKS)
def test_loading_is_deterministic_and_versioned(data_dir: Path, task_id: str) -> None:
    task = get_task(task_id)
    again = [e.id for e in task.load(task.splits[0], data_dir)]
    assert again == [e.id for e in load(task_id, task.splits[0], data_dir)]
    assert task.version.startswith(f"{task_id}@") and prompts.TEMPLATE_VERSION in task.version
    assert task.description and task.__doc__ and task.licence and task.source
    for e in load(task_id, task.splits[-1], data_dir)[:50]:
        assert e.target in task.labels and e.choices is not None and e.target in e.choices


def test_fpb_licence_says_non_commercial() -> None:
    assert "non-commercial" in get_task("fpb").licence


# ------------------------------------------------------------------ FinGPT prompts reproduced


def _fingpt_rows(data_dir: Path, name: str) -> list[dict[str, str]]:
    with (data_dir / "fingpt_test" / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.mark.parametrize("task_id, file", [("fpb", "fpb_test.jsonl"), ("fiqa_sa", "fiqa_test.jsonl"), ("ner_cls", "ner_test.jsonl")])
def test_rendered_prompts_are_the_benchmark_prompts(data_dir: Path, task_id: str, file: str) -> None:
    """FinGPT's context ends 'Answer: '; our prompt ends 'Answer:' and the target carries the space."""
    task = get_task(task_id)
    rows = _fingpt_rows(data_dir, file)
    examples = load(task_id, "test", data_dir)
    assert len(rows) == len(examples)
    for row, ex in zip(rows, examples):
        pair = prompts.render(task, ex)
        assert pair.prompt + " " == row["context"]
        assert pair.target == " " + row["target"]


def test_tfns_labels_follow_the_card_and_document_the_finlora_swap(data_dir: Path) -> None:
    """FinLoRA's tfns_test.jsonl has our 2388 tweets with Bullish and Neutral swapped; we keep the card's labels."""
    rows = _fingpt_rows(data_dir, "tfns_test.jsonl")
    examples = load("tfns", "test", data_dir)
    task = get_task("tfns")
    swap = {"negative": "negative", "positive": "neutral", "neutral": "positive"}
    for row, ex in zip(rows, examples, strict=True):
        assert prompts.render(task, ex).prompt + " " == row["context"]
        assert row["target"] == swap[ex.target]
    bullish = [e for e in examples if e.target == "positive"]
    assert any("upgraded" in e.input or "bull" in e.input.lower() for e in bullish[:20])


def test_ner_cls_train_asks_about_each_entity(data_dir: Path) -> None:
    train = load("ner_cls", "train", data_dir)
    first = train[0]
    assert first.meta["entity"] in first.input
    assert f"'{first.meta['entity']}'" in first.meta["instruction"]
    assert "\nOptions: " in first.meta["instruction"]
    # several entities of one sentence give several questions, each about its own entity
    by_sentence: dict[str, set[str]] = {}
    for e in train:
        by_sentence.setdefault(e.input, set()).add(e.meta["entity"])
    assert max(len(v) for v in by_sentence.values()) > 3


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("positive", "positive", "positive"),
        (" Positive.\n", "positive", "positive"),
        ("**Negative**", "negative", "negative"),
        ("The sentiment is negative", None, "negative"),
        ("I think it's neutral.", None, "neutral"),
        ("Answer: positive", None, "positive"),
        ("Bullish", None, "positive"),
        ("Sentiment: bearish", None, "negative"),
        ("Positive. Costs were negative though", None, "positive"),
        ("The sentiment of this news is positive. The positive sentiment is neutral, as it", None, "positive"),
        ("The sentiment of this news is positive or negative", None, None),
        ("The answer is: Negative\nInstruction: What is the sentiment? {negative/neutral/positive}", None, "negative"),
        ("positive/negative", None, None),
        ("negative/neutral/positive", None, None),
        ("positive or negative", None, None),
        ("neither positive nor negative", None, None),
        ("not positive", None, None),
        ("non-positive", None, None),
        ("The company reported results", None, None),
        ("", None, None),
        ("\n\nneutral", "neutral", "neutral"),
    ],
)
def test_sentiment_extraction(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_label(text, SENTIMENT, SYNONYMS, "strict") == strict
    assert extract_label(text, SENTIMENT, SYNONYMS, "flexible") == flexible
    task = get_task("fpb")
    assert task.extract(text, "flexible") == flexible


@pytest.mark.parametrize(
    "text, flexible",
    [
        ("Yes", "Yes"),
        ("yes,", "Yes"),
        ("No.", "No"),
        ("Yes, there is no doubt about it", "Yes"),
        ("No, it does not.", "No"),
        ("I would say yes", "Yes"),
        ("The headline does not talk about price going up, so no", "No"),
        ("yes or no", None),
        ("Yes/No", None),
        ("maybe", None),
    ],
)
def test_yes_no_extraction(text: str, flexible: str | None) -> None:
    assert get_task("headline").extract(text) == flexible


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("C", "C", "C"),
        ("(B)", "B", "B"),
        ("a", "A", "A"),
        ("c)", "C", "C"),
        ("Answer: A", None, "A"),
        ("The answer is B: liquidity.", None, "B"),
        ("B. liquidity", None, "B"),
        ("The correct answer is (C)", None, "C"),
        ("Option B", None, "B"),
        ("A good answer is C", None, "C"),
        ("A, B or C", None, None),
        ("I choose B and C", None, None),
        ("expected inflation", None, None),
        ("The answer is a bit unclear", None, None),
        ("A: 555, B: 563, C: 576", None, None),
        ("A: $112,555.", None, "A"),
        ("the answer is c.", None, "C"),
    ],
)
def test_letter_extraction(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_letter(text, ("A", "B", "C"), "strict") == strict
    assert extract_letter(text, ("A", "B", "C"), "flexible") == flexible
    assert get_task("cfa").extract(text) == flexible


def test_ner_extraction_synonyms() -> None:
    task = get_task("ner_cls")
    assert task.extract("Organisation") == "organization"
    assert task.extract("It is a person.") == "person"
    assert task.extract("person, organization, location") is None
    assert task.extract("The entity type of 'Borrower' is person. It is not an organization.") == "person"
    assert task.extract("The entity type of 'Acme Company' is a location.") == "location"
    assert task.extract("It's a person's name") == "person"
    assert task.extract("'organization'") == "organization"


# ------------------------------------------------------------------ scoring


def test_sentiment_score_matches_sklearn(data_dir: Path) -> None:
    task = get_task("fiqa_sa")
    examples = load("fiqa_sa", "test", data_dir)
    outputs = ["positive", "Negative.", "neutral", "the sentiment is bullish", "no idea"]
    preds = [task.extract(outputs[i % len(outputs)]) for i in range(len(examples))]
    scores = task.score(preds, examples)
    gold = [e.target for e in examples]
    as_class = [p or "<unparsed>" for p in preds]
    assert scores["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, as_class)) / len(gold))
    assert scores["f1_weighted"] == pytest.approx(f1_score(gold, as_class, labels=list(SENTIMENT), average="weighted"))
    assert scores["f1_macro"] == pytest.approx(f1_score(gold, as_class, labels=list(SENTIMENT), average="macro"))
    assert scores["parse_failure_rate"] == pytest.approx(preds.count(None) / len(preds))
    assert [task.is_correct(p, e) for p, e in zip(preds[:5], examples[:5])] == [p == e.target for p, e in zip(preds[:5], examples[:5])]


def test_headline_avg_f1_is_the_mean_of_per_question_weighted_f1(data_dir: Path) -> None:
    task = get_task("headline")
    examples = load("headline", "test", data_dir)[:600]
    preds = ["Yes" if i % 3 else ("No" if i % 2 else None) for i in range(len(examples))]
    scores = task.score(preds, examples)
    per_type = []
    for qtype in sorted({e.meta["question_type"] for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.meta["question_type"] == qtype]
        gold = [examples[i].target for i in idx]
        pred = [preds[i] or "<unparsed>" for i in idx]
        labels = sorted(set(gold) | {p for p in pred if p != "<unparsed>"})
        value = f1_score(gold, pred, labels=labels, average="weighted")
        assert scores[f"f1_{qtype}"] == pytest.approx(value)
        per_type.append(value)
    assert scores["avg_f1"] == pytest.approx(sum(per_type) / len(per_type))
    assert task.metric == "avg_f1" and "accuracy" in scores and "parse_failure_rate" in scores


def test_cfa_scores_accuracy(data_dir: Path) -> None:
    task = get_task("cfa")
    examples = load("cfa", "test", data_dir)
    preds = [task.extract(f"The answer is {e.target}.") for e in examples]
    assert task.score(preds, examples)["accuracy"] == 1.0
    preds = [None] * len(examples)
    assert task.score(preds, examples) == pytest.approx({"accuracy": 0.0, "f1_macro": 0.0, "f1_weighted": 0.0, "parse_failure_rate": 1.0, "n": 1032.0})


# ------------------------------------------------------------------ malformed data


def _copy(data_dir: Path, tmp_path: Path, *relpaths: str) -> Path:
    for rel in relpaths:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / rel, tmp_path / rel)
    return tmp_path


def test_missing_file_names_the_task_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"task 'fpb': data file .*fpb/Sentences_50Agree\.txt not found"):
        get_task("fpb").load("test", tmp_path)
    with pytest.raises(DataError, match=r"task 'headline': .*gold-dataset-sinha-khandait\.csv not found"):
        get_task("headline").load("train", tmp_path)


def test_fpb_bad_label_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir, tmp_path, "fingpt_test/fpb_test.jsonl")
    bad = tmp_path / "fpb" / "Sentences_50Agree.txt"
    bad.parent.mkdir()
    bad.write_bytes(b"Sales rose .@positive\nProfit fell .@negatve\n")
    with pytest.raises(DataError, match=r"Sentences_50Agree\.txt:2: label 'negatve' is not one of"):
        get_task("fpb").load("test", tmp_path)
    bad.write_bytes(b"Sales rose .@positive\nno separator here\n")
    with pytest.raises(DataError, match=r"Sentences_50Agree\.txt:2: expected 'sentence@label'"):
        get_task("fpb").load("train", tmp_path)


def test_fpb_test_sentence_not_in_release_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir, tmp_path, "fingpt_test/fpb_test.jsonl")
    (tmp_path / "fpb").mkdir()
    (tmp_path / "fpb" / "Sentences_50Agree.txt").write_bytes(b"Sales rose .@positive\n")
    with pytest.raises(DataError, match=r"fpb_test\.jsonl: test item 1 .* is not in fpb/Sentences_50Agree\.txt"):
        get_task("fpb").load("test", tmp_path)


def test_fingpt_test_file_errors_name_the_line(data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir, tmp_path, "fpb/Sentences_50Agree.txt")
    test = tmp_path / "fingpt_test" / "fpb_test.jsonl"
    test.parent.mkdir()
    good = json.dumps({"context": "Instruction: x\nInput: y\nAnswer: ", "target": "neutral"})
    test.write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fpb_test\.jsonl:2: invalid JSON"):
        get_task("fpb").load("test", tmp_path)
    test.write_text(good + "\n" + json.dumps({"context": "Instruction: x\nInput: y\nAnswer: "}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fpb_test\.jsonl:2: missing field 'target'"):
        get_task("fpb").load("test", tmp_path)
    test.write_text(json.dumps({"context": "no prompt format", "target": "neutral"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fpb_test\.jsonl:1: field 'context' is not"):
        get_task("fpb").load("test", tmp_path)


def test_tfns_bad_label_and_bad_encoding_name_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "tfns"
    folder.mkdir()
    (folder / "sent_train.csv").write_text("text,label\n$AAPL up,1\n", encoding="utf-8")
    (folder / "sent_valid.csv").write_text("text,label\n$AAPL up big,1\n\"$MSFT\nsplit over lines\",3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"sent_valid\.csv:4: label '3' is not one of 0 \(Bearish\)"):
        get_task("tfns").load("test", tmp_path)
    (folder / "sent_valid.csv").write_bytes(b"text,label\n$AAPL up,1\n$SAP \xe4rger,0\n")
    with pytest.raises(DataError, match=r"sent_valid\.csv:3: not valid utf-8 text"):
        get_task("tfns").load("test", tmp_path)
    (folder / "sent_valid.csv").write_text("text,label\n$AAPL up\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"sent_valid\.csv:2: missing field 'label'"):
        get_task("tfns").load("test", tmp_path)


def test_headline_bad_value_names_file_line_and_column(data_dir: Path, tmp_path: Path) -> None:
    src = (data_dir / "headline" / "gold-dataset-sinha-khandait.csv").read_text(encoding="utf-8").splitlines()
    header, first = src[0], src[1].split("\t")
    first[3] = "maybe"
    (tmp_path / "headline").mkdir()
    (tmp_path / "headline" / "gold-dataset-sinha-khandait.csv").write_text(header + "\n" + src[2] + "\n" + "\t".join(first) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gold-dataset-sinha-khandait\.csv:3: field 'Price Direction Up' should be 0 or 1"):
        get_task("headline").load("test", tmp_path)


def test_finner_bad_tag_names_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir, tmp_path, "fingpt_test/ner_test.jsonl")
    (tmp_path / "finner").mkdir()
    (tmp_path / "finner" / "FIN5.txt").write_text("-DOCSTART- -X- O O\n\nAcme NNP - I-ORG\nInc NNP - I-COMPANY\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"FIN5\.txt:4: unknown tag 'I-COMPANY'"):  # the one CoNLL reader's wording (tasks/conll.py)
        get_task("ner_cls").load("train", tmp_path)


def test_cfa_bad_gold_names_the_item(tmp_path: Path) -> None:
    (tmp_path / "cfa").mkdir()
    rows = [{"query": "q", "text": "Q: x", "choices": ["A", "B", "C"], "gold": 1}, {"query": "q", "text": "Q: y", "choices": ["A", "B", "C"], "gold": 3}]
    (tmp_path / "cfa" / "flare_cfa_test.json").write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"flare_cfa_test\.json: item 1: field 'gold' should be an index 0\.\.2"):
        get_task("cfa").load("test", tmp_path)


def test_hub_source_without_datasets_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fincocktail.tasks.knowledge import CFA
    from fincocktail.tasks.sentiment import FPB, TFNS

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    for task in (FPB(source="hub"), TFNS(source="hub"), CFA(source="hub")):
        with pytest.raises(DataError, match="needs the 'datasets' package"):
            task.load("test", tmp_path)
    with pytest.raises(DataError, match="unknown source 'ftp'"):
        FPB(source="ftp")  # type: ignore[arg-type]
