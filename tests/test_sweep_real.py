"""A tiny sweep through the real train + eval path, on the local executor and on a local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fincocktail.sweep.executors import LocalExecutor, RayExecutor, run_sweep
from fincocktail.sweep.spec import load_plan
from fincocktail.sweep.store import ResultsStore


@pytest.fixture(scope="module")
def tiny_plan(tiny_model_dir, tmp_path_factory):
    sweep = {
        "name": "tiny",
        "tasks": ["fpb", "tfns"],
        "models": [str(tiny_model_dir)],
        "design": {"incremental": False, "all_tasks": False},
        "train_caps": {"fpb": 8, "tfns": 8},
        "training": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 1, "contamination_check": False},
        "eval": {"tasks": ["fpb"], "max_examples": 6, "selection_max_examples": 4, "bootstrap_samples": 50, "batch_size": 4},
    }  # zero-shot + fine-tuned on fpb + fine-tuned on tfns
    path = tmp_path_factory.mktemp("sweep") / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep), encoding="utf-8")
    return load_plan(path)


@pytest.fixture(scope="module")
def local_out(tiny_plan, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    summary = run_sweep(tiny_plan, out, executor=LocalExecutor(workers=1, threads=1), data_dir=str(data_dir), progress=False)
    assert not summary.failed, summary.failed
    return out


def headline(out: Path) -> dict[tuple[str, str, str], tuple[float, int]]:
    return {(m.run_id, m.task, m.split): (m.value, m.n) for m in ResultsStore.in_dir(out).metrics(headline_only=True)}


def test_local_sweep_trains_evaluates_and_records(tiny_plan, local_out, data_dir):
    store = ResultsStore.in_dir(local_out)
    runs = {r.label: r for r in store.runs()}
    assert set(runs) == {"zero-shot", "fpb", "tfns"} and all(r.status == "done" for r in runs.values())
    assert runs["zero-shot"].tokens_trained == 0 and runs["fpb"].tokens_trained > 0
    card = runs["fpb"].card["train"]
    assert card["steps"] == 2 and Path(card["adapter_dir"], "adapter_config.json").is_file()

    # the stored metric is the one the predictions file implies (independent recomputation)
    (m,) = store.metrics(runs["fpb"].run_id, split="test", headline_only=True)
    assert (m.task, m.metric, m.n) == ("fpb", "accuracy", 6)
    lines = [json.loads(x) for x in Path(m.predictions).read_text().splitlines()]
    assert len(lines) == 6
    assert m.value == pytest.approx(sum(x["correct"] for x in lines) / 6)
    assert m.ci_low <= m.value <= m.ci_high
    val = store.metrics(runs["fpb"].run_id, split="validation", headline_only=True)
    assert sorted(v.task for v in val) == ["fpb", "tfns"] and all(v.n == 4 for v in val)
    assert runs["fpb"].selection_score == pytest.approx(sum(v.value for v in val) / 2)

    # the trained model is a different model from the base one
    base_pred = Path(store.metrics(runs["zero-shot"].run_id, split="test", headline_only=True)[0].predictions)
    logprobs = lambda p: [json.loads(x)["choice_logprobs"] for x in p.read_text().splitlines()]
    assert logprobs(base_pred) != logprobs(Path(m.predictions))

    again = run_sweep(tiny_plan, local_out, data_dir=str(data_dir), progress=False)
    assert again.executed == [] and len(again.skipped) == 3
    assert all(r.attempts == 1 for r in store.runs())


def test_ray_executor_gives_the_same_results(tiny_plan, local_out, data_dir, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'fincocktail[ray]')")
    out = tmp_path / "ray"
    executor = RayExecutor(num_cpus=2)
    summary = run_sweep(tiny_plan, out, executor=executor, data_dir=str(data_dir), progress=False)
    assert not summary.failed, summary.failed
    assert executor.gcs_address.startswith("127.0.0.1:")  # the private Ray listened on loopback only
    assert len(summary.executed) == 3
    store = ResultsStore.in_dir(out)
    assert all(r.status == "done" and r.attempts == 1 for r in store.runs())
    ray_metrics, local_metrics = headline(out), headline(local_out)
    assert set(ray_metrics) == set(local_metrics) and len(ray_metrics) == 3 * 3
    for key, (value, n) in local_metrics.items():
        assert ray_metrics[key][1] == n
        assert ray_metrics[key][0] == pytest.approx(value, abs=1e-9), key


def test_token_cache_tokenizes_each_pair_once_per_tokenizer(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from fincocktail.tasks import prompts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pair = prompts.render_text("What is the sentiment?", "Revenue rose 5 %", "positive")
    plain = prompts.encode_pair(tok, pair)
    cache = prompts.TokenCache()
    first = cache.encode_pair(tok, pair)
    second = cache.encode_pair(tok, pair)
    no_eos = cache.encode_pair(tok, pair, add_eos=False)
    # another tokenizer (different vocabulary) must not get the first one's ids
    tok2 = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok2.add_tokens(["Revenue rose"])
    other = cache.encode_pair(tok2, pair)
    assert first == second == plain and no_eos == (plain[0], plain[1][:-1])
    assert other != plain and other == prompts.encode_pair(tok2, pair)
    assert cache.misses == 3
    assert cache.hits == 1


def test_killed_sweep_resumes_training_from_its_checkpoint(tiny_model_dir, data_dir, tmp_path):
    """kill -9 the whole sweep while a run trains; the rerun continues that run from its checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fincocktail.training.trainer import checkpoint_dirs

    sweep = {
        "name": "resume",
        "tasks": ["fpb"],
        "models": [str(tiny_model_dir)],
        "design": {"base": False},
        "train_caps": {"fpb": 64},
        "training": {"epochs": 10, "max_steps": 120, "batch_size": 2, "checkpoint_every": 5, "contamination_check": False},
        "eval": {"tasks": ["fpb"], "max_examples": 4, "selection_split": None, "bootstrap_samples": 20},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(sweep), encoding="utf-8")
    plan = load_plan(path)
    (run,) = plan.runs
    out = tmp_path / "out"
    train_dir = out / "runs" / run.run_id / "train"
    cmd = [sys.executable, "-m", "fincocktail", "sweep", "run", str(path), "--out", str(out), "--data-dir", str(data_dir), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: tiny steps on a shared CPU
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    try:
        deadline = time.time() + 240
        while not checkpoint_dirs(train_dir):
            assert proc.poll() is None, f"sweep ended before a checkpoint was written: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed_at = int(checkpoint_dirs(train_dir)[-1].name.split("-")[1])
    assert not (train_dir / "adapter").exists()  # it really was killed mid-training
    assert killed_at < 120

    # the rerun (in this process: torch is already imported here) resumes the interrupted run
    summary = run_sweep(plan, out, executor=LocalExecutor(workers=1, threads=1), data_dir=str(data_dir), progress=False)
    assert summary.executed == [run.run_id] and not summary.failed
    store = ResultsStore.in_dir(out)
    row = store.run(run.run_id)
    assert row.status == "done" and row.attempts == 2
    card = json.loads((train_dir / "run_card.json").read_text())
    assert card["status"] == "complete" and card["steps"] == 120
    assert card["resumed_from"] is not None and int(card["resumed_from"].split("-")[1]) >= killed_at
    assert row.card["train"]["resumed_from"] == card["resumed_from"]
    assert [a.status for a in store.attempts(run.run_id)] == ["interrupted", "done"]


def test_mlflow_shows_a_tiny_runs_curves_metrics_and_artifacts(tiny_plan, data_dir, tmp_path, monkeypatch):
    """`sweep run --mlflow FOLDER` on a real tiny run, read back with mlflow.search_runs and get_metric_history."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow is optional (pip install 'fincocktail[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "unset")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # what `make setup` users have: no opt-in
    uri = (tmp_path / "mlruns").as_uri()
    (single,) = [r.run_id for r in tiny_plan.runs if r.kind != "base"][:1]
    summary = run_sweep(tiny_plan, tmp_path / "out", executor=LocalExecutor(workers=1, threads=1), data_dir=str(data_dir),
                        progress=False, only=[single], mlflow_uri=uri)
    assert not summary.failed, summary.failed
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=["tiny"])
    assert list(frame["tags.fincocktail.run_id"]) == [single] and list(frame["status"]) == ["FINISHED"]
    assert frame["metrics.test/fpb/accuracy_n"][0] == 6
    client = MlflowClient(tracking_uri=uri)
    rid = frame["run_id"][0]
    assert [m.step for m in client.get_metric_history(rid, "train/loss")] == [1, 2]
    assert len(client.get_metric_history(rid, "train/lr")) == 2
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"adapter", "eval", "train"} <= top
    assert "train/run_card.json" in {a.path for a in client.list_artifacts(rid, "train")}
