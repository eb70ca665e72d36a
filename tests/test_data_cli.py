"""`fincocktail data check` / `fetch` and the data-folder lookup order."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fincocktail.data import fetch
from fincocktail.cli import app
from fincocktail.data.catalog import DATASETS, DataFile
from fincocktail.errors import DataError
from fincocktail.plumbing.paths import find_data_dir

runner = CliRunner()


def test_lookup_order(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.delenv("FINCOCKTAIL_DATA", raising=False)
    assert find_data_dir() == (tmp_path / "shared" / "data").resolve()
    (tmp_path / "proj" / "data").mkdir()
    assert find_data_dir() == (tmp_path / "proj" / "data").resolve()
    env_dir = tmp_path / "envdata"
    env_dir.mkdir()
    monkeypatch.setenv("FINCOCKTAIL_DATA", str(env_dir))
    assert find_data_dir() == env_dir.resolve()
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    assert find_data_dir(explicit) == explicit.resolve()
    # An explicit choice that does not exist is an error, not a silent fall-through.
    with pytest.raises(DataError, match="FINCOCKTAIL_DATA"):
        monkeypatch.setenv("FINCOCKTAIL_DATA", str(tmp_path / "nope"))
        find_data_dir()


def test_check_real_data_all_found(data_dir):
    result = runner.invoke(app, ["data", "check", "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert '"state": "missing"' not in result.output
    n_files = sum(len(d.files) for d in DATASETS)
    assert result.output.count('"state": "present"') == n_files


def test_check_verify_detects_changed_file(tmp_path, data_dir):
    root = tmp_path / "data"
    shutil.copytree(data_dir, root)
    target = root / "gsm8k" / "test.jsonl"
    target.chmod(0o644)
    raw = bytearray(target.read_bytes())
    raw[10] = ord("X") if raw[10] != ord("X") else ord("Y")
    target.write_bytes(bytes(raw))  # same size, different content
    result = runner.invoke(app, ["data", "check", "--data-dir", str(root), "--verify"])
    assert result.exit_code == 1
    assert "sha-mismatch" in result.output


def test_check_missing_data_says_where(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    result = runner.invoke(app, ["data", "check", "--data-dir", str(root)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert str(root) in str(result.exception) and "fetch" in str(result.exception)


def test_missing_data_folder_cli_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fincocktail", "data", "check", "--data-dir", str(tmp_path / "absent")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr


def _fake_file(tmp_path: Path, payload: bytes) -> DataFile:
    return DataFile("demo/file.txt", hashlib.sha256(payload).hexdigest(), len(payload), "https://example.invalid/f")


def test_fetch_verifies_and_is_atomic(tmp_path):
    payload = b"hello finance\n"
    f = _fake_file(tmp_path, payload)
    calls = []

    def good(url, dest):
        calls.append(url)
        dest.write_bytes(payload)

    assert fetch.fetch_file(tmp_path, f, download=good) is True
    assert (tmp_path / f.path).read_bytes() == payload
    assert fetch.fetch_file(tmp_path, f, download=good) is False  # already correct: no download
    assert len(calls) == 1

    def corrupt(url, dest):
        dest.write_bytes(b"truncated")

    other = DataFile("demo/other.txt", f.sha256, f.size, f.url)
    with pytest.raises(DataError, match="sha256"):
        fetch.fetch_file(tmp_path, other, download=corrupt)
    assert not (tmp_path / "demo" / "other.txt").exists()
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["file.txt"]  # no .part left behind


def test_fetch_without_network_fails_cleanly(tmp_path):
    # Nothing listens on port 9 of localhost: the connection is refused at once.
    f = DataFile("demo/x.txt", "0" * 64, 1, "http://127.0.0.1:9/x.txt")
    with pytest.raises(DataError, match="cannot download"):
        fetch.fetch_file(tmp_path, f)
    assert not any((tmp_path / "demo").iterdir())
