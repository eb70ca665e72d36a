"""Faults of issue 25's audit: simulated scores taken for real, path escapes, YAML alias bombs,
`--out` that is a file, options checked before loading, typos that are usage errors, damaged
stores, HTML in model cards, exports that verify what they copy, partly loaded adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fault_helpers import assert_one_line_error, cli, sweep_file

# -- 1. simulated results never satisfy a real run ----------------------------------------------


def test_simulated_results_never_satisfy_a_real_run(tmp_path, capsys, monkeypatch, data_dir):
    from fincocktail.sweep.execute import read_result

    sweep = sweep_file(tmp_path, name="audit")
    monkeypatch.chdir(tmp_path)
    res = cli(capsys, monkeypatch, "sweep", "run", str(sweep), "--simulate", "-q")
    assert res.code == 0, res.err
    assert "SIMULATED" in res.out and str(Path("sweeps/audit/simulated")) in " ".join(res.out.split())
    assert not Path("sweeps/audit/results.sqlite").exists()  # the real sweep's store is untouched

    hint = cli(capsys, monkeypatch, "results")  # no real sweep: the simulated one is never picked silently
    assert_one_line_error(hint, "no results store under ./sweeps", "simulated results are in", code=2)
    shown = cli(capsys, monkeypatch, "results", "--out", "sweeps/audit/simulated")
    assert shown.code == 0 and "SIMULATED" in shown.out
    rows = json.loads(cli(capsys, monkeypatch, "results", "--out", "sweeps/audit/simulated", "--json").out)
    assert rows and all(r["simulated"] for r in rows)
    status = cli(capsys, monkeypatch, "sweep", "status", "--out", "sweeps/audit/simulated")
    assert "SIMULATED" in status.out
    report = cli(capsys, monkeypatch, "report", "--sweep", "sweeps/audit/simulated", "--out", str(tmp_path / "rep"))
    assert report.code == 0, report.err
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# SIMULATED")

    # the same folder named for a real run: refused before anything trains
    out = tmp_path / "sweeps" / "audit" / "simulated"
    real = cli(capsys, monkeypatch, "sweep", "run", str(sweep), "--out", str(out), "--data-dir", str(data_dir), "-q")
    assert_one_line_error(real, str(out / "results.sqlite"), "simulated", code=2)
    # a store from before the mark (no 'contents' recorded) is recognised by its run cards
    import sqlite3

    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'contents'")
    real = cli(capsys, monkeypatch, "sweep", "run", str(sweep), "--out", str(out), "--data-dir", str(data_dir), "-q")
    assert_one_line_error(real, "simulated", code=2)
    # and a simulated result.json found without its store is not trusted by a real run
    run_dir = next((out / "runs").iterdir())
    assert read_result(run_dir) is not None and read_result(run_dir, trust_simulated=False) is None


def test_mix_search_simulate_keeps_its_own_store_and_marks_its_outputs(tmp_path, capsys, monkeypatch):
    sweep = sweep_file(tmp_path, tasks=["fpb", "fiqa_sa", "tfns"], out=str(tmp_path / "out"),
                        eval={"tasks": ["fpb", "tfns"], "max_examples": 5})
    res = cli(capsys, monkeypatch, "mix", "search", str(sweep), "--budget", "1", "--batch", "1", "--simulate", "-q")
    assert res.code == 0, res.err
    assert "SIMULATED" in res.out
    assert not (tmp_path / "out" / "results.sqlite").exists()
    folder = tmp_path / "out" / "simulated" / "mix" / "mean"
    assert json.loads((folder / "summary.json").read_text())["simulated"] is True
    assert (folder / "mixtures.md").read_text().startswith("SIMULATED")


# -- 12. names that would escape their folder -----------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", ".hidden"])
def test_a_sweep_name_that_is_not_one_path_component_is_a_config_error(tmp_path, capsys, monkeypatch, name):
    sweep = sweep_file(tmp_path, name=name)
    monkeypatch.chdir(tmp_path)
    res = cli(capsys, monkeypatch, "sweep", "run", str(sweep), "--simulate", "-q")
    assert_one_line_error(res, str(sweep), "name", "one path component", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no store, no runs anywhere


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/b"])
def test_a_mix_search_name_that_escapes_out_is_a_config_error(tmp_path, capsys, monkeypatch, name):
    sweep = sweep_file(tmp_path, tasks=["fpb", "fiqa_sa", "tfns"], out=str(tmp_path / "o" / "out"))
    res = cli(capsys, monkeypatch, "mix", "search", str(sweep), "--budget", "1", "--simulate", "-q", "--name", name)
    assert_one_line_error(res, "--name", "one path component", code=2)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "o" / "out" / "simulated" / "mix").exists()


# -- 8. YAML alias bombs ---------------------------------------------------------------------------


def _alias_bomb(levels: int = 6, width: int = 9) -> str:
    """`a0: &a0 [x, x, ...]`, `a1: &a1 [*a0, *a0, ...]`, ...: width**levels values in a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("reader", ["train", "cocktail", "sweep", "user task", "recursive"])
