"""API models: retries, cache, key handling, and the round trip through `fincocktail serve`."""

from __future__ import annotations

import json
import sqlite3
import threading

import httpx
import pytest

from eval_fakes import FakeSentiment, ScriptedServer, chat_body, lively_model_dir, resolver  # noqa: F401 (fixture)
from fincocktail.errors import ConfigError, ModelError
from fincocktail.evaluation.api import ChatClient
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.evaluation.runner import EvalConfig, run_eval
from fincocktail.serving.server import ChatService, make_server

SECRET = "sk-test-secret-1234"


class FlakyServer(ScriptedServer):
    """Fails with the given statuses first, then answers; records every request it gets.

    `respond(headers)` replaces that behaviour with (status, JSON body) of the caller's choosing.
    """

    def __init__(self, failures: list[int], respond=None):
        self.failures = list(failures)
        self.custom = respond
        super().__init__(self._respond)

    def _respond(self, body: dict, headers) -> tuple[int, dict]:
        if self.custom is not None:
            return self.custom(headers)
        if self.failures:
            status = self.failures.pop(0)
            return status, {"error": {"message": f"try later ({status})"}}
        return 200, chat_body("positive")


@pytest.fixture
def api_env(isolated_home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return isolated_home


MESSAGES = [{"role": "user", "content": "Sentiment of: profit rose"}]


def test_retries_on_429_and_500_then_caches(api_env):
    server = FlakyServer([429, 500])
    sleeps: list[float] = []
    try:
        client = ChatClient(model="m", base_url=server.url, backoff_s=0.01, sleep=sleeps.append)
        res = client.chat(MESSAGES, max_tokens=4, stop=["\n"])
        assert res.text == "positive" and not res.cached
        assert len(server.requests) == 3 and client.requests_sent == 3
        assert sleeps == [0.01, 0.02]  # exponential backoff
        assert server.requests[-1]["body"] == {"model": "m", "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stop": ["\n"]}
        assert server.requests[-1]["auth"] == f"Bearer {SECRET}"
        client.close()
        # a fresh client (a rerun) answers from the cache without a request
        again = ChatClient(model="m", base_url=server.url, sleep=sleeps.append)
        res2 = again.chat(MESSAGES, max_tokens=4, stop=["\n"])
        assert res2.text == "positive" and res2.cached and len(server.requests) == 3 and again.requests_sent == 0
        # different parameters are a different cache key
        again.chat(MESSAGES, max_tokens=5, stop=["\n"])
        assert len(server.requests) == 4
        again.close()
    finally:
        server.close()
    db = api_env / "api_cache.sqlite"
    assert db.is_file() and SECRET.encode() not in db.read_bytes()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2


def test_retries_are_bounded(api_env):
    server = FlakyServer([503] * 10)
    try:
        client = ChatClient(model="m", base_url=server.url, max_retries=2, sleep=lambda s: None)
        with pytest.raises(ModelError, match=r"503.*gave up after 3 attempts"):
            client.chat(MESSAGES, max_tokens=4)
        assert len(server.requests) == 3
    finally:
        server.close()


def test_missing_key_and_unreachable_endpoint(isolated_home, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        ChatClient(model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run_eval(EvalConfig(model="openai:m", tasks=["fsent"], out=tmp_path / "o", data_dir=tmp_path), resolve_task=resolver(FakeSentiment()))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = ChatClient(model="m", base_url="http://127.0.0.1:9/v1", sleep=lambda s: None)
    with pytest.raises(ModelError, match="cannot reach") as info:
        client.chat(MESSAGES, max_tokens=4)
    assert "\n" not in str(info.value) and SECRET not in str(info.value)


@pytest.fixture(scope="module")
def served(lively_model_dir):
    loaded = load_for_eval(str(lively_model_dir))
    server = make_server(ChatService(loaded, "tiny"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield loaded, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_server_endpoints_and_bad_requests(served):
    _, url = served
    models = httpx.get(f"{url}/models").json()
    assert models["data"][0]["id"] == "tiny"
    ok = httpx.post(f"{url}/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 3})
    assert ok.status_code == 200
    body = ok.json()
    assert body["choices"][0]["message"]["role"] == "assistant" and body["usage"]["completion_tokens"] <= 3
    bad = [
        b"{not json",
        json.dumps({"messages": "hello"}).encode(),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"messages": MESSAGES, "max_tokens": -1}).encode(),
        json.dumps({"messages": MESSAGES, "temperature": 0.7}).encode(),
        json.dumps({"messages": MESSAGES, "stop": 5}).encode(),
    ]
    for payload in bad:
        r = httpx.post(f"{url}/chat/completions", content=payload, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, payload
        assert r.json()["error"]["message"]
    assert httpx.post(f"{url}/nope", json={}).status_code == 404
    # still serving after the bad requests, and greedy: the same answer again
    again = httpx.post(f"{url}/chat/completions", json={"messages": MESSAGES, "max_tokens": 3})
    assert again.status_code == 200 and again.json()["choices"] == body["choices"]


def test_eval_through_the_server_matches_local_chat_generation(served, api_env, tmp_path):
    loaded, url = served
    task = FakeSentiment(sizes={"train": 10, "test": 9})
    local = run_eval(
        EvalConfig(model=loaded.path, tasks=["fsent"], mode="generate", style="chat", shots=2, batch_size=4, out=tmp_path / "local", data_dir=tmp_path),
        resolve_task=resolver(task), loaded=loaded,
    )
    remote = run_eval(
        EvalConfig(model="openai:tiny", base_url=url, tasks=["fsent"], shots=2, batch_size=3, out=tmp_path / "api", data_dir=tmp_path),
        resolve_task=resolver(task),
    )
    read = lambda d: [json.loads(x) for x in (d / "fsent.predictions.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = read(tmp_path / "local"), read(tmp_path / "api")
    assert [x["raw_output"] for x in a] == [x["raw_output"] for x in b]
    assert [x["extracted"] for x in a] == [x["extracted"] for x in b]
    assert len({x["raw_output"] for x in a}) > 1
    assert remote.card["api_requests_sent"] == 9 and all(not x["cached"] for x in b)
    # the same scores; the likelihoods differ in kind: the local model scores the gold answer teacher-forced,
    # the API (this server's chat log-probs) gives the first answer token's alternatives
    likelihood = ("gold_prob", "gold_logprob", "gold_logprob_per_token")
    local_metrics, remote_metrics = dict(local.results[0].metrics), dict(remote.results[0].metrics)
    assert "gold_logprob_per_token" in local_metrics and "gold_prob" in remote_metrics
    assert 0 < remote_metrics["gold_prob"] <= 1
    assert {k: v for k, v in local_metrics.items() if k not in likelihood} == {
        k: v for k, v in remote_metrics.items() if k not in likelihood}
    card_text = (tmp_path / "api" / "run_card.json").read_text()
    assert SECRET not in card_text and url in card_text
    # a rerun is served from the cache: no request at all
    rerun = run_eval(
        EvalConfig(model="openai:tiny", base_url=url, tasks=["fsent"], shots=2, out=tmp_path / "api2", data_dir=tmp_path),
        resolve_task=resolver(task),
    )
    assert rerun.card["api_requests_sent"] == 0
    assert [x["raw_output"] for x in read(tmp_path / "api2")] == [x["raw_output"] for x in b]
