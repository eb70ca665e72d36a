"""`fincocktail eval` / `export lm-eval` from the command line, on real FPB data and the tiny model."""

from __future__ import annotations

import json
from collections import Counter
import sys

import pytest
from typer.testing import CliRunner

from fincocktail.cli import app, main
from fincocktail.tasks.registry import get_task
from fincocktail.tasks.sampling import draw_sample


def test_eval_cli_on_real_fpb(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "fpb-run"
    result = CliRunner().invoke(
        app,
        ["eval", "--model", str(tiny_model_dir), "--tasks", "fpb", "--limit", "12", "--shots", "2", "--batch-size", "5",
         "--data-dir", str(data_dir), "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "fpb" in result.output and "choice" in result.output
    rows = [json.loads(x) for x in (out / "fpb.predictions.jsonl").read_text().splitlines()]
    fpb = get_task("fpb")
    test = draw_sample(fpb.load("test", data_dir), 12, task_id="fpb", split="test", kind=fpb.kind).examples
    assert [r["id"] for r in rows] == [e.id for e in test]  # --limit draws the stratified sample
    assert sorted(Counter(r["gold"] for r in rows).values()) != [12]
    assert all(set(r["choice_logprobs"]) == {"negative", "neutral", "positive"} for r in rows)
    metrics = json.loads((out / "fpb.metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["metrics"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 12)
    card = json.loads((out / "run_card.json").read_text())
    assert card["tasks"]["fpb"]["version"] == get_task("fpb").version and len(card["tasks"]["fpb"]["demo_ids"]) == 2
    assert all(d.startswith("fpb-train-") for d in card["tasks"]["fpb"]["demo_ids"])


def test_export_cli_on_real_fpb(data_dir, tmp_path):
    result = CliRunner().invoke(app, ["export", "lm-eval", str(tmp_path / "x"), "--tasks", "fpb", "--limit", "7", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "x" / "fincocktail_fpb.test.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and rows[0]["choices"] == [" negative", " neutral", " positive"]
    assert (tmp_path / "x" / "fincocktail_fpb.yaml").is_file()


def test_user_error_is_one_line_and_non_zero(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["fincocktail", "eval", "--model", "openai:gpt-4o", "--tasks", "fpb", "--mode", "choice", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "log-probabilities" in err


def test_a_failed_eval_leaves_no_out_folder(tiny_model_dir, tmp_path):
    """A task whose data is missing fails once --out was made and locked: the folder (and the parent
    made for it) goes again instead of lingering with only `.eval.lock`; a folder the user made stays."""
    empty_data = tmp_path / "data"
    empty_data.mkdir()
    out = tmp_path / "new" / "run"
    args = ["eval", "--model", str(tiny_model_dir), "--tasks", "fpb", "--limit", "2",
            "--data-dir", str(empty_data), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code != 0 and "fpb" in str(result.exception), result.exception
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    assert CliRunner().invoke(app, [*args, "--out", str(mine)]).exit_code != 0
    assert mine.is_dir()
