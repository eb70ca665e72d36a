"""Running sweeps with the simulated run function: skipping, resuming after kill -9, workers, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fincocktail.sweep.execute import RESULT_FILE
from fincocktail.sweep.executors import LocalExecutor, cpu_count, run_sweep
from fincocktail.sweep.spec import load_plan
from fincocktail.sweep.store import ResultsStore, StoreNotReady

SWEEP = {
    "name": "sim",
    "tasks": ["fpb", "fiqa_sa", "tfns"],
    "models": ["smollm2-135m-instruct"],
    "general": {"task": "general", "fractions": [0, 0.25]},
    "design": {"boosters_on": ["cocktail"]},
    "training": {"max_steps": 2},
    "eval": {"tasks": ["fpb", "tfns"], "max_examples": 20},
}  # base + 3 single + 2 incremental x 2 general = 8 runs


def write(tmp_path: Path, data: dict = SWEEP) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fincocktail", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )


def test_rerun_skips_finished_runs_and_retries_failed(tmp_path):
    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    first = run_sweep(plan, out, runner="simulate", progress=False)
    assert len(first.executed) == len(plan.runs) == 8 and not first.failed
    store = ResultsStore.in_dir(out)
    assert store.counts()["done"] == 8
    assert all((out / "runs" / r.run_id / RESULT_FILE).is_file() for r in plan.runs)
    first_metrics = {(m.run_id, m.task, m.split): m.value for m in store.metrics()}
    assert len(first_metrics) == 8 * (2 + 3)  # test: fpb, tfns; validation: the three tasks

    second = run_sweep(plan, out, runner="simulate", progress=False)
    assert second.executed == [] and len(second.skipped) == 8
    assert all(r.attempts == 1 for r in store.runs())
    assert {(m.run_id, m.task, m.split): m.value for m in store.metrics()} == first_metrics

    # a run whose result.json is on disk but not in the store (killed between the two) is recorded, not redone
    victim = plan.runs[2].run_id
    with store._write() as conn:
        conn.execute("UPDATE runs SET status = 'planned' WHERE run_id = ?", (victim,))
        conn.execute("DELETE FROM metrics WHERE run_id = ?", (victim,))
    third = run_sweep(plan, out, runner="simulate", progress=False)
    assert third.recovered == [victim] and third.executed == []
    assert store.run(victim).status == "done" and store.run(victim).attempts == 1
    assert len(store.metrics(victim)) == 5


def failing_run(run, ctx):
    """A run function that fails for single-task runs (imported by name through --runner)."""
    from fincocktail.sweep.execute import simulated_run

    if run.kind == "single" and not os.environ.get("SWEEP_TEST_FIXED"):
        raise RuntimeError(f"no luck for {run.label}\nsecond line")
    return simulated_run(run, ctx)


def test_failed_runs_are_recorded_and_retried(tmp_path, monkeypatch):
    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    summary = run_sweep(plan, out, runner=failing_run, progress=False)
    assert len(summary.failed) == 3 and len(summary.executed) == 5
    store = ResultsStore.in_dir(out)
    failed = store.runs(status="failed")
    assert {r.label for r in failed} == {"fpb", "fiqa_sa", "tfns"}
    assert failed[0].error.startswith("RuntimeError: no luck for") and "\n" not in failed[0].error
    assert (out / "runs" / failed[0].run_id / "error.log").read_text().count("Traceback") == 1
    monkeypatch.setenv("SWEEP_TEST_FIXED", "1")
    again = run_sweep(plan, out, runner=failing_run, progress=False)
    assert sorted(again.executed) == sorted(r.run_id for r in failed)
    assert all(store.run(r.run_id).attempts == 2 for r in failed)
    assert store.counts()["done"] == 8


def barrier_run(run, ctx):
    """Simulated run that first waits (up to 60 s) until two worker processes have started a run."""
    from fincocktail.sweep.execute import simulated_run

    barrier = Path(os.environ["SWEEP_TEST_BARRIER"])
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.02)
    return simulated_run(run, ctx)


def test_local_workers_run_in_parallel_processes(tmp_path, monkeypatch):
    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    (tmp_path / "barrier").mkdir()
    monkeypatch.setenv("SWEEP_TEST_BARRIER", str(tmp_path / "barrier"))
    summary = run_sweep(plan, out, executor=LocalExecutor(workers=2), runner=barrier_run, progress=False)
    assert len(summary.executed) == 8
    store = ResultsStore.in_dir(out)
    pids = {r.card["pid"] for r in store.runs()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert LocalExecutor(workers=2).threads == max(1, cpu_count() // 2)
    serial = run_sweep(plan, tmp_path / "serial", runner="simulate", progress=False)
    assert len(serial.executed) == 8
    values = lambda d: {(m.run_id, m.task, m.split): m.value for m in ResultsStore.in_dir(d).metrics()}
    assert values(out) == values(tmp_path / "serial")


def test_kill_9_mid_sweep_then_rerun_redoes_nothing_finished(tmp_path):
    sweep = write(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fincocktail", "sweep", "run", str(sweep), "--simulate", "--out", str(out), "-q"],
        env={**os.environ, "FINCOCKTAIL_SIMULATE_SECONDS": "0.6"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    store_path = out / "results.sqlite"
    deadline = time.time() + 90
    done_before: list[str] = []
    try:
        while time.time() < deadline:
            if store_path.is_file():
                store = ResultsStore(store_path, create=False)
                try:
                    done_before = [r.run_id for r in store.runs(status="done")]
                    running = store.runs(status="running")
                except StoreNotReady:  # the file exists, its tables not yet
                    time.sleep(0.05)
                    continue
                # kill once a few runs are done and the next one is part-way through its steps
                if len(done_before) >= 3 and running:
                    ckpt = out / "runs" / running[0].run_id / "sim_checkpoint.json"
                    if ckpt.is_file() and json.loads(ckpt.read_text())["step"] >= 3:
                        break
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()}"
            time.sleep(0.05)
        else:
            raise AssertionError("the sweep did not get far enough in time")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = ResultsStore(store_path)
    done_before = [r.run_id for r in store.runs(status="done")]
    (interrupted,) = store.runs(status="running")
    assert len(done_before) >= 3
    from fincocktail.sweep.plan import status_json

    status = status_json(store)
    assert status["active"] is False and status["counts"]["running"] == 1  # a dead sweep's leftover, shown as such

    res = cli("sweep", "run", str(sweep), "--simulate", "--out", str(out), "-q", env={"FINCOCKTAIL_SIMULATE_SECONDS": "0"})
    assert res.returncode == 0, res.stderr
    assert f"{8 - len(done_before)} run(s) executed, {len(done_before)} already done" in " ".join(res.stdout.split())
    runs = {r.run_id: r for r in store.runs()}
    assert all(r.status == "done" for r in runs.values())
    for run_id in done_before:  # finished before the kill: executed exactly once
        assert runs[run_id].attempts == 1 and [a.status for a in store.attempts(run_id)] == ["done"]
    again = runs[interrupted.run_id]
    assert again.attempts == 2
    assert [a.status for a in store.attempts(interrupted.run_id)] == ["interrupted", "done"]
    assert again.card["resumed_from_step"] >= 3  # continued from its checkpoint, not from scratch
    others = [r for r in runs.values() if r.run_id not in done_before and r.run_id != interrupted.run_id]
    assert all(r.attempts == 1 for r in others)


def _app():
    """The CLI with `results` registered (fincocktail.cli wires it in; registering here keeps the test independent)."""
    import typer

    from fincocktail.cli import results as results_cmd
    from fincocktail.cli import sweep as sweep_cmd

    app = typer.Typer()
    app.add_typer(sweep_cmd.app, name="sweep")
    results_cmd.register(app)
    return app


def test_status_and_results_commands(tmp_path):
    from typer.testing import CliRunner

    sweep = write(tmp_path)
    out = tmp_path / "out"
    plan = load_plan(sweep)
    run_sweep(plan, out, runner="simulate", progress=False, only=[plan.runs[0].run_id, plan.runs[1].run_id])
    runner, app = CliRunner(), _app()

    res = runner.invoke(app, ["sweep", "status", str(sweep), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    status = json.loads(res.stdout)
    assert status["counts"] == {"planned": 6, "running": 0, "done": 2, "failed": 0}
    res = runner.invoke(app, ["sweep", "status", "--out", str(out)])
    assert res.exit_code == 0 and "2 done, 0 running, 6 planned, 0 failed" in " ".join(res.stdout.split())

    store = ResultsStore.in_dir(out)
    expected = {(m.run_id, m.task): m.value for m in store.metrics(split="test", headline_only=True)}
    assert len(expected) == 4
    res = runner.invoke(app, ["results", "--out", str(out), "--csv"])
    assert res.exit_code == 0, res.output
    parsed = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {(r["run_id"], r["task"]): float(r["value"]) for r in parsed} == expected
    assert {r["kind"] for r in parsed} == {"base", "single"}
    res = runner.invoke(app, ["results", "--out", str(out), "--json"])
    assert {(r["run_id"], r["task"]): r["value"] for r in json.loads(res.stdout)} == expected
    res = runner.invoke(app, ["results", "--out", str(out), "--split", "all", "--json"])
    assert {r["split"] for r in json.loads(res.stdout)} == {"test", "validation"}
    res = runner.invoke(app, ["results", "--out", str(out)])
    assert res.exit_code == 0 and "fpb" in res.stdout and "zero-shot" in res.stdout
    res = runner.invoke(app, ["results", "--out", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "no results store here" in str(res.exception)


def test_mlflow_logs_each_finished_run_once(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (pip install 'fincocktail[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file: store keeps the test free of sqlalchemy

    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    uri = (tmp_path / "mlruns").as_uri()
    only = [r.run_id for r in plan.runs[:3]]
    run_sweep(plan, out, runner="simulate", progress=False, only=only, mlflow_uri=uri)
    run_sweep(plan, out, runner="simulate", progress=False, only=only, mlflow_uri=uri)  # rerun: nothing logged twice
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sim")
    logged = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["fincocktail.run_id"] for r in logged) == sorted(only)
    store = ResultsStore.in_dir(out)
    for r in logged:
        rid = r.data.tags["fincocktail.run_id"]
        (m,) = store.metrics(rid, split="test", task="fpb")
        assert r.data.metrics["test/fpb/accuracy"] == m.value
        assert r.data.metrics["test/fpb/accuracy_ci_low"] == m.ci_low
        assert r.data.params["model"] == "smollm2-135m-instruct"


def test_one_sweep_per_output_folder(tmp_path):
    from fincocktail.errors import FincocktailError
    from fincocktail.sweep.executors import _lock_out_dir, sweep_active

    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    held = _lock_out_dir(out)
    try:
        assert sweep_active(out)
        with pytest.raises(FincocktailError, match=f"a sweep is already running there \\(pid {os.getpid()}\\)"):
            run_sweep(plan, out, runner="simulate", progress=False)
    finally:
        held.close()
    assert not sweep_active(out)
    assert len(run_sweep(plan, out, runner="simulate", progress=False).executed) == 8


def dying_run(run, ctx):
    """Kills its worker process outright for the fpb single-task run (like the OOM killer would)."""
    from fincocktail.sweep.execute import simulated_run

    if run.label == "fpb":
        os._exit(3)
    return simulated_run(run, ctx)


def test_a_dead_worker_fails_runs_not_the_sweep(tmp_path):
    plan = load_plan(write(tmp_path))
    out = tmp_path / "out"
    summary = run_sweep(plan, out, executor=LocalExecutor(workers=2), runner=dying_run, progress=False)
    fpb = next(r for r in plan.runs if r.label == "fpb")
    assert fpb.run_id in summary.failed
    assert len(summary.executed) + len(summary.failed) == 8
    store = ResultsStore.in_dir(out)
    assert {r.status for r in store.runs()} <= {"done", "failed"}
    assert store.run(fpb.run_id).status == "failed"
    # after the cause is gone, a rerun finishes exactly the runs that did not: by running them,
    # or, for a run whose result.json reached disk just as the pool broke, by recording it
    again = run_sweep(plan, out, runner="simulate", progress=False)
    assert sorted(list(again.executed) + list(again.recovered)) == sorted(summary.failed)
    assert store.counts()["done"] == 8


def test_matched_steps_runs_reach_the_report_records(tmp_path):
    """design.matched_steps: the report's records carry `matched_to` (the cocktail's label) and a
    cocktail name that never reads as the one-epoch single's."""
    from fincocktail.report.records import from_store

    plan = load_plan(write(tmp_path, {**SWEEP, "design": {**SWEEP.get("design", {}), "matched_steps": True}}))
    out = tmp_path / "out"
    run_sweep(plan, out, runner="simulate", progress=False)
    data = from_store(ResultsStore.in_dir(out))
    matched = [r for r in data.runs if r.kind == "matched"]
    assert matched and all(r.steps_matched and r.matched_to for r in matched)
    assert all(r.cocktail_name.endswith(" (matched steps)") for r in matched)
    assert not any(r.steps_matched for r in data.runs if r.kind != "matched")
    singles = {r.cocktail_name for r in data.runs if r.kind == "single"}
    assert singles and not singles & {r.cocktail_name for r in matched}


