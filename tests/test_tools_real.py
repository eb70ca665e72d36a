"""Issue 15 end to end on the real SmolLM2: a short LoRA run on FPB, then the tools people use.

- `fincocktail serve` with the base and the adapter: the openai client, streamed and not, and
  lm-eval's local-completions scoring the exported FPB task through the server, its predictions
  matching `fincocktail eval --adapter` on the same sample;
- `fincocktail compare` of the base and the tuned model on that sample;
- `fincocktail export model --merge`, loaded by plain transformers;
- the LLM judge on FinanceBench through a `fincocktail serve` of SmolLM2 itself.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from typer.testing import CliRunner

from fincocktail.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
N = 6


@pytest.fixture(scope="module")
def tuned(smollm2_dir, data_dir, tmp_path_factory):
    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    root = tmp_path_factory.mktemp("real-tools")
    cfg = parse_train_config({
        "model": str(smollm2_dir), "data_dir": str(data_dir), "batch_size": 2, "lr": 5e-4, "max_steps": 2, "epochs": 1, "max_length": 256,
        "lora": {"r": 4, "alpha": 8}, "checkpoint_every": 100, "cocktail": {"seed": 0, "ingredients": [{"task": "fpb", "count": 8}]},
    }, source="real.yaml")
    train(cfg, root / "run", progress=False)
    runner = CliRunner()
    for name, extra in (("base", []), ("tuned", ["--adapter", str(root / "run")])):
        res = runner.invoke(app, ["eval", "--model", str(smollm2_dir), *extra, "--tasks", "fpb", "--limit", str(N), "--data-dir", str(data_dir),
                                  "--out", str(root / name), "--no-progress", "--dtype", "float32"])
        assert res.exit_code == 0, res.output
    return root


@pytest.fixture(scope="module")
def served(smollm2_dir, tuned):
    from fincocktail.evaluation.adapters import parse_adapter_specs
    from fincocktail.serving.pool import ModelPool
    from fincocktail.evaluation.loading import load_for_eval
    from fincocktail.serving.server import ChatService, make_server

    pool = ModelPool(load_for_eval(str(smollm2_dir)), "smollm2", parse_adapter_specs([f"fpb-lora={tuned / 'run'}"]))
    srv = make_server(ChatService(pool), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_client_and_lm_eval_through_the_server(served, tuned, smollm2_dir, data_dir, tmp_path):
    import openai
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    client = openai.OpenAI(base_url=served, api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smollm2", "fpb-lora"]
    # a free question goes to the base model: the FPB adapter is served in the instruction style it was trained in
    messages = [{"role": "user", "content": "In one sentence: what is EBITDA?"}]
    plain = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(model="smollm2", messages=messages, max_tokens=24, stream=True))
    assert streamed == plain.choices[0].message.content and len(streamed) > 10

    res = CliRunner().invoke(app, ["export", "lm-eval", str(tmp_path / "export"), "--tasks", "fpb", "--limit", str(N), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    out = simple_evaluate(
        model="local-completions",
        model_args=f"model=fpb-lora,base_url={served}/completions,tokenizer={smollm2_dir},tokenizer_backend=huggingface,num_concurrent=1,max_retries=1",
        tasks=["fincocktail_fpb"], task_manager=TaskManager(include_path=str(tmp_path / "export"), include_defaults=False), log_samples=True,
    )
    ours = [json.loads(x) for x in (tuned / "tuned" / "fpb.predictions.jsonl").read_text().splitlines()]
    samples = sorted(out["samples"]["fincocktail_fpb"], key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in samples] == [o["id"] for o in ours]
    labels = ["negative", "neutral", "positive"]
    for s, o in zip(samples, ours):
        theirs = [r[0] for r in s["filtered_resps"]]
        assert theirs == pytest.approx([o["choice_logprobs"][lab] for lab in labels], abs=2e-3)
        assert labels[max(range(3), key=theirs.__getitem__)] == o["extracted"]


def test_compare_and_export_on_the_real_model(tuned, smollm2_dir, data_dir, tmp_path):
    from statsmodels.stats.contingency_tables import mcnemar
    from transformers import AutoModelForCausalLM

    from fincocktail.evaluation.loading import load_for_eval

    res = CliRunner().invoke(app, ["compare", str(tuned / "base"), str(tuned / "tuned"), "--data-dir", str(data_dir), "--json"])
    assert res.exit_code == 0, res.output
    d, lik = json.loads(res.stdout)["deltas"]
    assert d["measure"] == "accuracy" and lik["measure"] == "gold_prob"
    a = [json.loads(x)["correct"] for x in (tuned / "base" / "fpb.predictions.jsonl").read_text().splitlines()]
    b = [json.loads(x)["correct"] for x in (tuned / "tuned" / "fpb.predictions.jsonl").read_text().splitlines()]
    table = [[sum(x and y for x, y in zip(a, b)), sum(x and not y for x, y in zip(a, b))], [sum(y and not x for x, y in zip(a, b)), sum(not x and not y for x, y in zip(a, b))]]
    assert d["mcnemar"]["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue) and d["n"] == N

    res = CliRunner().invoke(app, ["export", "model", str(tuned / "run"), "--out", str(tmp_path / "merged"), "--merge", "--eval", str(tuned / "tuned")])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "not for commercial use" in card and "fpb: CC BY-NC-SA 3.0" in card
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ours = load_for_eval(str(smollm2_dir), tuned / "run", "float32").model
    ids = torch.tensor([[1, 504, 3158, 282, 1529, 30]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours(ids).logits, atol=1e-4)


def test_judge_through_a_served_smollm2(served, smollm2_dir, data_dir, isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "none")
    res = CliRunner().invoke(app, ["eval", "--model", str(smollm2_dir), "--tasks", "financebench", "--limit", "2", "--max-new-tokens", "12",
                                   "--data-dir", str(data_dir), "--out", str(tmp_path / "fb"), "--no-progress", "--dtype", "float32",
                                   "--judge", "openai:smollm2", "--judge-base-url", served])
    assert res.exit_code == 0, res.output
    assert "LLM judge" in res.output
    rows = [json.loads(x) for x in (tmp_path / "fb" / "financebench.predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["judge"]["judge"].startswith("openai:smollm2@") and r["judge"]["reply"] is not None for r in rows)
    metrics = json.loads((tmp_path / "fb" / "financebench.metrics.json").read_text())["metrics"]
    assert {"token_f1", "judge_accuracy", "judge_agreement", "judge_kappa"} <= set(metrics)
