"""MLflow tracking with what `make setup` installs (mlflow-skinny): a folder store that works
without MLFLOW_ALLOW_FILE_STORE, database URIs refused with the fix, a library's message shown
whole, and the training log followed live (loss, lr, curves as step metrics)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="mlflow is optional (pip install 'fincocktail[mlflow]')")

from mlflow.tracking import MlflowClient  # noqa: E402

from fincocktail.errors import FincocktailError  # noqa: E402
from fincocktail.sweep.store import MetricRow, RunRow  # noqa: E402
from fincocktail.sweep.tracking import MlflowTracker  # noqa: E402


def row(run_dir: Path) -> RunRow:
    return RunRow(run_id="single-x", sweep="s", kind="single", label="fa", model="m", train_tasks=("fa",), general=0.0,
                  math=0.0, seed=0, status="done", attempts=1, config={"train": {"lr": 0.01, "warmup_steps": 2}},
                  config_sha256="x", run_dir=str(run_dir))


def test_a_folder_store_works_without_the_opt_in(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset")  # recorded, so the opt-in set below is undone after
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    MlflowTracker(str(tmp_path / "mlruns"), "plain-folder")
    uri = (tmp_path / "mlruns2").as_uri()
    tracker = MlflowTracker(uri, "file-uri")
    assert MlflowClient(tracking_uri=uri).get_experiment(tracker.experiment_id).name == "file-uri"


def test_a_database_uri_without_sqlalchemy_is_refused_with_the_fix(tmp_path, monkeypatch):
    # optuna (the racing search) brings sqlalchemy along; hide it, as a machine with mlflow-skinny alone has none
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(FincocktailError) as info:
        MlflowTracker(f"sqlite:///{tmp_path}/m.db", "x")
    message = str(info.value)
    assert "pip install mlflow" in message and "--mlflow ./mlruns" in message and "\n" not in message


def test_the_librarys_own_message_is_shown_whole(tmp_path, monkeypatch):
    import mlflow.tracking

    fix = "set `MLFLOW_ALLOW_FILE_STORE=true` to opt out of this exception."
    long = "The filesystem tracking backend is in maintenance mode.\n" + "Please migrate. " * 40 + fix

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError(long)

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", refuse)
    with pytest.raises(FincocktailError) as info:
        MlflowTracker(str(tmp_path / "mlruns"), "x")
    assert str(info.value).endswith(fix) and "\n" not in str(info.value) and len(str(info.value)) > 600


def test_the_training_log_is_followed_live(tmp_path):
    """Points appear in MLflow while the run is RUNNING; a torn last line waits for its end;
    the final flush adds the rest once, then metrics with their sample size, artifacts, FINISHED."""
    run_dir = tmp_path / "runs" / "single-x"
    train_dir = run_dir / "train"
    train_dir.mkdir(parents=True)
    log = train_dir / "train_log.jsonl"
    log.write_text(json.dumps({"step": 1, "epoch": 0, "loss": 2.0, "lr": 1e-4}) + "\n" + '{"step": 2, "lo')
    uri = (tmp_path / "mlruns").as_uri()
    tracker = MlflowTracker(uri, "live", poll_s=0)  # polled by hand: no timing in the test
    tracker.start(row(run_dir), run_dir)
    tracker.poll()
    client = MlflowClient(tracking_uri=uri)
    (live,) = client.search_runs([tracker.experiment_id])
    assert live.info.status == "RUNNING"
    assert [(m.step, m.value) for m in client.get_metric_history(live.info.run_id, "train/loss")] == [(1, 2.0)]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('ss": 1.5, "lr": 2e-4}\n')
        handle.write(json.dumps({"step": 2, "curve": {"fa": 0.5}, "curve_metric": {"fa": "gold_prob"}}) + "\n")
    preds = run_dir / "eval" / "test" / "fa" / "fa.predictions.jsonl"
    preds.parent.mkdir(parents=True)
    preds.write_text('{"id": "1"}\n')
    (train_dir / "adapter").mkdir()
    (train_dir / "adapter" / "adapter_config.json").write_text("{}")
    metric = MetricRow("single-x", "fa", "test", "accuracy", 0.75, 0.5, 0.9, n=4, headline=True, predictions=str(preds))
    tracker.finish(row(run_dir), [metric])
    tracker.close()
    (done,) = client.search_runs([tracker.experiment_id])
    rid = done.info.run_id
    assert done.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "train/loss")] == [(1, 2.0), (2, 1.5)]
    assert [m.value for m in client.get_metric_history(rid, "train/lr")] == [1e-4, 2e-4]
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "curve/fa/gold_prob")] == [(2, 0.5)]
    assert done.data.metrics["test/fa/accuracy"] == 0.75 and done.data.metrics["test/fa/accuracy_n"] == 4
    assert done.data.params["train.warmup_steps"] == "2"
    artifacts = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "eval/test/fa")}
    assert "eval/test/fa/fa.predictions.jsonl" in artifacts and "adapter" in artifacts
    assert done.data.tags["fincocktail.adapter_dir"] == str(train_dir / "adapter")
    MlflowTracker(uri, "live", poll_s=0).log_run(row(run_dir), [metric])  # a rerun logs nothing twice
    assert len(client.search_runs([tracker.experiment_id])) == 1


def test_a_tracking_failure_is_one_warning_not_the_end_of_the_sweep(tmp_path, capsys):
    tracker = MlflowTracker(str(tmp_path / "mlruns"), "blip", poll_s=0)

    def down(*_: object) -> None:
        raise ConnectionError("tracking server\nunreachable")

    tracker.safely("single-x", down, None)
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: --mlflow: could not log single-x: tracking server unreachable") and "\n" not in err
