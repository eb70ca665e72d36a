"""`fincocktail report` on a real results store (filled by the sweep's simulate runner)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fincocktail.cli import app
from fincocktail.sweep.store import ResultsStore
from fincocktail.report.records import from_store

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_report_from_store(tmp_path):
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", "run", str(REPO / "configs/sweeps/quick.yaml"), "--simulate", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    store = ResultsStore.in_dir(out, create=False)
    data = from_store(store)
    res = runner.invoke(app, ["report", "--sweep", str(out), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    # Every finished run's fpb test score appears in the transfer data; the main table names each task.
    for task in {m.task for m in data.metrics}:
        assert f"| {task} |" in md
    base = next(r for r in data.runs if r.kind == "base")
    base_fpb = next(m for m in data.metrics if m.run_id == base.run_id and m.task == "fpb" and m.split == "test")
    assert f"{base_fpb.value:.3f}" in res.output  # the terminal table shows the measured base score
    assert (tmp_path / "rep" / "report.html").is_file()


def test_report_without_results_is_one_line_error(tmp_path):
    res = runner.invoke(app, ["report", "--sweep", str(tmp_path / "nothing")])
    assert res.exit_code != 0
    assert "no results folder" in str(res.exception)