def test_a_yaml_alias_bomb_is_refused_by_every_reader(tmp_path, capsys, monkeypatch, reader):
    import resource

    from fincocktail.cocktail import load_cocktail
    from fincocktail.errors import ConfigError
    from fincocktail.sweep.spec import load_plan
    from fincocktail.tasks.custom import parse_spec
    from fincocktail.training.config import load_train_config

    path = tmp_path / "bomb.yaml"
    path.write_text("model: x\n" + _alias_bomb() if reader != "recursive" else "a: &a [x, *a]\n", encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if reader == "train":
        res = cli(capsys, monkeypatch, "train", str(path), "--out", str(tmp_path / "run"))
        assert_one_line_error(res, str(path), "aliases", "expand", code=2)
    else:
        load = {"cocktail": load_cocktail, "sweep": load_plan, "user task": parse_spec, "recursive": load_train_config}[reader]
        with pytest.raises(ConfigError, match=r"bomb\.yaml: its YAML aliases \(\*name\) expand to more than"):
            load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing was expanded


def test_yaml_with_a_few_aliases_still_loads(tmp_path):
    from fincocktail.plumbing.fileio import load_yaml

    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {r: 8, alpha: 16}\nlora: *b\nother: {<<: *b, r: 4}\n", encoding="utf-8")
    assert load_yaml(path) == {"base": {"r": 8, "alpha": 16}, "lora": {"r": 8, "alpha": 16}, "other": {"r": 4, "alpha": 16}}


# -- 16. --out that is an existing file -----------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "eval", "sweep run", "report", "export model", "export lm-eval"])
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys, monkeypatch, data_dir, command, where):
    from fincocktail.sweep.executors import run_sweep
    from fincocktail.sweep.spec import load_plan

    REPO = Path(__file__).resolve().parents[1]
    blocker = tmp_path / "taken"
    blocker.write_text("a file\n", encoding="utf-8")
    out = blocker if where == "file" else blocker / "sub"
    sweep = sweep_file(tmp_path)
    args = {
        "train": ["train", str(REPO / "configs/train/smollm2_fpb_lora.yaml"), "--out", str(out)],
        "eval": ["eval", "--model", "smollm2-135m-instruct", "--tasks", "fpb", "--out", str(out)],
        "sweep run": ["sweep", "run", str(sweep), "--simulate", "--out", str(out), "-q"],
        "report": ["report", "--sweep", str(tmp_path / "done"), "--out", str(out)],
        "export model": ["export", "model", str(tmp_path / "run"), "--out", str(out)],
        "export lm-eval": ["export", "lm-eval", str(out), "--tasks", "fpb", "--data-dir", str(data_dir)],
    }[command]
    if command == "report":
        run_sweep(load_plan(sweep), tmp_path / "done", runner="simulate", progress=False)
    res = cli(capsys, monkeypatch, *args)
    assert_one_line_error(res, str(out), "is a file, not a folder", code=2)
    assert blocker.read_text() == "a file\n"


