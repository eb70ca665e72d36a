"""Faults of issue 25's audit, second part: a key echoed into stored replies, endpoints that
never answer, slow, deep or crowding clients of `serve`, relative task folders, a full disk,
and the mix search's verdict on identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_fakes import ScriptedServer, chat_body, lively_model_dir  # noqa: F401 (fixture)
from fault_helpers import assert_one_line_error, cli

KEY = "sk-test-SECRET-1234"


@pytest.fixture
def key_env(isolated_home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return isolated_home


def _stored_bytes(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()}


# -- 7. an endpoint echoing the key in its 200 reply ---------------------------------------------


def _echo_key_reply(body, headers) -> tuple[int, dict]:
    """A 200 that carries the request's Authorization in its content, an extra field and a key."""
    auth = headers.get("Authorization")
    reply = chat_body(f"positive (you sent {auth})")
    reply["debug"] = {"headers": {"authorization": auth}, auth.split()[-1]: "raw key"}
    return 200, reply


def test_a_key_echoed_in_a_200_reply_is_stored_nowhere(key_env, tmp_path, capsys, monkeypatch, data_dir):
    server = ScriptedServer(_echo_key_reply)
    try:
        res = cli(capsys, monkeypatch, "eval", "--model", "openai:gpt-4o", "--base-url", server.url, "--tasks", "fpb",
                  "--limit", "3", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--no-progress")
        assert res.code == 0, res.err
        assert server.requests and all(r["auth"] == f"Bearer {KEY}" for r in server.requests)  # the key was used
        again = cli(capsys, monkeypatch, "eval", "--model", "openai:gpt-4o", "--base-url", server.url, "--tasks", "fpb",
                    "--limit", "3", "--data-dir", str(data_dir), "--out", str(tmp_path / "o2"), "--no-progress")
        assert again.code == 0, again.err  # answered from the cache
    finally:
        server.close()
    stored = _stored_bytes(tmp_path / "o", tmp_path / "o2", key_env)
    assert key_env / "api_cache.sqlite" in stored and any(p.name == "fpb.predictions.jsonl" for p in stored)
    assert not [p for p, data in stored.items() if KEY.encode() in data]
    assert KEY not in res.out + res.err + again.out + again.err
    predictions = (tmp_path / "o" / "fpb.predictions.jsonl").read_text()
    assert "Bearer ***" in predictions


# -- 9, 10, 13. `serve` under slow, deep and crowding clients -------------------------------------


@pytest.fixture(scope="module")
def loaded(lively_model_dir):  # noqa: F811
    from fincocktail.evaluation.loading import load_for_eval

    return load_for_eval(str(lively_model_dir))


@pytest.fixture
def serve(loaded):
    """Start a server on a free port with the given settings (`run=False`: not accepting yet)."""
    import threading

    from fincocktail.serving.server import ChatService, make_server

    started = []

    def start(client_timeout_s: float = 5.0, max_waiting: int = 64, run: bool = True):
        service = ChatService(loaded, "tiny", max_tokens_cap=16, queue_timeout_s=30.0)
        server = make_server(service, "127.0.0.1", 0, client_timeout_s=client_timeout_s, max_waiting=max_waiting)
        go = lambda: threading.Thread(target=server.serve_forever, daemon=True).start()  # noqa: E731
        if run:
            go()
        started.append(server)
        return service, server.server_address[1], go

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _hung_up(sock) -> bool:
    """Whether the server closed `sock` (EOF or reset), without blocking."""
    import select

    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1024) == b""
    except OSError:
        return True


CHAT_BODY = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(CHAT_BODY)).encode() + b"\r\n\r\n"


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_client_trickling_its_request_is_dropped_at_the_total_deadline(serve, part):
    import socket
    import time

    _, port, _ = serve(client_timeout_s=1.0)
    fast, slow = (b"", SLOW_HEAD + CHAT_BODY) if part == "headers" else (SLOW_HEAD, CHAT_BODY)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(fast)
        t0 = time.monotonic()
        for byte in slow[:40]:  # one byte every 0.1 s: each far within 1 s, the whole 4 s
            if _hung_up(sock):
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
    assert took < 2.5, f"still connected after {took:.1f} s of trickling"


