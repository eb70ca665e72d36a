"""`fincocktail tasks list / show / sample` through the typer app, including a user task end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fincocktail.tasks import prompts
from fincocktail.cli import app, main
from fincocktail.errors import ConfigError
from fincocktail.tasks.custom import load_user_tasks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
runner = CliRunner()


def _json(result) -> object:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_list_json_shows_builtins_and_the_user_task(data_dir: Path) -> None:
    rows = _json(runner.invoke(app, ["tasks", "list", "--json", "--tasks-dir", str(EXAMPLES), "--data-dir", str(data_dir)]))
    by_id = {r["id"]: r for r in rows}
    assert by_id["fpb"]["sizes"] == {"train": 3268, "validation": 361, "test": 1212}
    assert by_id["fpb"]["version"].startswith("fpb@fingpt") and by_id["fpb"]["metric"] == "accuracy"
    assert by_id["cfa"]["sizes"] == {"test": 1032}
    assert by_id["headline"]["metric"] == "avg_f1"
    user = by_id["earnings_tone"]
    assert user["user_task"].endswith("earnings_tone.yaml")
    assert sum(user["sizes"].values()) == 20 and user["error"] is None


def test_list_reads_the_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCOCKTAIL_TASKS", str(EXAMPLES))
    result = runner.invoke(app, ["tasks", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "earnings_tone" in result.stdout and "(user)" in result.stdout


def test_list_shows_missing_data_instead_of_crashing(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    rows = _json(runner.invoke(app, ["tasks", "list", "--json", "--data-dir", str(empty), "--tasks-dir", str(EXAMPLES)]))
    by_id = {r["id"]: r for r in rows}
    assert by_id["fpb"]["sizes"] is None and "Sentences_50Agree.txt not found" in by_id["fpb"]["error"]
    assert by_id["earnings_tone"]["sizes"] is not None  # user data lives next to its YAML
    table = runner.invoke(app, ["tasks", "list", "--data-dir", str(empty)], env={"COLUMNS": "160"})
    assert table.exit_code == 0 and "missing" in table.stdout


def test_show_json(data_dir: Path) -> None:
    info = _json(runner.invoke(app, ["tasks", "show", "fiqa_sa", "--json", "--data-dir", str(data_dir)]))
    assert info["labels"] == ["negative", "neutral", "positive"]
    assert info["sizes"]["test"] == 235 and "fiqa" in info["source"]
    text = runner.invoke(app, ["tasks", "show", "fpb", "--data-dir", str(data_dir)], env={"COLUMNS": "160"})
    assert text.exit_code == 0 and "non-commercial" in text.stdout and "test 1212" in text.stdout


def test_sample_user_task_matches_render() -> None:
    rows = _json(runner.invoke(app, ["tasks", "sample", "earnings_tone", "--tasks-dir", str(EXAMPLES), "--split", "train", "-n", "2", "--json"]))
    task = load_user_tasks(EXAMPLES)["earnings_tone"]
    expected = [prompts.render(task, ex) for ex in task.load("train", None)[:2]]
    assert [(r["prompt"], r["target"]) for r in rows] == [(p.prompt, p.target) for p in expected]
    text = runner.invoke(app, ["tasks", "sample", "earnings_tone", "--tasks-dir", str(EXAMPLES), "-n", "1"])
    assert text.exit_code == 0 and "Instruction: What is the tone" in text.stdout


def test_sample_chat_style_uses_the_model_template(data_dir: Path, tiny_model_dir: Path) -> None:
    rows = _json(
        runner.invoke(
            app,
            ["tasks", "sample", "fpb", "--data-dir", str(data_dir), "-n", "1", "--style", "chat", "--model", str(tiny_model_dir), "--json"],
        )
    )
    assert rows[0]["prompt"].startswith("<|im_start|>user\nWhat is the sentiment of this news?")
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n") and rows[0]["target"] == "neutral"


def test_sample_errors_are_user_errors(data_dir: Path) -> None:
    result = runner.invoke(app, ["tasks", "sample", "fpb", "--data-dir", str(data_dir), "--style", "chat"])
    assert isinstance(result.exception, ConfigError) and "--model" in str(result.exception)
    result = runner.invoke(app, ["tasks", "sample", "cfa", "--data-dir", str(data_dir), "--split", "train"])
    assert isinstance(result.exception, ConfigError) and "no split 'train'" in str(result.exception)


def test_main_prints_one_line_and_exits_non_zero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fincocktail", "tasks", "show", "no_such_task", "--tasks-dir", str(EXAMPLES)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == ConfigError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown task 'no_such_task'") and "earnings_tone" in err
