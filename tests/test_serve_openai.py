"""`fincocktail serve` for the tools people use: the official openai client (streamed and not),
/v1/completions with echo + logprobs, several adapters over one base, and lm-eval's local-completions."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import torch

from eval_fakes import FakeSentiment, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.evaluation.adapters import parse_adapter_specs
from fincocktail.serving.pool import ModelPool
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.serving.server import ChatService, make_server
from fincocktail.serving.streaming import DeltaText

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "user", "content": "Sentiment of: profit rose"}]
MULTI = ("Bullish", "Bearish", "neutral outlook")


def _adapter(base_dir, out, seed):
    """A random LoRA adapter (B != 0, so it changes the outputs), saved as a peft folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(lively_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    a = _adapter(lively_model_dir, root / "cocktail-a", 1)
    b = _adapter(lively_model_dir, root / "cocktail-b", 2)
    loaded = load_for_eval(str(lively_model_dir))
    pool = ModelPool(loaded, "base", parse_adapter_specs([f"a={a}", str(b)]))
    srv = make_server(ChatService(pool), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{srv.server_address[1]}/v1", "adapters": {"a": a, "cocktail-b": b}, "base": lively_model_dir, "root": root}
    srv.shutdown()
    srv.server_close()


def _client(url):
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def test_openai_client_chat_streamed_equals_not_streamed(server):
    client = _client(server["url"])
    assert [m.id for m in client.models.list().data] == ["base", "a", "cocktail-b"]
    for model in ("base", "a"):
        plain = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
        stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert plain.model == model and chunks[0].model == model
        assert text == plain.choices[0].message.content and text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens and not chunks[-1].choices
    answers = {m: client.chat.completions.create(model=m, messages=MESSAGES, max_tokens=12).choices[0].message.content for m in ("base", "a", "cocktail-b")}
    assert len(set(answers.values())) == 3  # three different models behind one server


def test_unknown_model_is_a_404_in_openai_format(server):
    client = _client(server["url"])
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=MESSAGES, max_tokens=2)
    assert info.value.status_code == 404 and info.value.code == "model_not_found" and "serves `base`, `a`, `cocktail-b`" in info.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    r = httpx.post(f"{server['url']}/chat/completions", json={"model": "nope", "messages": MESSAGES, "stream": True})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"  # a plain JSON error, before any event
    # the server's max_tokens cap holds for text completions and streams too
    for path, body in (("completions", {"prompt": "x"}), ("chat/completions", {"messages": MESSAGES, "stream": True})):
        r = httpx.post(f"{server['url']}/{path}", json={"model": "a", "max_tokens": 100_000, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_completions_echo_logprobs_match_an_independent_forward(server):
    """token_logprobs[i] = log P(token i | tokens < i), checked against plain transformers logits of the merged model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = _client(server["url"])
    tok = AutoTokenizer.from_pretrained(server["base"])
    prompt = "Instruction: What is the sentiment?\nInput: profit rose\nAnswer:"
    ids = tok(prompt)["input_ids"]
    for name in ("base", "a"):
        res = client.completions.create(model=name, prompt=prompt, max_tokens=3, echo=True, logprobs=2, temperature=0)
        lp = res.choices[0].logprobs
        assert res.choices[0].text.startswith(prompt) and lp.token_logprobs[0] is None
        assert len(lp.tokens) == len(ids) + res.usage.completion_tokens
        model = AutoModelForCausalLM.from_pretrained(server["base"]) if name == "base" else load_for_eval(str(server["base"]), server["adapters"]["a"]).model
        seq = torch.tensor([ids])
        with torch.no_grad():
            ref = torch.log_softmax(model(seq).logits[0].float(), -1)
        expected = ref[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].tolist()
        assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=2e-4)
        assert all(1 <= len(t) <= 2 for t in lp.top_logprobs[1:]) and lp.text_offset == sorted(lp.text_offset)
        assert max(lp.top_logprobs[1].values()) == pytest.approx(ref[0].max().item(), abs=2e-4)
    # token-id prompts in a batch (what lm-eval sends), each its own choice
    batch = httpx.post(f"{server['url']}/completions", json={"model": "a", "prompt": [ids, ids[:5]], "max_tokens": 1, "echo": True, "logprobs": 1}).json()
    assert [c["index"] for c in batch["choices"]] == [0, 1] and len(batch["choices"][1]["logprobs"]["tokens"]) == 6
    # the one-pass scoring path (max_tokens 1 with logprobs) decodes the token plain greedy decoding gives
    plain1 = httpx.post(f"{server['url']}/completions", json={"model": "a", "prompt": [ids, ids[:5]], "max_tokens": 1, "echo": True}).json()
    assert [c["text"] for c in plain1["choices"]] == [c["text"] for c in batch["choices"]]
    three = client.completions.create(model="a", prompt=ids, max_tokens=3, echo=True, logprobs=1)
    assert three.choices[0].logprobs.token_logprobs[: len(ids) + 1] == pytest.approx(batch["choices"][0]["logprobs"]["token_logprobs"], abs=1e-5)
    # streamed text completion equals the plain one
    plain = client.completions.create(model="a", prompt=prompt, max_tokens=8)
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="a", prompt=prompt, max_tokens=8, stream=True) if c.choices)
    assert streamed == plain.choices[0].text


class _CharTokenizer:
    """One token per character; id 0 is EOS (decoded to nothing)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0)


@pytest.mark.parametrize("text,stop", [("hello world\nmore", ["\n"]), ("abcSTOPdef", ["STOP"]), ("aSTSTOPx", ["STOP"]), ("no stop here", ["###"])])
def test_streamed_deltas_never_send_text_a_stop_string_removes(text, stop):
    from fincocktail.evaluation.generate import cut_at_stop

    d = DeltaText(_CharTokenizer(), stop)
    sent = "".join(d.push(ord(c)) for c in text)
    final = cut_at_stop(text, stop)[0]
    assert final.startswith(sent)
    assert sent + d.finish(final) == final


def test_lm_eval_local_completions_through_the_server_matches_fincocktail_eval(server, tmp_path):
    """lm-eval's local-completions model scores an exported task through the server like `fincocktail eval --adapter` does."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from fincocktail.export.lmeval import export_lmeval
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    tasks = resolver(FakeSentiment("fmulti", labels=MULTI, sizes={"train": 12, "test": 12}))
    export_lmeval(tmp_path / "export", ["fmulti"], tmp_path, tasks)
    adapter = server["adapters"]["a"]
    run_eval(EvalConfig(model=str(server["base"]), adapter=str(adapter), tasks=["fmulti"], out=tmp_path / "ours", data_dir=tmp_path), resolve_task=tasks)
    ours = [json.loads(x) for x in (tmp_path / "ours" / "fmulti.predictions.jsonl").read_text().splitlines()]
    res = simple_evaluate(
        model="local-completions",
        model_args=f"model=a,base_url={server['url']}/completions,tokenizer={server['base']},tokenizer_backend=huggingface,num_concurrent=1,max_retries=1",
        tasks=["fincocktail_fmulti"], task_manager=TaskManager(include_path=str(tmp_path / "export"), include_defaults=False), log_samples=True,
    )
    samples = sorted(res["samples"]["fincocktail_fmulti"], key=lambda s: s["doc_id"])
    assert len(samples) == len(ours) == 12
    for s, o in zip(samples, ours):
        theirs = [r[0] for r in s["filtered_resps"]]
        assert theirs == pytest.approx(list(o["choice_logprobs"].values()), abs=1e-3)
        assert MULTI[max(range(3), key=theirs.__getitem__)] == o["extracted"]
