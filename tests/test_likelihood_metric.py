"""The likelihood metric against hand computations on the tiny model: the gold choice's probability
(softmax over a full forward's choice log-probs) and the gold answer's teacher-forced log-likelihood."""

from __future__ import annotations

import json
import math

import pytest
import torch

from eval_fakes import FakeNumeric, FakeSentiment, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.evaluation.fewshot import build_pair
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.metrics.likelihood import choice_log_softmax, gold_probability, likelihood_by_id, likelihood_of_row
from fincocktail.tasks.prompts import encode_pair


@pytest.fixture(scope="module")
def lively(lively_model_dir):
    return load_for_eval(str(lively_model_dir))


def _rows(out, task):
    return [json.loads(x) for x in (out / f"{task}.predictions.jsonl").read_text().splitlines()]


def _full_forward_logprob(model, prompt_ids, answer_ids) -> float:
    with torch.no_grad():
        logp = model(torch.tensor([prompt_ids + answer_ids])).logits[0].float().log_softmax(-1)
    return sum(logp[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(answer_ids))


def test_the_softmax_over_choices():
    lp = {"positive": math.log(0.2), "negative": math.log(0.3), "neutral": math.log(0.1)}
    assert gold_probability(lp, "negative") == pytest.approx(0.5)
    assert sum(math.exp(v) for v in choice_log_softmax(lp).values()) == pytest.approx(1.0)
    assert gold_probability(lp, "other") == 0.0
    # a row written before the metric existed: recomputed from its choice log-probs
    assert likelihood_of_row({"choice_logprobs": lp, "gold": "positive"}) == pytest.approx(1 / 3)


def test_gold_probability_and_generative_loglik_match_a_full_forward(lively, tmp_path):
    sent, num = FakeSentiment(), FakeNumeric()
    out = tmp_path / "run"
    run_eval(EvalConfig(model=lively.path, tasks=["fsent", "fnum"], out=out, data_dir=tmp_path),
             resolve_task=resolver(sent, num), loaded=lively)
    tok, model = lively.tokenizer, lively.model
    rows = _rows(out, "fsent")
    probs = []
    for row, ex in zip(rows, sent.load("test", tmp_path)):
        pair = build_pair(sent, ex, "instruction", tok, [])
        prompt_ids = encode_pair(tok, pair, False)[0]
        from fincocktail.evaluation.fewshot import choice_target

        lps = {c: _full_forward_logprob(model, prompt_ids, tok(choice_target(sent, ex, c, "instruction", tok),
                                                                 add_special_tokens=False)["input_ids"])
               for c in sent.labels}
        top = max(lps.values())
        expected = math.exp(lps[ex.target] - top) / sum(math.exp(v - top) for v in lps.values())
        assert row["gold_prob"] == pytest.approx(expected, abs=1e-4)
        probs.append(expected)
    metrics = json.loads((out / "fsent.metrics.json").read_text())["metrics"]
    assert metrics["gold_prob"] == pytest.approx(sum(probs) / len(probs), abs=1e-4)
    assert metrics["gold_logprob"] == pytest.approx(sum(math.log(p) for p in probs) / len(probs), abs=1e-3)
    assert likelihood_by_id(out / "fsent.predictions.jsonl")[0] == "gold_prob"

    lls = []
    for row, ex in zip(_rows(out, "fnum"), num.load("test", tmp_path)):
        prompt_ids, answer_ids = encode_pair(tok, build_pair(num, ex, "instruction", tok, []), False)
        expected = _full_forward_logprob(model, prompt_ids, answer_ids) / len(answer_ids)
        assert row["gold_logprob_per_token"] == pytest.approx(expected, abs=1e-4)
        lls.append(expected)
    metrics = json.loads((out / "fnum.metrics.json").read_text())["metrics"]
    assert metrics["gold_logprob_per_token"] == pytest.approx(sum(lls) / len(lls), abs=1e-4)
    name, by_id = likelihood_by_id(out / "fnum.predictions.jsonl")
    assert name == "gold_logprob_per_token" and len(by_id) == len(lls)
