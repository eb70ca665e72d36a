"""Abuse of `fincocktail serve`: oversized max_tokens, clients that vanish or dawdle, a busy
model, unknown model names and methods; every error an OpenAI-style JSON body (issue 14)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from eval_fakes import lively_model_dir  # noqa: F401 (fixture)

import fincocktail.serving.batching as batching_mod
from fincocktail.evaluation.generate import generate_greedy
from fincocktail.evaluation.loading import load_for_eval
from fincocktail.serving.server import ChatService, make_server

MESSAGES = [{"role": "user", "content": "Sentiment of: profit rose"}]


@pytest.fixture(scope="module")
def loaded(lively_model_dir):  # noqa: F811
    return load_for_eval(str(lively_model_dir))


@pytest.fixture
def serve(loaded):
    """Start a server on a free port with the given settings; all are shut down afterwards."""
    started = []

    def start(max_tokens_cap: int = 64, queue_timeout_s: float = 5.0, client_timeout_s: float = 5.0):
        service = ChatService(loaded, "tiny", max_tokens_cap=max_tokens_cap, queue_timeout_s=queue_timeout_s)
        server = make_server(service, "127.0.0.1", 0, client_timeout_s=client_timeout_s)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return service, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _chat(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES, **body}, timeout=30)


def test_max_tokens_above_the_server_cap_is_a_400(serve):
    _, url = serve(max_tokens_cap=16)
    r = _chat(url, max_tokens=100_000)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "max_tokens" and "at most 16" in err["message"] and "--max-tokens-cap" in err["message"]
    ok = _chat(url, max_tokens=16)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 16


def test_unknown_model_name_is_a_404_in_openai_format(serve):
    _, url = serve()
    r = _chat(url, model="gpt-4o", max_tokens=2)
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "The model `gpt-4o` does not exist; this server serves `tiny` (GET /v1/models)",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found",
    }
    assert _chat(url, model="tiny", max_tokens=2).status_code == 200


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "OPTIONS"])
def test_other_methods_get_a_json_405(serve, method):
    _, url = serve()
    r = httpx.request(method, f"{url}/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_a_malformed_request_line_gets_json_not_html(serve):
    _, url = serve()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 400") and "application/json" in reply and "<html" not in reply.lower()


def test_a_slow_client_is_dropped_and_others_are_served(serve):
    _, url = serve(client_timeout_s=0.5)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"messages\"")
        assert _chat(url, max_tokens=2).status_code == 200  # served while the slow one dawdles
        t0 = time.monotonic()
        assert slow.recv(1024) == b""  # the server hung up on it
        assert time.monotonic() - t0 < 5


def test_a_request_waiting_too_long_for_the_model_gets_a_503(serve):
    service, url = serve(queue_timeout_s=0.2)
    with service._lock:  # an earlier request is decoding
        r = _chat(url, max_tokens=2)
    assert r.status_code == 503 and r.json()["error"]["code"] == "busy"
    assert _chat(url, max_tokens=2).status_code == 200


def test_decoding_stops_when_the_client_goes_away(serve, monkeypatch):
    finished: list = []

    def observed(*args, **kwargs):
        time.sleep(0.5)  # by now the client has hung up
        gens = generate_greedy(*args, **kwargs)
        finished.append(gens[0])
        return gens

    monkeypatch.setattr(batching_mod, "generate_greedy", observed)
    _, url = serve(max_tokens_cap=64)
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"messages": MESSAGES, "max_tokens": 64}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 10
    while not finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished and finished[0].finish_reason == "cancelled" and finished[0].n_tokens == 0


def test_peer_closed_sees_a_hang_up_without_eating_data():
    from fincocktail.serving.server import peer_closed

    a, b = socket.socketpair()
    try:
        assert not peer_closed(a)
        b.sendall(b"x")
        assert not peer_closed(a) and a.recv(1) == b"x"  # peeked, not consumed
        b.close()
        assert peer_closed(a)
    finally:
        a.close()


def test_generate_stops_when_asked(loaded):
    from fincocktail.models.forward import Scorer

    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    ids = loaded.tokenizer("profit rose", add_special_tokens=False)["input_ids"]
    gen = generate_greedy(Scorer(loaded.model), loaded.tokenizer, [ids], 50, batch_size=1, should_stop=stop_after_three)[0]
    assert gen.finish_reason in ("cancelled", "stop") and gen.n_tokens <= 3