def test_deeply_nested_json_gets_a_400_in_openai_format(serve):
    import httpx

    _, port, _ = serve()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    r = httpx.post(url, content=b"[" * 200_000, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "too deeply" in err["message"]
    assert httpx.post(url, content=CHAT_BODY, timeout=30).status_code == 200  # still serving


def _reply(sock) -> str:
    """One whole HTTP reply read from `sock` (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    return next((int(line.split(":", 1)[1]) for line in head.splitlines() if line.startswith("content-length:")), 0)


def test_a_burst_of_20_connections_is_accepted_and_answered_in_openai_format(serve):
    import json
    import select
    import socket
    import time

    service, port, go = serve(max_waiting=4, run=False)  # nothing accepted while the 20 connect
    socks = []
    try:
        for _ in range(20):
            sock = socket.socket()
            sock.settimeout(0.5)
            sock.connect(("127.0.0.1", port))  # with http.server's backlog of 5 the 7th SYN is dropped: timeout
            socks.append(sock)
        with service._lock:  # a long request decodes: the others queue up
            go()
            for sock in socks:
                sock.settimeout(10)
                sock.sendall(SLOW_HEAD + CHAT_BODY)
            deadline = time.monotonic() + 5  # 4 wait for the model, the other 16 are refused at once
            while time.monotonic() < deadline and len(select.select(socks, [], [], 0.1)[0]) < 16:
                pass
        answers = [_reply(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    statuses = [a.split(" ", 2)[1] for a in answers]
    assert sorted(statuses) == ["200"] * 4 + ["503"] * 16, statuses
    refused = json.loads(next(a for a in answers if " 503 " in a).split("\r\n\r\n", 1)[1])["error"]
    assert refused["code"] == "busy" and refused["type"] == "server_error" and "queue is full" in refused["message"]


# -- 14. an endpoint that accepts and never answers ----------------------------------------------


class _SilentEndpoint:
    """Accepts connections (counting them: one per request) and never answers; stops with `close`."""

    def __init__(self):
        import socket
        import threading

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.held: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.held:
            sock.close()
        self.listener.close()


@pytest.mark.parametrize("batch", [1, 4])
def test_a_never_answering_endpoint_costs_the_run_two_timeouts(key_env, tmp_path, capsys, monkeypatch, data_dir, batch):
    import time

    import fincocktail.evaluation.api as api

    monkeypatch.setattr(api, "DEFAULT_TIMEOUT_S", 0.5)
    endpoint = _SilentEndpoint()
    try:
        t0 = time.monotonic()
        res = cli(capsys, monkeypatch, "eval", "--model", "openai:m", "--base-url", endpoint.url, "--tasks", "fpb", "--limit", "4",
                  "--batch-size", str(batch), "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--no-progress")
        took = time.monotonic() - t0
    finally:
        endpoint.close()
    assert_one_line_error(res, "did not answer within 0.5 s", "2 time(s); the endpoint is hanging")
    # 4 examples x 2 timeouts each was 8 requests, one after the other at batch 1; now the run stops
    # after two timeouts in a row (a second one in flight at batch 4 may still be sent)
    assert len(endpoint.held) <= batch + 1, f"{len(endpoint.held)} requests"
    assert took < 2 * 0.5 + 3, f"{took:.1f} s"


# -- 4. the mix search's verdict: identity is by recipe, not by predictions ----------------------


class _IdenticalPredictions:
    """A Findings tester for two runs whose test predictions are the same: a zero contrast."""

    def contrast(self, kind, task, a, b):
        from types import SimpleNamespace

        return [SimpleNamespace(effect=0.0, low=0.0, high=0.0, p=1.0)]


def _objective_row(diff):
    from fincocktail.report.mixture_compare import Row

    return [Row("objective", {}, {"best cocktail": ("fpb+tfns", {})}, {"best cocktail": diff})]


def test_the_mix_verdict_calls_a_recommendation_the_cocktail_itself_only_for_the_same_recipe():
    from fincocktail.report.mixture_compare import _pair, verdict

    proposed, cocktail = ("mixture", (("tfns", 16),)), ("cocktail", ("fpb", "tfns"))
    same_predictions = verdict(_objective_row(_pair(_IdenticalPredictions(), "fpb", proposed, cocktail)))
    assert "itself" not in same_predictions
    assert "made the same test predictions as the hand-built cocktail fpb+tfns" in same_predictions
    same_recipe = verdict(_objective_row(_pair(_IdenticalPredictions(), "fpb", cocktail, cocktail)))
    assert same_recipe.startswith("The recommendation is the hand-built cocktail fpb+tfns itself")


# -- 15. a relative tasks folder is the working directory's, everywhere ---------------------------


def test_a_relative_tasks_folder_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    import shutil

    import yaml

    from fincocktail.cocktail import CocktailConfig, prepare_cocktail
    from fincocktail.sweep.spec import load_plan
    from fincocktail.tasks.registry import get_task

    examples = Path(__file__).resolve().parents[1] / "examples" / "tasks"
    shutil.copytree(examples, tmp_path / "work" / "tasks" / "ok")
    data_dir = tmp_path / "data"  # the data folder: the task's files are not there
    data_dir.mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("FINCOCKTAIL_TASKS", "tasks/ok")
    task = get_task("earnings_tone")
    assert task.spec_path == tmp_path / "work" / "tasks" / "ok" / "earnings_tone.yaml"
    # train (and sweeps, which train through it) read and hash the task's files from there
    data = prepare_cocktail(CocktailConfig.model_validate({"name": "tone", "ingredients": ["earnings_tone"]}), data_dir)
    assert list(data.file_hashes["earnings_tone"]) == [str(tmp_path / "work" / "tasks" / "ok" / "earnings_tone.jsonl")]
    assert task.load("test", data_dir)  # eval
    sweep = tmp_path / "work" / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tone", "tasks": ["earnings_tone"], "models": ["smollm2-135m-instruct"],
                                     "eval": {"tasks": ["earnings_tone"], "max_examples": 5}}), encoding="utf-8")
    assert load_plan(sweep).runs


# -- 5. a full disk: one line naming the folder, and the run card says failed ----------------------


def _disk_full(kind: str, path) -> Exception:
    import errno

    if kind == "OSError":
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    from safetensors import SafetensorError  # what safetensors raises on a full disk

    return SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')


@pytest.mark.parametrize("kind", ["OSError", "SafetensorError"])
def test_a_full_disk_in_train_is_one_line_and_the_card_says_failed(tiny_model_dir, data_dir, tmp_path, capsys, monkeypatch,
                                                                   one_thread, kind):
    import json

    import yaml

    import fincocktail.training.trainer as trainer

    def full(model, tokenizer, dest):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "adapter_model.safetensors").write_bytes(b"\0" * 1000)  # what fitted before the disk filled
        raise _disk_full(kind, dest / "adapter_model.safetensors")

    monkeypatch.setattr(trainer, "_save_pretrained", full)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "data_dir": str(data_dir), "batch_size": 4, "lr": 1e-2, "max_steps": 1, "epochs": 1,
        "checkpoint_every": 100, "lora": {"r": 4, "alpha": 8},
        "cocktail": {"name": "fpb_only", "seed": 0, "ingredients": [{"task": "fpb", "count": 8}]},
    }), encoding="utf-8")
    run_dir = tmp_path / "run"
    res = cli(capsys, monkeypatch, "train", str(config), "--out", str(run_dir), "-q")
    assert_one_line_error(res, str(run_dir), "no space left on the device", "choose another --out")
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["status"] == "failed" and "no space left" in card["error"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".adapter.tmp")]  # the half adapter is gone


def test_a_full_disk_in_eval_is_one_line_naming_the_folder(key_env, tmp_path, capsys, monkeypatch, data_dir):
    import fincocktail.evaluation.runner as runner

    def full(path, text):
        raise _disk_full("OSError", path)

    monkeypatch.setattr(runner, "write_text_atomic", full)
    server = ScriptedServer(lambda body, headers: (200, chat_body("positive")))
    try:
        res = cli(capsys, monkeypatch, "eval", "--model", "openai:m", "--base-url", server.url, "--tasks", "fpb", "--limit", "2",
                  "--data-dir", str(data_dir), "--out", str(tmp_path / "o"), "--no-progress")
    finally:
        server.close()
    assert_one_line_error(res, str(tmp_path / "o"), "no space left on the device")
