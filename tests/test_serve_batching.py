"""`fincocktail serve` under concurrency and for tuned adapters (issue 27): requests waiting for the
model share forward passes with the outputs of sequential decoding; options it cannot honour are
refused in OpenAI's error format; chat logprobs; each adapter prompted in the style it was trained with."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import torch

from eval_fakes import FakeNumeric, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.evaluation.adapters import parse_adapter_specs
from fincocktail.serving.pool import ModelPool
from fincocktail.models.forward import Scorer
from fincocktail.evaluation.generate import generate_greedy
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.serving.server import ChatService, make_server

pytestmark = pytest.mark.usefixtures("one_thread")

REQUESTS = [  # (user text, max_tokens, stop): each request brings its own options
    ("Sentiment of: profit rose", 8, ()),
    ("Sentiment of: sales fell sharply", 6, ("e",)),
    ("What does EBITDA stand for?", 10, ()),
    ("Revenue 12 million, cost 5 million. Profit?", 4, ("\n",)),
]


@pytest.fixture(scope="module")
def loaded(lively_model_dir):  # noqa: F811
    return load_for_eval(str(lively_model_dir))


@pytest.fixture
def serve():
    """Start servers over the given service; all are shut down afterwards."""
    started = []

    def start(service: ChatService) -> str:
        server = make_server(service, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _count_forwards(service: ChatService, delay_s: float = 0.0) -> list[int]:
    """Count (and optionally slow down, as a fixed-cost accelerator forward) every forward of the served model."""
    calls = [0]
    real = Scorer.hidden.__get__(service.pool.scorer)

    def hidden(*args, **kwargs):
        calls[0] += 1
        if delay_s:
            time.sleep(delay_s)
        return real(*args, **kwargs)

    service.pool.scorer.hidden = hidden  # type: ignore[method-assign]
    return calls


def _ask(url: str, text: str, max_tokens: int, stop: tuple[str, ...], stream: bool = False) -> tuple[str, str]:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "stop": list(stop) or None, "stream": stream}
    if not stream:
        r = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    text_out, finish = "", ""
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                text_out += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
    return text_out, finish


def _concurrently(url: str, requests, stream_every: int = 2) -> list[tuple[str, str]]:
    out: list = [None] * len(requests)

    def one(i: int) -> None:
        out[i] = _ask(url, *requests[i], stream=i % stream_every == 1)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_waiting_requests_are_decoded_as_one_batch_with_the_outputs_of_sequential_decoding(loaded, serve):
    service = ChatService(loaded, "tiny", batch_window_s=0.0)
    url = serve(service)
    calls = _count_forwards(service)
    sequential = [_ask(url, *r) for r in REQUESTS]
    alone = calls[0]
    assert service.batcher.batches == [1, 1, 1, 1]
    calls[0] = 0
    with service._lock:  # the model is busy: all four requests wait for it, then go as one batch
        results: list = []
        runner = threading.Thread(target=lambda: results.extend(_concurrently(url, REQUESTS)), daemon=True)
        runner.start()
        deadline = time.monotonic() + 30
        while len(service.batcher._waiting) < len(REQUESTS) and time.monotonic() < deadline:
            time.sleep(0.01)
    runner.join(60)
    assert service.batcher.batches[4:] == [4]
    assert results == sequential  # streamed (odd ones) and not, each with its own stop and budget
    assert calls[0] < 0.6 * alone, (calls[0], alone)


def test_two_concurrent_requests_take_less_than_one_and_a_half_times_one(loaded, serve):
    """With a forward of fixed cost (an accelerator's, simulated by a sleep, so a loaded CPU does not skew it)."""
    service = ChatService(loaded, "tiny", batch_window_s=0.05)
    url = serve(service)
    _count_forwards(service, delay_s=0.02)
    pair = [("Sentiment of: profit rose", 16, ()), ("Sentiment of: sales fell", 16, ())]
    t0 = time.perf_counter()
    one = _ask(url, *pair[0])
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    both = _concurrently(url, pair)
    t_two = time.perf_counter() - t0
    assert both[0] == one and service.batcher.batches[-1] == 2
    assert t_two < 1.5 * t_one, (t_two, t_one)


def test_a_cancelled_row_ends_alone_and_the_batch_decodes_on(loaded):
    scorer, tok = Scorer(loaded.model), loaded.tokenizer
    prompts = [tok(t)["input_ids"] for t, _, _ in REQUESTS[:3]]
    solo = [generate_greedy(scorer, tok, [p], 8, batch_size=1)[0] for p in prompts]
    both = generate_greedy(scorer, tok, prompts, 8, batch_size=3, row_gone=lambda i: i == 1)
    assert both[1].finish_reason == "cancelled" and both[1].n_tokens == 0
    assert [both[0], both[2]] == [solo[0], solo[2]]
    limited = generate_greedy(scorer, tok, prompts, 8, batch_size=3, row_max_tokens=[2, 8, 5], row_stops=[(), (), ("e",)])
    assert limited[0] == generate_greedy(scorer, tok, [prompts[0]], 2)[0]
    assert limited[2] == generate_greedy(scorer, tok, [prompts[2]], 5, ("e",))[0]


@pytest.mark.parametrize("field,value", [("response_format", {"type": "json_object"}), ("tools", [{"type": "function"}]),
                                         ("top_p", 0.5), ("presence_penalty", 1.0), ("logit_bias", {"5": 10}), ("n_beams", 2)])
def test_unsupported_options_are_refused_in_openai_format(loaded, serve, field, value):
    url = serve(ChatService(loaded, "tiny"))
    r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, field: value})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == field and err["code"] == "unsupported_parameter" and field in err["message"] and "\n" not in err["message"]
    r = httpx.post(f"{url}/completions", json={"prompt": "hi", "max_tokens": 2, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field
    neutral = {"response_format": {"type": "text"}, "top_p": 1, "seed": 3, "user": "x", "tools": None}
    r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **neutral})
    assert r.status_code == 200, r.text


