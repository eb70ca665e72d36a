"""Faults of issue 25's audit, second part: a key echoed into stored replies, endpoints that
never answer, slow, deep or crowding clients of `serve`, relative task folders, a full disk,
and the mix search's verdict on identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_fakes import ScriptedServer, chat_body
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
