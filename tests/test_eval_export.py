"""`fincocktail export lm-eval`: the harness loads our tasks and scores what we score."""

from __future__ import annotations

import json

import pytest
import yaml

from eval_fakes import FakeNumeric, FakeSentiment, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.export.lmeval import export_lmeval
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.tasks.prompts import render

pytest.importorskip("lm_eval", reason="lm-eval is an optional (bench) dependency")

MULTI = ("Bullish", "Bearish", "neutral outlook")


def _tasks():
    return resolver(FakeSentiment(), FakeSentiment("fmulti", labels=MULTI), FakeNumeric())


def test_exported_tasks_load_in_lm_eval(tmp_path):
    from lm_eval.tasks import TaskManager

    out = tmp_path / "export"
    exported = export_lmeval(out, ["fsent", "fnum"], tmp_path, _tasks(), shots=1)
    assert [e.output_type for e in exported] == ["multiple_choice", "generate_until"]
    moved = tmp_path / "moved"
    out.rename(moved)  # the folder is self-contained: it still loads after a move
    manager = TaskManager(include_path=str(moved), include_defaults=False)
    loaded = manager.load_task_or_group(["fincocktail_fsent", "fincocktail_fnum"])
    sent, num = loaded["fincocktail_fsent"], loaded["fincocktail_fnum"]
    examples = FakeSentiment().load("test", tmp_path)
    docs = list(sent.test_docs())
    assert len(docs) == len(examples)
    for doc, ex in zip(docs, examples):
        zero = render(FakeSentiment(), ex)
        assert sent.doc_to_text(doc).endswith(zero.prompt) and sent.doc_to_text(doc) != zero.prompt  # 1 demo prepended
        assert sent.doc_to_choice(doc) == [" negative", " neutral", " positive"]
        assert sent.doc_to_choice(doc)[sent.doc_to_target(doc)] == zero.target
    assert sent.config.target_delimiter == ""
    assert num.config.generation_kwargs["until"] == ["\n"] and num.config.generation_kwargs["max_gen_toks"] == 10
    assert num.doc_to_target(list(num.test_docs())[0]) == " " + FakeNumeric().load("test", tmp_path)[0].target
    text = (moved / "fincocktail_fsent.yaml").read_text()
    assert "!function fincocktail_lmeval_loader.load" in text


def test_lm_eval_scores_the_same_choices_as_choice_mode(lively_model_dir, tmp_path):
    """lm-eval's multiple_choice on the exported task picks what our choice mode picks."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = _tasks()
    export_lmeval(tmp_path / "export", ["fmulti"], tmp_path, tasks)
    loaded = load_for_eval(str(lively_model_dir))
    run_eval(EvalConfig(model=loaded.path, tasks=["fmulti"], out=tmp_path / "ours", data_dir=tmp_path), resolve_task=tasks, loaded=loaded)
    ours = [json.loads(x) for x in (tmp_path / "ours" / "fmulti.predictions.jsonl").read_text().splitlines()]
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4, device="cpu")
    res = simple_evaluate(
        model=lm, tasks=["fincocktail_fmulti"], task_manager=TaskManager(include_path=str(tmp_path / "export"), include_defaults=False),
        log_samples=True,
    )
    samples = sorted(res["samples"]["fincocktail_fmulti"], key=lambda s: s["doc_id"])
    assert len(samples) == len(ours)
    for s, o in zip(samples, ours):
        assert s["doc"]["id"] == o["id"]
        theirs = [r[0] for r in s["filtered_resps"]]
        assert theirs == pytest.approx(list(o["choice_logprobs"].values()), abs=1e-3)
        assert MULTI[max(range(3), key=theirs.__getitem__)] == o["extracted"]


def test_export_yaml_is_plain_yaml_apart_from_the_loader_tag(tmp_path):
    export_lmeval(tmp_path, ["fsent"], tmp_path, _tasks(), limit=3)
    text = (tmp_path / "fincocktail_fsent.yaml").read_text()
    body = yaml.safe_load("\n".join(line for line in text.splitlines() if not line.startswith("custom_dataset")))
    assert body["doc_to_text"] == "prompt" and body["doc_to_choice"] == "choices" and body["doc_to_target"] == "gold"
    rows = [json.loads(x) for x in (tmp_path / "fincocktail_fsent.test.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["labels"][r["gold"]] == r["target"].strip() for r in rows)