def test_reproduce_help_lists_every_preset(monkeypatch):
    """Every preset `reproduce` accepts is named in its --help, and each has its sweep file."""
    from typer.testing import CliRunner

    from fincocktail.cli import app
    from fincocktail.cli.reproduce import PRESETS, preset_file

    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["reproduce", "--help"])
    assert result.exit_code == 0, result.output
    for name in PRESETS:
        assert f"{name}:" in result.output
        assert preset_file(name).is_file()


class _FakeRay:
    """Just enough of `ray` for RayExecutor: tasks finish in submission order, and the most
    submitted-but-unfinished at any time is recorded."""

    def __init__(self, cpus: float) -> None:
        self.cpus, self.in_flight, self.most = cpus, [], 0

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict:
        return {"CPU": self.cpus}

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **_: object):
                return self

            def remote(self, run: dict, *args: object, **kwargs: object) -> str:
                fake.in_flight.append(run["run_id"])
                fake.most = max(fake.most, len(fake.in_flight))
                return run["run_id"]

        return Remote()

    def wait(self, refs: list, num_returns: int = 1):
        first = self.in_flight.pop(0)
        return [first], [r for r in refs if r != first]

    def get(self, ref: str):
        from fincocktail.sweep.execute import RunResult

        return RunResult.failed(ref, "fake")


@pytest.mark.parametrize(("workers", "expected"), [(1, 1), (2, 2), (None, 4)])
def test_ray_workers_mean_runs_at_once_as_locally(tmp_path, monkeypatch, workers, expected):
    """--workers 1 on a 4-CPU Ray runs one run at a time, as the local executor does."""
    from fincocktail.sweep.executors import make_executor

    fake = _FakeRay(cpus=4)
    monkeypatch.setitem(sys.modules, "ray", fake)
    runs = load_plan(write(tmp_path)).runs
    for run in runs:
        run.resources.num_cpus = 1
    executor = make_executor("ray", workers=workers)
    ended: list[str] = []
    executor.execute(runs, tmp_path / "out", None, "simulate", lambda kind, run, result: ended.append(run.run_id) if kind == "end" else None)
    assert fake.most == expected and executor.capacity() == expected
    assert sorted(ended) == sorted(r.run_id for r in runs)
