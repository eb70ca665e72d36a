"""Sweeps on GPUs, tested on a CPU: the device stays out of run ids, one worker per visible GPU
(each with its own CUDA_VISIBLE_DEVICES), Ray's GPU requests, and GPU-hours in the plan.

`torch.cuda` is faked (this machine has no GPU); the worker assignment is a pure function, and
one test checks that spawned workers really get their own CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from eval_fakes import lively_model_dir  # noqa: F401 (fixture)
from fincocktail.errors import ConfigError
from fincocktail.sweep.executors import LocalExecutor, WorkerSlot, make_executor, ray_gpus, run_sweep, worker_slots
from fincocktail.sweep.plan import plan_json, plan_table
from fincocktail.sweep.spec import load_plan
from fincocktail.sweep.store import ResultsStore

SWEEP = {
    "name": "g",
    "tasks": ["fpb", "fiqa_sa"],
    "models": ["smollm2-135m-instruct"],
    "design": {"incremental": False, "all_tasks": False},
    "training": {"max_steps": 4, "batch_size": 2},
    "eval": {"tasks": ["fpb"], "selection_split": None, "max_examples": 20},
}


def plan_of(tmp_path: Path, name: str = "s.yaml", **changes):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SWEEP, **changes}), encoding="utf-8")
    return load_plan(path)


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# -- run ids ----------------------------------------------------------------------------------


def test_the_run_id_is_the_same_whatever_the_device(tmp_path):
    ids = {}
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        plan = plan_of(tmp_path, f"{device.replace(':', '_')}.yaml", resources={"device": device, "num_gpus": 1 if "cuda" in device else 0})
        ids[device] = [(r.run_id, r.config_sha256) for r in plan.runs]
        assert all(r.resources.device == device for r in plan.runs)
    assert ids["cpu"] == ids["cuda"] == ids["auto"] == ids["cuda:1"]
    assert len(ids["cpu"]) == 3  # zero-shot + two single-task runs


def test_training_device_in_a_sweep_file_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.device: the device is not part of a run.*resources\.device"):
        plan_of(tmp_path, training={"max_steps": 4, "device": "cuda"})
    with pytest.raises(ConfigError, match=r"models\.0\.training\.device"):
        plan_of(tmp_path, models=[{"name": "smollm2-135m-instruct", "training": {"device": "cpu"}}])
    assert plan_of(tmp_path, training={"max_steps": 4, "batch_size": 2, "device": "auto"}).runs  # the default, as before


def test_an_unknown_sweep_device_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"resources\.device.*unknown device"):
        plan_of(tmp_path, resources={"device": "gpu0"})


def test_the_execution_device_reaches_training_and_evaluation_without_changing_the_run(tmp_path, monkeypatch):
    """`execute_run(device=...)` hands the device to the run function; the run's spec (and id) is untouched."""
    from fincocktail.sweep.execute import execute_run, simulated_run

    seen = {}

    def recording(run, ctx):
        seen[run.run_id] = ctx.device
        return simulated_run(run, ctx)

    monkeypatch.setattr("fincocktail.sweep.execute.resolve_runner", lambda runner: recording)
    run = plan_of(tmp_path).runs[0]
    result = execute_run(run.model_dump(mode="json"), str(tmp_path / "out"), runner="x", device="cuda:0", use_store=False)
    assert result.status == "done" and seen == {run.run_id: "cuda:0"}


# -- one worker per GPU -----------------------------------------------------------------------


def test_worker_slots_on_cpus():
    assert worker_slots("auto", 0) == [WorkerSlot("cpu")]
    assert worker_slots("cpu", 4, workers=2) == [WorkerSlot("cpu"), WorkerSlot("cpu")]  # cpu ignores the GPUs
    assert worker_slots("mps", 0) == [WorkerSlot("mps")]


def test_one_worker_per_visible_gpu():
    slots = worker_slots("auto", 4, env={})
    assert [s.visible for s in slots] == ["0", "1", "2", "3"] and {s.device for s in slots} == {"cuda"}
    assert worker_slots("cuda", 2, env={}) == [WorkerSlot("cuda", "0", 0), WorkerSlot("cuda", "1", 1)]


