"""Helpers of the fault and abuse suite (tests/test_faults_*.py).

`cli` runs the real console entry point in-process, so a test sees exactly what a user sees:
the exit code and the stderr text. `assert_one_line_error` is the suite's contract for every
fault that is not recovered: one `error:` line naming the file or field, no traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    """`fincocktail ARGS...` through `fincocktail.cli.main`, in this process."""
    from fincocktail.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["fincocktail", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_line_error(res: CliResult, *needles: str, code: int | None = None) -> str:
    """A non-zero exit with exactly one `error:` line on stderr that contains every needle."""
    assert res.code != 0, f"expected a failure, got exit 0:\n{res.out}\n{res.err}"
    if code is not None:
        assert res.code == code, res.err
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert "Traceback" not in res.err, res.err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, res.err
    joined = " ".join(res.err.split())
    for needle in needles:
        assert needle in joined, f"{needle!r} not in {res.err!r}"
    return errors[0]


def kill_9_at_marker(script: str, marker, env: dict, timeout_s: float = 120) -> None:
    """Run `python -c script`, wait until it writes `marker`, then kill -9 it.

    The script is expected to block (sleep) right after writing the marker, at the point
    where the test wants the process to die.
    """
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout_s
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"subprocess exited before the marker:\n{proc.stdout.read().decode()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"no marker within {timeout_s} s")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


SWEEP = {
    "name": "faults",
    "tasks": ["fpb", "tfns"],
    "models": ["smollm2-135m-instruct"],
    "training": {"max_steps": 2},
    "eval": {"tasks": ["fpb"], "max_examples": 5},
}  # base + 2 single + 1 cocktail


def sweep_file(tmp_path: Path, **over) -> Path:
    """A small sweep file (SWEEP with `over` applied) written to tmp_path/sweep.yaml."""
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, **over}), encoding="utf-8")
    return path