# -- 17. serve options are checked before the model loads -----------------------------------------


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_with_an_impossible_port_fails_before_loading_the_model(capsys, monkeypatch, port):
    import fincocktail.evaluation.loading as loading

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(loading, "load_for_eval", never)
    res = cli(capsys, monkeypatch, "serve", "--model", "smollm2-135m-instruct", "--port", port)
    assert_one_line_error(res, f"--port {port}", "0 to 65535", code=2)


def test_serve_on_a_port_already_taken_fails_before_loading_the_model(capsys, monkeypatch):
    """Issue 27: the model loaded (~10 s) before the server found its port taken."""
    import socket

    import fincocktail.evaluation.loading as loading

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(loading, "load_for_eval", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        res = cli(capsys, monkeypatch, "serve", "--model", "smollm2-135m-instruct", "--port", port)
    assert_one_line_error(res, f"cannot listen on 127.0.0.1:{port}", "--port", code=2)


# -- 18. typos are usage errors (exit 2), found before anything loads -----------------------------


@pytest.mark.parametrize("case", ["train config model", "train --model folder", "models pull", "eval --model",
                                  "eval --adapter", "eval --data-dir", "data check --data-dir"])
def test_typos_are_usage_errors_with_exit_2_before_any_load(tmp_path, capsys, monkeypatch, case):
    import fincocktail.evaluation.runner as runner
    import fincocktail.training.trainer as trainer

    def never(*args, **kwargs):
        raise AssertionError("work started before the typo was found")

    import fincocktail.evaluation.loading as loading

    monkeypatch.setattr(trainer, "train", never)
    monkeypatch.setattr(loading, "_load_base", never)
    if case != "eval --data-dir":  # that one is found inside run_eval, before any model loads
        monkeypatch.setattr(runner, "run_eval", never)
    REPO = Path(__file__).resolve().parents[1]
    config = tmp_path / "train.yaml"
    data = yaml.safe_load((REPO / "configs/train/smollm2_fpb_lora.yaml").read_text())
    config.write_text(yaml.safe_dump({**data, "model": "smollm2-135m-instruc"}), encoding="utf-8")
    eval_args = ["eval", "--model", "smollm2-135m-instruct", "--tasks", "fpb", "--out", str(tmp_path / "ev")]
    args, needle = {
        "train config model": (["train", str(config), "--out", str(tmp_path / "run")], "unknown model 'smollm2-135m-instruc'"),
        "train --model folder": (["train", str(config), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "run")],
                                 "does not exist"),
        "models pull": (["models", "pull", "nosuch"], "unknown model 'nosuch'"),
        "eval --model": (["eval", "--model", "nosuch", "--tasks", "fpb"], "unknown model 'nosuch'"),
        "eval --adapter": ([*eval_args, "--adapter", str(tmp_path / "nope")], f"--adapter {tmp_path / 'nope'}: no such folder"),
        "eval --data-dir": ([*eval_args, "--data-dir", str(tmp_path / "nope")], f"--data-dir {tmp_path / 'nope'}: no such folder"),
        "data check --data-dir": (["data", "check", "--data-dir", str(tmp_path / "nope")], "no such folder"),
    }[case]
    monkeypatch.setenv("FINCOCKTAIL_DATA", str(tmp_path / "nope"))
    res = cli(capsys, monkeypatch, *args)
    assert_one_line_error(res, needle, code=2)


# -- 20. a store emptied to 0 bytes is damaged, not "retry in a moment" ---------------------------


