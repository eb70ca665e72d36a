"""Faults in what sweeps, evaluations and tasks read and write: a damaged results store in every
command that opens it, concurrent writers, malformed data rows, and the small traps of issue 14
(duplicate tasks, zero caps, unknown splits, estimates, shadowed task ids, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from eval_fakes import FakeSentiment, resolver
from fault_helpers import assert_one_line_error, cli, sweep_file

from fincocktail.errors import ConfigError, DataError, FincocktailError
from fincocktail.sweep.executors import run_sweep
from fincocktail.sweep.spec import load_plan
from fincocktail.sweep.store import ResultsStore

@pytest.fixture
def finished_sweep(tmp_path) -> tuple[Path, Path]:
    sweep = sweep_file(tmp_path)
    out = tmp_path / "out"
    run_sweep(load_plan(sweep), out, runner="simulate", progress=False)
    return sweep, out


def _damage(store: Path, how: str) -> None:
    data = store.read_bytes()
    for side in store.parent.glob(store.name + "-*"):  # -wal / -shm of a closed store
        side.unlink()
    if how == "truncated":
        store.write_bytes(data[: len(data) // 3])
    else:
        store.write_bytes(b"this is not a database, it is what a bad copy left " * 200)


# -- 7. a damaged results store ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "garbage"])
@pytest.mark.parametrize("command", ["sweep status", "results", "report", "sweep run"])
def test_a_damaged_results_store_is_a_one_line_error_in_every_command(finished_sweep, capsys, monkeypatch, how, command):
    sweep, out = finished_sweep
    store = out / "results.sqlite"
    _damage(store, how)
    before = store.read_bytes()
    args = {
        "sweep status": ["sweep", "status", "--out", str(out)],
        "results": ["results", "--out", str(out)],
        "report": ["report", "--sweep", str(out), "--out", str(out / "report")],
        "sweep run": ["sweep", "run", str(sweep), "--out", str(out), "--simulate", "--quiet"],
    }[command]
    res = cli(capsys, monkeypatch, *args)
    assert_one_line_error(res, str(store), "the results store is damaged", "move it away")
    assert store.read_bytes() == before  # nothing was written into it


def test_a_store_a_sweep_is_still_creating_is_not_called_damaged(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"")  # what a reader sees between sqlite's create and the schema
    from fincocktail.plumbing.fileio import FolderLock
    from fincocktail.sweep.executors import SWEEP_LOCK

    with FolderLock(out, SWEEP_LOCK, "a sweep"):  # ... while the sweep creating it holds the folder
        res = cli(capsys, monkeypatch, "sweep", "status", "--out", str(out))
    assert_one_line_error(res, "results.sqlite: the results store has no tables yet", "retry in a moment")


def test_a_store_moved_away_is_rebuilt_from_the_run_folders_without_rerunning(finished_sweep):
    sweep, out = finished_sweep
    expected = {(m.run_id, m.task, m.split): m.value for m in ResultsStore.in_dir(out).metrics()}
    _damage(out / "results.sqlite", "garbage")
    (out / "results.sqlite").rename(out / "results.sqlite.broken")  # the fix the error names
    summary = run_sweep(load_plan(sweep), out, runner="simulate", progress=False)
    assert not summary.executed and len(summary.recovered) == 4  # recorded from result.json, nothing rerun
    assert {(m.run_id, m.task, m.split): m.value for m in ResultsStore.in_dir(out).metrics()} == expected


def test_a_torn_result_file_means_the_run_is_redone_not_trusted(finished_sweep):
    sweep, out = finished_sweep
    victim = next((out / "runs").iterdir())
    (victim / "result.json").write_text('{"metrics": [{"run_id"', encoding="utf-8")
    (out / "results.sqlite").unlink()
    summary = run_sweep(load_plan(sweep), out, runner="simulate", progress=False)
    assert summary.executed == [victim.name] and len(summary.recovered) == 3
    assert json.loads((victim / "result.json").read_text())["metrics"]


# -- 8. concurrent writers -----------------------------------------------------------------------


def test_a_second_evaluation_into_the_same_folder_is_refused(tmp_path):
    from fincocktail.evaluation.runner import EVAL_LOCK, EvalConfig, run_eval
    from fincocktail.plumbing.fileio import FolderLock

    out = tmp_path / "eval"
    config = EvalConfig(model="m", tasks=["fsent"], out=out, data_dir=tmp_path)
    with FolderLock(out, EVAL_LOCK, "an evaluation"):
        with pytest.raises(FincocktailError, match=rf"{out}: an evaluation is already running there \(pid \d+\)"):
            run_eval(config, resolve_task=resolver(FakeSentiment()), loaded=object())


def test_a_second_sweep_into_the_same_folder_is_refused(finished_sweep):
    from fincocktail.plumbing.fileio import FolderLock
    from fincocktail.sweep.executors import SWEEP_LOCK

    sweep, out = finished_sweep
    with FolderLock(out, SWEEP_LOCK, "a sweep"):
        with pytest.raises(FincocktailError, match="a sweep is already running there"):
            run_sweep(load_plan(sweep), out, runner="simulate", progress=False)


# -- 8. data files -------------------------------------------------------------------------------


def test_a_csv_row_with_extra_columns_is_an_error_naming_the_line(tmp_path):
    from fincocktail.tasks.io import read_csv

    path = tmp_path / "data.csv"
    path.write_text("text,label\nprofit rose,positive\nsales fell, sharply,negative\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:3: 3 values but the header has 2 columns; quote texts that contain ','"):
        list(read_csv(path))


def _user_task(tmp_path: Path, data_name: str, data_text: str, **over) -> Path:
    """The shipped example task, copied into a tasks folder with its data file replaced."""
    example = Path(__file__).resolve().parents[1] / "examples" / "tasks"
    spec = yaml.safe_load((example / "earnings_tone.yaml").read_text(encoding="utf-8"))
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / data_name).write_text(data_text, encoding="utf-8")
    (tasks / f"{over.get('id', 'earnings_tone')}.yaml").write_text(yaml.safe_dump({**spec, "data": data_name, **over}), encoding="utf-8")
    return tasks


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_truncated_data_file_is_an_error_naming_the_line(tmp_path, capsys, monkeypatch, kind):
    rows = [("Revenue rose strongly.", "positive"), ("Costs were flat.", "neutral"), ("We missed, badly, on margin.", "negative")]
    if kind == "jsonl":
        text = "".join(json.dumps({"sentence": s, "tone": t}) + "\n" for s, t in rows)
        cut, where = text[: text.rindex("badly")], ":3: invalid JSON"
    else:
        text = "sentence,tone\n" + "".join(f'"{s}",{t}\n' for s, t in rows)
        cut, where = text[: text.rindex("badly")], ":4: missing field 'tone'"
    tasks = _user_task(tmp_path, f"data.{kind}", cut)
    res = cli(capsys, monkeypatch, "tasks", "sample", "earnings_tone", "--tasks-dir", str(tasks), "--split", "test", "-n", "1")
    assert_one_line_error(res, f"data.{kind}{where}")


def test_a_user_task_reusing_a_built_in_id_is_an_error_everywhere(tmp_path, capsys, monkeypatch):
    example = Path(__file__).resolve().parents[1] / "examples" / "tasks"
    tasks = _user_task(tmp_path, "earnings_tone.jsonl", (example / "earnings_tone.jsonl").read_text(encoding="utf-8"), id="fpb")
    res = cli(capsys, monkeypatch, "tasks", "sample", "fpb", "--tasks-dir", str(tasks), "-n", "1")
    assert_one_line_error(res, "fpb.yaml", "'fpb' is a built-in task; choose another id", code=2)


# -- 8. plans, results and status that mislead ----------------------------------------------------


def test_a_zero_train_cap_fails_at_plan_time(tmp_path, capsys, monkeypatch):
    res = cli(capsys, monkeypatch, "sweep", "plan", str(sweep_file(tmp_path, train_caps={"fpb": 0})))
    assert_one_line_error(res, "train_caps", "fpb: must be >= 1", code=2)


def test_results_for_an_unknown_split_is_an_error(finished_sweep, capsys, monkeypatch):
    _, out = finished_sweep
    res = cli(capsys, monkeypatch, "results", "--out", str(out), "--split", "nosuch")
    assert_one_line_error(res, "--split 'nosuch'", "expected one of", "test", code=2)
    assert cli(capsys, monkeypatch, "results", "--out", str(out), "--split", "validation").code == 0


def test_status_counts_the_work_of_runs_not_yet_registered(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    run_sweep(load_plan(sweep_file(tmp_path, tasks=["fpb"])), out, runner="simulate", progress=False)
    grown = sweep_file(tmp_path, tasks=["fpb", "tfns"])  # the sweep file gained a task since
    plan = load_plan(grown)
    registered = {r.run_id for r in ResultsStore.in_dir(out).runs()}
    new = [r for r in plan.runs if r.run_id not in registered]
    assert new
    res = cli(capsys, monkeypatch, "sweep", "status", str(grown), "--out", str(out), "--json")
    assert res.code == 0, res.err
    status = json.loads(res.out)
    assert status["counts"]["planned"] == len(new)
    assert status["est_seconds_left"] == pytest.approx(sum(r.est_seconds for r in new)) and status["est_seconds_left"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--model", "m", "--tasks", "fpb", "--dtype", "fp8"],
        ["eval", "--model", "m", "--tasks", "fpb,,fpb"],
        ["results", "--out", "/nonexistent/sweep"],
        ["report", "--sweep", "/nonexistent/sweep"],
        ["sweep", "status"],
        ["train", "/nonexistent/run.yaml"],
        ["train", "run.yaml", "--out", "held"],
        ["eval", "--model", "m", "--tasks", "fpb", "--out", "held", "--data-dir", "DATA"],
    ],
    ids=["eval-dtype", "eval-duplicate-task", "results-out", "report-sweep", "status-no-args", "train-missing-config",
         "train-out-holds-a-run", "eval-out-holds-an-eval"],
)
def test_config_errors_exit_2_in_every_command(args, capsys, monkeypatch, tmp_path, tiny_model_dir, data_dir):
    monkeypatch.chdir(tmp_path)
    args = [str(data_dir) if a == "DATA" else a for a in args]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"model": str(tiny_model_dir), "cocktail": {"ingredients": ["fpb"]}}))
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "run_card.json").write_text("{}")  # a folder that already holds a run / an evaluation
    res = cli(capsys, monkeypatch, *args)
    assert_one_line_error(res, code=2)


def test_eval_duplicate_task_names_it(tmp_path):
    with pytest.raises(ValueError, match="fpb listed more than once"):
        from fincocktail.evaluation.runner import EvalConfig

        EvalConfig(model="m", tasks=["fpb", "fpb"])
    assert isinstance(ConfigError("x"), FincocktailError)
