"""The LLM judge: versioned prompt, verdicts per example, cache (a rerun sends nothing), key never on disk,
agreement with token F1 (kappa checked against sklearn), and judge scores in `compare`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eval_fakes import ScriptedServer, chat_body, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.compare import compare_runs, load_run
from fincocktail.errors import ConfigError
from fincocktail.evaluation.judge import JUDGE_PROMPT_VERSION, USER, cohen_kappa, parse_verdict
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.tasks.base import Example, GenerationSpec
from fincocktail.tasks.generative import OpenAnswerTask

SECRET = "sk-judge-secret-5678"


class FakeQA(OpenAnswerTask):
    id = "fqa"
    version = "fqa@test"
    kind = "open_qa"
    metric = "token_f1"
    splits = ("test",)
    instruction = "Answer the question."
    generation = GenerationSpec(max_new_tokens=6, stop=("\n",))

    def load(self, split, data_dir):
        rng = random.Random(split)
        return [Example(id=f"fqa/test/{i}", input=f"Question: what was revenue in {2000 + i}?", target=f"{rng.randint(1, 9)} million",
                        meta={"question": f"what was revenue in {2000 + i}?"}) for i in range(10)]


def _fake_judge(body: dict, headers) -> tuple[int, dict]:
    """An OpenAI-compatible judge: CORRECT when the candidate has an even number of characters (deterministic)."""
    candidate = body["messages"][-1]["content"].split("Candidate answer: ", 1)[1].split("\n\n", 1)[0]
    return 200, chat_body("CORRECT" if len(candidate) % 2 == 0 else "INCORRECT.")


@pytest.mark.parametrize("text,verdict", [("CORRECT", True), ("incorrect", False), ("Verdict: INCORRECT. The figure differs", False),
                                          ("correct, it matches", True), ("I cannot tell", None), ("", None),
                                          ("CORRECT or INCORRECT.", None), ("Correct. Correct!", True)])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


def test_cohen_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(0)
    for _ in range(20):
        a = [rng.random() < 0.6 for _ in range(40)]
        b = [x if rng.random() < 0.7 else not x for x in a]
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_judge_grades_open_answers_caches_and_keeps_the_key_off_disk(lively_model_dir, isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    judge = ScriptedServer(_fake_judge)
    tasks = resolver(FakeQA())
    loaded = load_for_eval(str(lively_model_dir))
    try:
        def run(out):
            return run_eval(EvalConfig(model=str(lively_model_dir), tasks=["fqa"], out=out, data_dir=tmp_path,
                                       judge="openai:judge-model", judge_base_url=judge.url), resolve_task=tasks, loaded=loaded)

        first = run(tmp_path / "one")
        assert len(judge.requests) == 10 and judge.requests[0]["auth"] == f"Bearer {SECRET}"
        sent = judge.requests[0]["body"]
        assert sent["model"] == "judge-model" and sent["temperature"] == 0 and "Reference answer:" in sent["messages"][1]["content"]
        rows = [json.loads(x) for x in (tmp_path / "one" / "fqa.predictions.jsonl").read_text().splitlines()]
        expected = [len((r["extracted"] or "").strip() or "(no answer)") % 2 == 0 for r in rows]
        assert [r["judge"]["verdict"] for r in rows] == expected
        assert all(r["judge"]["judge"] == f"openai:judge-model@{JUDGE_PROMPT_VERSION}" for r in rows)
        m = first.results[0].metrics
        assert m["judge_accuracy"] == pytest.approx(sum(expected) / 10) and m["token_f1"] >= 0
        assert m["judge_agreement"] == pytest.approx(sum(e == r["correct"] for e, r in zip(expected, rows)) / 10)
        assert m["judge_ci_low"] <= m["judge_accuracy"] <= m["judge_ci_high"]
        saved = json.loads((tmp_path / "one" / "fqa.metrics.json").read_text())
        assert saved["metrics"]["judge_accuracy"] == m["judge_accuracy"]
        card = json.loads((tmp_path / "one" / "run_card.json").read_text())
        assert card["judge"]["prompt_version"] == JUDGE_PROMPT_VERSION and card["config"]["judge"] == "openai:judge-model"

        second = run(tmp_path / "two")  # a rerun: every verdict from the cache, no request
        assert len(judge.requests) == 10
        assert second.results[0].metrics["judge_accuracy"] == m["judge_accuracy"]
        assert all(json.loads(x)["judge"]["cached"] for x in (tmp_path / "two" / "fqa.predictions.jsonl").read_text().splitlines())
        assert json.loads((tmp_path / "two" / "run_card.json").read_text())["judge"]["api_requests_sent"] == 0
        for path in [*tmp_path.rglob("*"), *Path(isolated_home).rglob("*")]:
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path

        # compare shows the judge's score (and the gold answer's likelihood) beside the headline metric
        cmp = compare_runs([load_run(tmp_path / "one"), load_run(tmp_path / "two")], tasks, tmp_path, n_resamples=100)
        assert [d.measure for d in cmp.deltas] == ["token_f1", "gold_logprob_per_token", "judge"] and cmp.deltas[2].delta == 0
    finally:
        judge.close()


def test_judge_needs_an_api_spec_and_a_key(lively_model_dir, isolated_home, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run_eval(EvalConfig(model=str(lively_model_dir), tasks=["fqa"], out=tmp_path / "o", data_dir=tmp_path, judge="openai:x"), resolve_task=resolver(FakeQA()))
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    with pytest.raises(ConfigError, match="expected openai:MODEL"):
        run_eval(EvalConfig(model=str(lively_model_dir), tasks=["fqa"], out=tmp_path / "p", data_dir=tmp_path, judge="gpt-4o"), resolve_task=resolver(FakeQA()))
    assert "{reference}" in USER and "{candidate}" in USER