def test_chat_logprobs_match_a_hand_computed_log_softmax(loaded, serve, lively_model_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM

    url = serve(ChatService(loaded, "tiny"))
    messages = [{"role": "user", "content": "Sentiment of: profit rose"}]
    r = httpx.post(f"{url}/chat/completions", json={"messages": messages, "max_tokens": 6, "logprobs": True, "top_logprobs": 3}).json()
    content = r["choices"][0]["logprobs"]["content"]
    tok = loaded.tokenizer
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir)
    assert r["choices"][0]["finish_reason"] == "length" and len(content) == 6
    seq = list(prompt)
    for entry in content:  # greedy decoding by hand: each step's log-softmax over the whole sequence so far
        with torch.no_grad():
            step = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].float(), -1)
        best = int(step.argmax())
        assert entry["token"] == tok.decode([best]) and bytes(entry["bytes"]).decode() == entry["token"]
        assert entry["logprob"] == pytest.approx(step[best].item(), abs=2e-4)
        assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx(step.topk(3).values.tolist(), abs=2e-4)
        assert [t["token"] for t in entry["top_logprobs"]][0] == entry["token"]
        seq.append(best)
    assert tok.decode(seq[len(prompt):], skip_special_tokens=True) == r["choices"][0]["message"]["content"]
    bad = httpx.post(f"{url}/chat/completions", json={"messages": messages, "top_logprobs": 2})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"
    bad = httpx.post(f"{url}/chat/completions", json={"messages": messages, "logprobs": True, "stream": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "logprobs"


def _tuned_run(base_dir, run_dir, style: str, seed: int):
    """A training run folder as `fincocktail train` leaves it: a (random, B != 0) LoRA adapter and a run card with its style."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                          LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft.save_pretrained(run_dir / "adapter")
    (run_dir / "run_card.json").write_text(json.dumps({"status": "complete", "config": {"prompt_style": style}}))
    return run_dir


def test_each_adapter_answers_through_chat_as_fincocktail_eval_scored_it(lively_model_dir, serve, tmp_path):  # noqa: F811
    """The chat endpoint prompts an adapter in its training style, so it answers what `fincocktail eval` recorded."""
    from fincocktail.evaluation.runner import EvalConfig, run_eval

    task = FakeNumeric(n=6)
    runs = {style: _tuned_run(lively_model_dir, tmp_path / f"{style}-lora", style, seed) for seed, style in enumerate(("instruction", "chat"))}
    pool = ModelPool(load_for_eval(str(lively_model_dir)), "base", parse_adapter_specs([f"{s}={d}" for s, d in runs.items()]))
    url = serve(ChatService(pool))
    listed = {m["id"]: m.get("prompt_style") for m in httpx.get(f"{url}/models").json()["data"]}
    assert listed == {"base": None, "instruction": "instruction", "chat": "chat"}
    for style, run_dir in runs.items():
        run_eval(EvalConfig(model=str(lively_model_dir), adapter=str(run_dir), tasks=["fnum"], out=tmp_path / f"eval-{style}",
                            data_dir=tmp_path), resolve_task=resolver(task))
        card = json.loads((tmp_path / f"eval-{style}" / "run_card.json").read_text())
        assert card["style"] == style  # eval too picks the adapter's training style
        rows = [json.loads(x) for x in (tmp_path / f"eval-{style}" / "fnum.predictions.jsonl").read_text().splitlines()]
        for ex, row in zip(task.load("test", tmp_path), rows):
            message = {"role": "user", "content": f"{task.instruction}\n\n{ex.input}"}
            r = httpx.post(f"{url}/chat/completions", json={"model": style, "messages": [message], "max_tokens": 10, "stop": ["\n"]})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == row["raw_output"]
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    r = httpx.post(f"{url}/chat/completions", json={"model": "instruction", "messages": two})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "prompt_style" and "instruction prompt style" in err["message"] and "\n" not in err["message"]
    assert httpx.post(f"{url}/chat/completions", json={"model": "chat", "messages": two, "max_tokens": 2}).status_code == 200


def test_text_completions_are_batched_too_with_the_answers_of_one_prompt_at_a_time(loaded, serve):
    """Several prompts in one request (and concurrent requests) share a batch; each answer is the prompt's alone."""
    service = ChatService(loaded, "tiny", batch_window_s=0.0)
    url = serve(service)
    prompts = [text for text, _, _ in REQUESTS]
    alone = [httpx.post(f"{url}/completions", json={"prompt": p, "max_tokens": 6, "stop": ["e"]}).json()["choices"][0] for p in prompts]
    together = httpx.post(f"{url}/completions", json={"prompt": prompts, "max_tokens": 6, "stop": ["e"], "echo": True}).json()
    assert service.batcher.batches == [1, 1, 1, 1, 4]
    assert [c["text"] for c in together["choices"]] == [p + a["text"] for p, a in zip(prompts, alone)]
    assert [c["finish_reason"] for c in together["choices"]] == [a["finish_reason"] for a in alone]
    assert [c["index"] for c in together["choices"]] == [0, 1, 2, 3] and together["usage"]["completion_tokens"] > 0
