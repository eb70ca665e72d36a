"""Faults and abuse at API endpoints: servers that echo secrets, hang, or cannot exist, and
where secrets may end up (printed errors, error.log, results.sqlite, run cards) (issue 14)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import yaml
from eval_fakes import FakeSentiment, resolver
from fault_helpers import assert_one_line_error, cli
from test_eval_api import FlakyServer

from fincocktail.errors import ConfigError, ModelError
from fincocktail.evaluation.api import ChatClient
from fincocktail.evaluation.runner import EvalConfig, run_eval

SECRET = "sk-live-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Sentiment of: profit rose"}]


@pytest.fixture
def api_env(isolated_home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return isolated_home


def _echo_headers(headers) -> tuple[int, dict]:
    """A 400 whose message echoes the request's headers, as some proxies do."""
    echoed = "; ".join(f"{k}: {v}" for k, v in headers.items())
    return 400, {"error": {"message": f"bad request, you sent {echoed}"}}


@pytest.fixture
def echo_server():
    server = FlakyServer([], respond=_echo_headers)
    yield server
    server.close()


# -- 5. secrets ----------------------------------------------------------------------------------


def test_an_endpoint_echoing_the_key_never_gets_it_printed(api_env, echo_server, tmp_path, capsys, monkeypatch, data_dir):
    client = ChatClient(model="m", base_url=echo_server.url, sleep=lambda s: None)
    with pytest.raises(ModelError, match="answered 400: bad request, you sent") as info:
        client.chat(MESSAGES, max_tokens=4)
    assert SECRET not in str(info.value) and "Bearer ***" in str(info.value)
    res = cli(capsys, monkeypatch, "eval", "--model", "openai:m", "--base-url", echo_server.url, "--tasks", "fpb",
              "--limit", "1", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(res, "answered 400")
    assert SECRET not in res.err + res.out


def leaky_run(run, ctx):
    """A sweep run function whose failure carries the key and URL credentials (imported by name)."""
    import os

    raise RuntimeError(f"upstream said: Authorization: Bearer {os.environ['OPENAI_API_KEY']} at http://bob:hunter22@example.com/v1")


def test_secrets_never_reach_the_sweep_store_or_error_log(api_env, tmp_path):
    from fincocktail.sweep.executors import run_sweep
    from fincocktail.sweep.spec import load_plan
    from fincocktail.sweep.store import ResultsStore

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "leak", "tasks": ["fpb"], "models": ["smollm2-135m-instruct"],
                                     "eval": {"tasks": ["fpb"], "max_examples": 5}}), encoding="utf-8")
    out = tmp_path / "out"
    summary = run_sweep(load_plan(sweep), out, runner=leaky_run, progress=False)
    assert summary.failed and all(SECRET not in e and "hunter22" not in e for e in summary.failed.values())
    stored = [r.error for r in ResultsStore.in_dir(out).runs(status="failed")]
    assert stored and all("Bearer ***" in e and "http://***@example.com" in e for e in stored)
    for path in [out / "results.sqlite", *out.glob("results.sqlite*"), *out.rglob("error.log")]:
        data = path.read_bytes()
        assert SECRET.encode() not in data and b"hunter22" not in data, path


def test_credentials_in_base_url_never_reach_the_run_card(api_env, tmp_path):
    server = FlakyServer([])
    try:
        url = server.url.replace("http://", "http://alice:s3cr3tpw@")
        run = run_eval(EvalConfig(model="openai:m", base_url=url, tasks=["fsent"], limit=2, out=tmp_path / "o", data_dir=tmp_path),
                       resolve_task=resolver(FakeSentiment(sizes={"test": 2})))
        assert len(server.requests) == 2  # the credentials were used, just not written down
    finally:
        server.close()
    text = "".join(p.read_text() for p in (tmp_path / "o").iterdir() if p.is_file())
    assert "s3cr3tpw" not in text and "alice" not in text and SECRET not in text
    assert run.card["base_url"] == server.url.replace("http://", "http://***@")


def test_redact_masks_keys_tokens_and_url_credentials(monkeypatch):
    from fincocktail.plumbing.redact import redact

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef987")
    text = redact("key=tok-abcdef987 Bearer abc.def-123 sk-proj-ABCDEFGH12 https://u:p@h/x https://api.openai.com/v1")
    assert text == "key=*** Bearer *** sk-*** https://***@h/x https://api.openai.com/v1"
    compact = json.dumps({"a": "http://x", "b": "me@host", "c": "http://u:p@h/v1"}, separators=(",", ":"))
    assert json.loads(redact(compact)) == {"a": "http://x", "b": "me@host", "c": "http://***@h/v1"}  # stored JSON stays JSON


# -- 6. endpoints that hang or cannot exist ---------------------------------------------------------


def test_an_endpoint_that_accepts_and_never_answers_fails_fast(api_env):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts connections; nobody ever answers
    try:
        client = ChatClient(model="m", base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout_s=0.3,
                            sleep=lambda s: None)
        t0 = time.monotonic()
        with pytest.raises(ModelError, match=r"did not answer within 0.3 s .*2 time\(s\); the endpoint is hanging"):
            client.chat(MESSAGES, max_tokens=4)
        assert time.monotonic() - t0 < 5 and client.requests_sent == 2
    finally:
        listener.close()


def test_the_retry_budget_bounds_a_slow_retrying_endpoint(api_env):
    server = FlakyServer([503] * 10)
    sleeps: list[float] = []
    try:
        client = ChatClient(model="m", base_url=server.url, backoff_s=10, deadline_s=25, sleep=sleeps.append)
        with pytest.raises(ModelError, match=r"503.*gave up after 2 attempts, 25 s budget"):
            client.chat(MESSAGES, max_tokens=4)
        assert sleeps == [10]  # the next 20 s wait would pass the budget
    finally:
        server.close()


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/v1", "http://", "http://host:notaport/v1"])
def test_a_base_url_that_cannot_work_is_a_config_error_without_requests(api_env, url):
    with pytest.raises(ConfigError, match=r"--base-url .*expected"):
        ChatClient(model="m", base_url=url)


def test_cli_base_url_typo_fails_at_once_with_exit_2(api_env, tmp_path, capsys, monkeypatch, data_dir):
    t0 = time.monotonic()
    res = cli(capsys, monkeypatch, "eval", "--model", "openai:m", "--base-url", "notaurl", "--tasks", "fpb", "--limit", "1",
              "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(res, "--base-url 'notaurl'", "http://localhost:8000/v1", code=2)
    assert time.monotonic() - t0 < 10


def test_eval_lists_each_task_once(tmp_path):
    with pytest.raises(ValueError, match="fpb listed more than once"):
        EvalConfig(model="m", tasks=["fpb", "", "fpb"], out=Path(tmp_path))


def test_a_damaged_response_cache_is_set_aside_and_rebuilt(api_env):
    cache = api_env / "api_cache.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"not sqlite at all " * 100)
    server = FlakyServer([])
    try:
        res = ChatClient(model="m", base_url=server.url).chat(MESSAGES, max_tokens=4)
        assert res.text == "positive" and not res.cached
        again = ChatClient(model="m", base_url=server.url).chat(MESSAGES, max_tokens=4)
        assert again.cached and len(server.requests) == 1  # the rebuilt cache works
    finally:
        server.close()
    assert [p.name.startswith("api_cache.sqlite.damaged-") for p in api_env.glob("api_cache.sqlite.damaged-*")] == [True]