def test_workers_keep_the_users_gpu_selection():
    """With CUDA_VISIBLE_DEVICES=4,6 torch numbers them 0 and 1; the workers must get 4 and 6."""
    slots = worker_slots("auto", 2, env={"CUDA_VISIBLE_DEVICES": "4,6"})
    assert [(s.visible, s.index) for s in slots] == [("4", 0), ("6", 1)]


def test_one_named_gpu_fractions_and_explicit_workers():
    one = worker_slots("cuda:2", 4, env={})
    assert one == [WorkerSlot("cuda", "2", 2)] and one[0].in_process_device == "cuda:2"
    halves = worker_slots("auto", 2, gpu_share=0.5, env={})
    assert [s.visible for s in halves] == ["0", "1", "0", "1"]  # runs asking for half a GPU: two per GPU
    assert [s.visible for s in worker_slots("cuda", 2, workers=3, env={})] == ["0", "1", "0"]  # round-robin


@pytest.mark.parametrize(("device", "gpus", "words"), [("cuda", 0, "sees no CUDA GPU"), ("cuda:3", 2, "numbered 0 to 1"), ("tpu", 1, "unknown device")])
def test_worker_slot_errors_are_one_line(device, gpus, words):
    with pytest.raises(ConfigError) as info:
        worker_slots(device, gpus, env={})
    assert words in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_the_local_executor_counts_gpus_through_torch(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 3)
    assert [s.visible for s in LocalExecutor(workers=None).slots()] == ["0", "1", "2"]
    assert LocalExecutor(workers=None).capacity() == 3
    assert LocalExecutor(workers=None, device="cpu").slots() == [WorkerSlot("cpu")]
    fake_gpus(monkeypatch, 0)
    assert LocalExecutor(workers=None).slots() == [WorkerSlot("cpu")]
    assert make_executor("local", workers=None, device="cuda:0").device == "cuda:0"


def test_one_gpu_runs_in_process_on_that_gpu(tmp_path, monkeypatch):
    from fincocktail.sweep.execute import simulated_run

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 2)
    devices = []

    def recording(run, ctx):
        devices.append(ctx.device)
        return simulated_run(run, ctx)

    summary = run_sweep(plan_of(tmp_path), tmp_path / "out", executor=LocalExecutor(workers=None, device="cuda:1"),
                        runner=recording, progress=False)
    assert len(summary.executed) == 3 and devices == ["cuda:1"] * 3


def gpu_reporting_run(run, ctx):
    """A simulated run that records which GPU its worker process was given."""
    from fincocktail.sweep.execute import simulated_run

    outcome = simulated_run(run, ctx)
    outcome.card.update(visible=os.environ.get("CUDA_VISIBLE_DEVICES"), device=ctx.device)
    return outcome


def test_spawned_workers_each_get_their_own_gpu(tmp_path, monkeypatch):
    """Two (faked) GPUs: two worker processes, one with CUDA_VISIBLE_DEVICES=0, one with 1, runs on `cuda`."""
    import time

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("FINCOCKTAIL_SIMULATE_SECONDS", "1")  # long enough that both workers take runs
    t0 = time.time()
    summary = run_sweep(plan_of(tmp_path), tmp_path / "out", executor=LocalExecutor(workers=None), runner=gpu_reporting_run, progress=False)
    assert len(summary.executed) == 3, summary.failed
    cards = [r.card for r in ResultsStore.in_dir(tmp_path / "out").runs()]
    assert {c["device"] for c in cards} == {"cuda"}
    by_pid = {c["pid"]: c["visible"] for c in cards}
    assert sorted(by_pid.values()) == ["0", "1"] and os.getpid() not in by_pid, (by_pid, time.time() - t0)


# -- Ray --------------------------------------------------------------------------------------


def test_ray_asks_for_a_gpu_when_a_run_is_on_cuda(tmp_path):
    run = plan_of(tmp_path).runs[0]
    assert ray_gpus(run, "cuda:1") == (1.0, "cuda")  # Ray picks the GPU and exposes it as cuda:0
    assert ray_gpus(run, "auto") == (0, "auto")
    half = plan_of(tmp_path, "h.yaml", resources={"num_gpus": 0.5}).runs[0]
    assert ray_gpus(half, "cuda") == (0.5, "cuda") and ray_gpus(half, "auto") == (0.5, "auto")