@pytest.mark.parametrize("command", ["sweep status", "results", "report"])
def test_a_store_truncated_to_0_bytes_is_called_damaged_with_the_fix(tmp_path, capsys, monkeypatch, command):
    from fincocktail.sweep.executors import run_sweep
    from fincocktail.sweep.spec import load_plan

    out = tmp_path / "out"
    run_sweep(load_plan(sweep_file(tmp_path)), out, runner="simulate", progress=False)
    for side in out.glob("results.sqlite-*"):
        side.unlink()
    (out / "results.sqlite").write_bytes(b"")  # no sweep is running: nothing will fill it
    args = {
        "sweep status": ["sweep", "status", "--out", str(out)],
        "results": ["results", "--out", str(out)],
        "report": ["report", "--sweep", str(out), "--out", str(tmp_path / "report")],
    }[command]
    res = cli(capsys, monkeypatch, *args)
    line = assert_one_line_error(res, str(out / "results.sqlite"), "the results store is damaged", "0 bytes", "move it away")
    assert "retry in a moment" not in line


# -- exports: escaped cards (11), clean failures (6), verified copies (3) -------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, data_dir, tmp_path_factory) -> Path:
    """A finished 2-step LoRA run of the tiny model on real FPB rows (seconds)."""
    import torch

    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audit-run")
    cfg = parse_train_config({
        "model": str(tiny_model_dir), "data_dir": str(data_dir), "batch_size": 4, "lr": 1e-2, "max_steps": 2, "epochs": 1,
        "lora": {"r": 4, "alpha": 8}, "checkpoint_every": 100,
        "cocktail": {"name": "fpb_only", "seed": 0, "ingredients": [{"task": "fpb", "count": 8}]},
    }, source="run.yaml")
    train(cfg, root / "run", progress=False)
    torch.set_num_threads(before)
    return root / "run"


def _body(card: str) -> str:
    return card.split("\n---\n", 1)[1]  # the Markdown after the YAML header


def test_user_text_in_the_model_card_is_escaped(tiny_run, tmp_path, capsys, monkeypatch):
    from fincocktail.export.modelcard import SourceLicence, render_card

    hostile = "<script>alert(1)</script>"
    res = cli(capsys, monkeypatch, "export", "model", str(tiny_run), "--out", str(tmp_path / "x"), "--name", hostile)
    assert res.code == 0, res.err
    body = _body((tmp_path / "x" / "README.md").read_text())
    assert "<script" not in body and "# &lt;script&gt;alert(1)&lt;/script&gt;" in body
    # a user task's licence, a cocktail name and a file name from the run card
    card = {"config": {"method": "lora", "lr": "1e-2 | <b>x</b>"},
            "data_manifest": {"name": "mix`<img src=x onerror=alert(2)>", "sources": {"mine": {
                "examples_per_epoch": [3], "files_sha256": {"mine/<svg onload=alert(3)>.csv": "ab|cd"}}}}}
    text = render_card(name="ok", base_model="m", base_hub_id=None, base_licence="<iframe src=x>", base_note="",
                       base_weights="w", method="lora", merged=False, train_card=card, scores=[],
                       licences=[SourceLicence("mine", (), "<img src=x onerror=alert(4)>", None)])
    body = _body(text)
    for tag in ("<script", "<img", "<svg", "<iframe", "<b>"):
        # outside code spans, HTML is escaped; inside them a backtick can no longer close the span
        outside = "".join(part for i, part in enumerate(body.split("`")) if i % 2 == 0)
        assert tag not in outside, (tag, body)
    assert "&lt;img src=x onerror=alert(4)&gt;" in body
    for line in body.splitlines():
        if line.startswith("| mine |"):
            assert line.count(" | ") - line.count("\\| ") == 7  # eight cells: no '|' of user text opened a ninth


@pytest.mark.parametrize("out_exists", [False, True])
def test_a_failed_export_leaves_nothing_in_out_and_a_rerun_works(tiny_run, tmp_path, capsys, monkeypatch, out_exists):
    out = tmp_path / "exported"
    if out_exists:
        out.mkdir()
    res = cli(capsys, monkeypatch, "export", "model", str(tiny_run), "--out", str(out), "--eval", str(tmp_path / "runs" / "nope"))
    assert_one_line_error(res, "nope", code=2)
    assert (out.is_dir() and not any(out.iterdir())) if out_exists else not out.exists()
    res = cli(capsys, monkeypatch, "export", "model", str(tiny_run), "--out", str(out))
    assert res.code == 0, res.err
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()


