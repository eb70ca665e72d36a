"""The likelihood metric of an API model on a choice task: its first-token log-probs, and the run
going on without it where the endpoint refuses log-probs."""

from __future__ import annotations

import json
import math

import pytest

from eval_fakes import FakeSentiment, ScriptedServer, chat_body, resolver
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.metrics.likelihood import first_token_choice_logprobs

TOP = [(" positive", math.log(0.5)), (" neg", math.log(0.2)), ("neutral", math.log(0.1)), (" Sure", math.log(0.05))]


def _with_logprobs(body, headers):
    if not body.get("logprobs"):
        return 200, chat_body("positive")
    reply = chat_body("positive")
    reply["choices"][0]["logprobs"] = {"content": [{"token": " positive", "logprob": math.log(0.5),
                                                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in TOP]}]}
    return 200, reply


def _refuses_logprobs(body, headers):
    if body.get("logprobs"):
        return 400, {"error": {"message": "logprobs is not supported", "type": "invalid_request_error"}}
    return 200, chat_body("negative")


def test_first_token_alternatives_give_each_choice_a_log_prob():
    got = first_token_choice_logprobs(dict(TOP), ["positive", "negative", "neutral"])
    assert got == {"positive": pytest.approx(math.log(0.5)), "negative": pytest.approx(math.log(0.2)),
                   "neutral": pytest.approx(math.log(0.1))}
    # a choice no alternative starts gets the smallest listed log-prob (an upper bound)
    assert first_token_choice_logprobs({" positive": -0.1, " ok": -3.0}, ["positive", "neutral"])["neutral"] == -3.0
    assert first_token_choice_logprobs({" Sure": -0.1}, ["positive", "neutral"]) is None


@pytest.fixture
def api_key(isolated_home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-likelihood-key")
    return isolated_home


def _run(handler, tmp_path, name):
    """Evaluate the fake task against a scripted endpoint; (result, prediction rows, the requests it received)."""
    server = ScriptedServer(handler)
    try:
        run = run_eval(EvalConfig(model="openai:tiny", base_url=server.url, tasks=["fsent"], out=tmp_path / name,
                                  data_dir=tmp_path), resolve_task=resolver(FakeSentiment(sizes={"train": 6, "test": 5})))
    finally:
        server.close()
    rows = [json.loads(x) for x in (tmp_path / name / "fsent.predictions.jsonl").read_text().splitlines()]
    return run.results[0], rows, server.requests


def test_an_api_choice_task_gets_the_gold_probability_from_first_token_log_probs(api_key, tmp_path):
    result, rows, requests = _run(_with_logprobs, tmp_path, "lp")
    assert all(r["body"].get("top_logprobs") == 20 and r["body"].get("logprobs") is True for r in requests)
    total = 0.5 + 0.2 + 0.1  # softmax over the three choices' first-token probabilities
    expected = {"positive": 0.5 / total, "negative": 0.2 / total, "neutral": 0.1 / total}
    for row in rows:
        assert row["gold_prob"] == pytest.approx(expected[row["gold"]])
    assert result.metrics["gold_prob"] == pytest.approx(sum(expected[r["gold"]] for r in rows) / len(rows))


def test_an_endpoint_that_refuses_log_probs_is_evaluated_without_the_likelihood(api_key, tmp_path):
    result, rows, requests = _run(_refuses_logprobs, tmp_path, "nolp")
    assert all(r["extracted"] == "negative" for r in rows)
    assert "gold_prob" not in result.metrics and all("gold_prob" not in r for r in rows)
    asked = sum(bool(r["body"].get("logprobs")) for r in requests)
    assert 1 <= asked <= len(rows)  # refused once per request in flight when it first said no, then not asked again
    assert sum(not r["body"].get("logprobs") for r in requests) == len(rows)