# -- GPU-hours in the plan --------------------------------------------------------------------


def test_plan_prints_gpu_hours_from_per_model_gpu_rates(tmp_path):
    from rich.console import Console

    models = [{"name": "smollm2-135m-instruct", "tokens_per_s": 100, "eval_examples_per_s": 2,
               "gpu_tokens_per_s": 10000, "gpu_eval_examples_per_s": 200}]
    cpu = plan_of(tmp_path, "cpu.yaml", models=models)
    gpu = plan_of(tmp_path, "gpu.yaml", models=models, resources={"num_gpus": 1})
    assert "est_gpu_hours" not in cpu.totals()
    assert [r.run_id for r in cpu.runs] == [r.run_id for r in gpu.runs]
    for c, g in zip(cpu.runs, gpu.runs):
        assert g.est_seconds < c.est_seconds  # the GPU rates are used
    assert gpu.totals()["est_gpu_hours"] == pytest.approx(sum(r.est_seconds for r in gpu.runs) / 3600, abs=0.01)
    assert plan_json(gpu)["totals"]["est_gpu_hours"] == gpu.totals()["est_gpu_hours"]
    console = Console(record=True, width=400)
    console.print(plan_table(gpu))
    assert "GPU-hours" in console.export_text()
    by_device = plan_of(tmp_path, "dev.yaml", models=models, resources={"device": "cuda"})
    assert by_device.totals()["est_gpu_hours"] == gpu.totals()["est_gpu_hours"]  # a cuda device asks for GPUs too


@pytest.mark.parametrize("command", [["sweep", "run", "--simulate"], ["mix", "search", "--budget", "1", "--simulate"], ["reproduce"]])
def test_cli_device_typo_is_a_usage_error(tmp_path, monkeypatch, capsys, command):
    import sys

    from fincocktail.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SWEEP), encoding="utf-8")
    args = command if command == ["reproduce"] else [*command[:2], str(path), *command[2:]]
    monkeypatch.setattr(sys, "argv", ["fincocktail", *args, "--device", "gpu"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "unknown device" in err and "\n" not in err


def test_a_gpu_worker_keeps_the_base_in_ram_and_sends_each_runs_copy_to_the_gpu(monkeypatch, lively_model_dir):
    """The cached fp32 base stays on the CPU, untouched; each run gets its own copy, moved to the
    (faked) GPU and cast there: `dtype: auto` on a bf16 GPU gives the bf16 body plus fp32 reference."""
    import dataclasses

    import fincocktail.evaluation.loading as loading
    import fincocktail.sweep.execute as execute

    fake_gpus(monkeypatch, 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    moved = []

    def to_device(loaded, device):  # there is no GPU to move to: record the move instead
        moved.append((id(loaded.model), device))
        return dataclasses.replace(loaded, device=device)

    monkeypatch.setattr(loading, "to_device", to_device)
    execute._BASE_CACHE.clear()
    first = execute._loaded_model(str(lively_model_dir), None, "auto", "auto")
    base = execute._BASE_CACHE[(str(lively_model_dir), "float32")]
    second = execute._loaded_model(str(lively_model_dir), None, "float32", "cuda")
    assert first.device == "cuda" and first.model.dtype == torch.bfloat16 and first.reference.dtype == torch.float32
    assert second.device == "cuda" and second.model is not base.model and second.reference is None
    assert base.device == "cpu" and base.model.dtype == torch.float32 and all(i != id(base.model) for i, _ in moved)
    assert [d for _, d in moved] == ["cuda", "cuda"]
    execute._BASE_CACHE.clear()


def test_a_model_that_asks_for_a_gpu_gets_gpu_rates_and_hours(tmp_path):
    models = [{"name": "smollm2-135m-instruct", "tokens_per_s": 100, "gpu_tokens_per_s": 10000, "num_gpus": 1}]
    plan = plan_of(tmp_path, models=models)
    cpu = plan_of(tmp_path, "c.yaml", models=[{**models[0], "num_gpus": 0}])
    assert plan.totals()["est_gpu_hours"] > 0 and "est_gpu_hours" not in cpu.totals()
    trained = [r for r in plan.runs if r.trains]
    assert all(g.est_seconds < c.est_seconds for g, c in zip(trained, [r for r in cpu.runs if r.trains]))