def test_a_truncated_adapter_is_refused_by_export_and_nothing_is_copied(tiny_run, tmp_path, capsys, monkeypatch):
    import shutil

    from fincocktail.export.model import verify_safetensors

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    verify_safetensors(weights)  # whole: passes
    weights.write_bytes(weights.read_bytes()[:3000])
    for merge in ([], ["--merge"]):
        res = cli(capsys, monkeypatch, "export", "model", str(run), "--out", str(tmp_path / "x"), *merge)
        assert_one_line_error(res, str(weights), "truncated", code=1)
        assert not (tmp_path / "x").exists()
    weights.write_bytes(b"\xff" * 8 + b"{}")  # a header length no file can hold
    res = cli(capsys, monkeypatch, "export", "model", str(run), "--out", str(tmp_path / "x"))
    assert_one_line_error(res, str(weights), "damaged safetensors file")


# -- 2. a partly loaded adapter is an error, not a silent score -----------------------------------


@pytest.mark.parametrize("edit", ["config drops a target module", "weights lack a target module"])
def test_an_adapter_whose_config_disagrees_with_its_weights_is_a_one_line_error(tiny_run, tiny_model_dir, data_dir, tmp_path,
                                                                                capsys, monkeypatch, edit):
    import shutil

    from fincocktail.errors import ModelError
    from fincocktail.evaluation.loading import load_for_eval

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg_path = run / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    targets = sorted(cfg["target_modules"])
    assert len(targets) >= 2
    if edit == "config drops a target module":  # its weights become unexpected keys, dropped by peft
        cfg["target_modules"] = [t for t in targets if t != "q_proj"]
        cfg_path.write_text(json.dumps(cfg))
    else:  # the config's q_proj layers get no weights: missing keys, left at their init
        from safetensors.torch import load_file, save_file

        weights = run / "adapter" / "adapter_model.safetensors"
        save_file({k: v for k, v in load_file(str(weights)).items() if "q_proj" not in k}, str(weights))
    load_for_eval(str(tiny_model_dir), tiny_run, "float32")  # the intact adapter loads
    with pytest.raises(ModelError, match=r"adapter: the adapter would load only in part \(\d+ weight\(s\)"):
        load_for_eval(str(tiny_model_dir), run, "float32")
    res = cli(capsys, monkeypatch, "eval", "--model", str(tiny_model_dir), "--adapter", str(run), "--tasks", "fpb", "--limit", "2",
              "--data-dir", str(data_dir), "--out", str(tmp_path / "ev"), "--no-progress")
    assert_one_line_error(res, str(run / "adapter"), "would load only in part", code=1)


# -- 19. -q hides progress, never warnings about the user's data ---------------------------------


def test_quiet_resume_past_an_unreadable_checkpoint_still_warns(tiny_model_dir, data_dir, tmp_path, capsys, monkeypatch, one_thread):
    from test_faults_train import _interrupt_after_checkpoint, _Interrupted

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "data_dir": str(data_dir), "batch_size": 4, "lr": 1e-2, "max_steps": 6, "epochs": 1,
        "checkpoint_every": 2, "keep_checkpoints": 2, "lora": {"r": 4, "alpha": 8},
        "cocktail": {"name": "fpb_only", "seed": 0, "ingredients": [{"task": "fpb", "count": 32}]},
    }), encoding="utf-8")
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after_checkpoint(m, at_step=4)
        with pytest.raises(_Interrupted):
            cli(capsys, m, "train", str(config), "--out", str(run_dir), "-q")
    damaged = run_dir / "checkpoints" / "step-00000004" / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    res = cli(capsys, monkeypatch, "train", str(config), "--out", str(run_dir), "-q", "--resume")
    assert res.code == 0, res.err
    err = " ".join(res.err.split())
    assert "warning" in err and "unreadable checkpoint" in err and "step-00000004" in err
    assert "resuming from" not in err  # progress stays hidden
    assert json.loads((run_dir / "run_card.json").read_text())["resumed_from"] == "step-00000002"
