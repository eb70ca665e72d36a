"""Training on the tiny model: config errors before loading, answer-only loss, batching,
kill -9 and resume equality, adapter reload with plain peft, run folder contents, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from fake_tasks import FAKE_TASKS, resolver
from fault_helpers import kill_9_at_marker

import fincocktail.training.trainer as trainer_mod
from fincocktail.errors import ConfigError
from fincocktail.training.config import (
    apply_overrides,
    load_train_config,
    parse_train_config,
)
from fincocktail.training.data import (
    Encoded,
    collate,
    padding_fraction,
    plan_batches,
    truncate,
)
from fincocktail.training.trainer import answer_loss_sum, train

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

COCKTAIL = {"seed": 1, "ingredients": ["fa", {"task": "fb", "count": 20}], "general": {"fraction": 0.2, "task": "gen"}}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(model_dir: Path, data_dir: Path, **over):
    base = {
        "model": str(model_dir),
        "cocktail": COCKTAIL,
        "data_dir": str(data_dir),
        "batch_size": 4,
        "lr": 1e-2,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "checkpoint_every": 3,
        "max_steps": 8,
        "epochs": 2,
    }
    base.update(over)
    return parse_train_config(base, source="run.yaml")


def run(cfg, run_dir: Path, resume: bool = False):
    return train(cfg, run_dir, resume=resume, resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=False)


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"lr": 0}, "run.yaml: lr: Input should be greater than 0"),
        ({"lora": {"r": 0}}, "run.yaml: lora.r: Input should be greater than 0"),
        ({"learning_rate": 1e-4}, "run.yaml: learning_rate: unknown field"),
        ({"model": ""}, "run.yaml: model: missing"),
        ({"precision": "bf16", "method": "full"}, "run.yaml: precision: bf16 keeps the base weights frozen"),
        ({"max_batch_tokens": 0}, "run.yaml: max_batch_tokens: must be > 0, 'auto' or null"),
        ({"precision": "fp16"}, "run.yaml: precision: Input should be 'fp32', 'bf16' or 'auto'"),
        ({"method": "qlora"}, "run.yaml: method: Input should be 'lora' or 'full'"),
        ({"cocktail": {"ingredients": [{"task": "fa", "count": -1}]}}, "run.yaml: cocktail: ingredients.0.count"),
    ],
)
def test_bad_config_values_name_the_field(change, expected, tmp_path):
    data = {"model": "m", "cocktail": COCKTAIL, **change}
    with pytest.raises(ConfigError) as err:
        parse_train_config(data, source="run.yaml")
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_yaml_overrides_and_relative_cocktail(tmp_path):
    (tmp_path / "mix.yaml").write_text("ingredients: [fa]\n")
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny\ncocktail: mix.yaml\nlora:\n  r: 16\n")
    cfg = load_train_config(path, ["lora.r=8", "lr=3e-4", "lora.target_modules=[q_proj, v_proj]", "model=1.0"])
    assert cfg.lora.r == 8 and cfg.lr == 3e-4 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model == "1.0" and cfg.cocktail == str(tmp_path / "mix.yaml")
    with pytest.raises(ConfigError, match="lora.r: Input should be greater than 0"):
        load_train_config(path, ["lora.r=-2"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["lora.r"])


def test_bad_task_fails_before_the_model_is_loaded(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("model loaded before the config was checked")

    monkeypatch.setattr(trainer_mod, "load_model_and_tokenizer", boom)
    cfg = config(Path("unused"), tmp_path, cocktail={"ingredients": ["fa", "nope"]})
    with pytest.raises(ConfigError, match=r"ingredients.1.task: unknown task 'nope'"):
        run(cfg, tmp_path / "run")
    cfg = config(Path("unused"), tmp_path, cocktail={"ingredients": [{"task": "fa", "count": 99}]})
    with pytest.raises(ConfigError, match=r"ingredients.0.count: asks for 99"):
        run(cfg, tmp_path / "run2")


# -- batching and loss ------------------------------------------------------------------------


def test_length_grouped_plan_is_deterministic_complete_and_tight():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 300) for _ in range(1000)]
    a = plan_batches(lengths, 8, seed=3, epoch=0)
    assert a == plan_batches(lengths, 8, seed=3, epoch=0)
    assert a != plan_batches(lengths, 8, seed=3, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(1000))
    shuffled = plan_batches(lengths, 8, seed=3, epoch=0, strategy="shuffle")
    assert padding_fraction(a, lengths) < 0.05
    assert padding_fraction(shuffled, lengths) > 0.3


def test_truncate_keeps_the_target_and_cuts_the_prompt_from_the_left():
    enc = truncate(list(range(10)), [100, 101, 102], max_length=8)
    assert enc.input_ids == [5, 6, 7, 8, 9, 100, 101, 102] and enc.n_prompt == 5
    enc = truncate([1, 2], list(range(100, 120)), max_length=8)
    assert len(enc.input_ids) == 8 and enc.n_prompt == 1


def test_answer_only_loss_equals_full_logits_masked_mean(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    items = [
        Encoded(torch.randint(3, vocab, (n,)).tolist(), n_prompt=p) for n, p in [(17, 12), (9, 4), (25, 23), (12, 1)]
    ]
    batch = collate(items, pad_id=0)
    with torch.no_grad():
        loss_sum, count = answer_loss_sum(model, batch.input_ids, batch.labels)
        # independent: full logits with the padding mask, HF-style shift, masked mean
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        shift_logits, shift_labels = logits[:, :-1], batch.labels[:, 1:]
        mask = shift_labels != -100
        ce = torch.nn.functional.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="mean")
    assert count == sum(e.n_target for e in items) - 0 == int(mask.sum())
    assert torch.allclose(loss_sum / count, ce, atol=1e-5)


# -- training runs -----------------------------------------------------------------------------


def _adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_train_writes_run_folder_and_adapter_reloads_with_plain_peft(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = config(tiny_model_dir, tmp_path, max_steps=6, merge=True)
    result = run(cfg, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert result.steps == 6 and result.tokens_seen > 0 and result.final_loss is not None
    assert result.adapter_dir == run_dir / "adapter" and result.peak_rss_mb > 0

    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 7))
    assert {"loss", "lr", "tokens_per_s", "elapsed_s"} <= set(log[0])
    assert sum(e["tokens"] for e in log) == result.tokens_seen

    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["status"] == "complete" and card["config"]["lora"]["r"] == 4
    assert {"torch", "transformers", "peft"} <= set(card["versions"])
    assert card["data_manifest"]["sources"]["fb"]["examples_per_epoch"] == [20, 20]
    assert card["data_manifest"]["sources"]["gen"]["examples_per_epoch"] == [14, 14]
    assert card["contamination"]["n"] == 13 and card["contamination"]["pairs"]
    assert card["tokens_seen"] == result.tokens_seen and card["peak_rss_mb"] > 0 and "git_commit" in card
    assert json.loads((run_dir / "data_manifest.json").read_text()) == card["data_manifest"]

    tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = tok("Instruction: What is the sentiment?\nAnswer:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = base(ids).logits
    peft_model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    with torch.no_grad():
        tuned_logits = peft_model(ids).logits
        out = peft_model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)  # the adapter changed something
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tuned_logits, atol=1e-4)

    with pytest.raises(Exception, match="already holds a run"):
        run(cfg, run_dir)  # never overwrite a finished run


KILL_SCRIPT = r"""
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import fincocktail.training.trainer as t
from fake_tasks import FAKE_TASKS, resolver
from fincocktail.training.config import parse_train_config
real_save = t.save_checkpoint
def slow_save(*a, **k):
    out = real_save(*a, **k)
    Path({marker!r}).write_text(out.name)
    time.sleep(600)  # the parent kills us here
    return out
t.save_checkpoint = slow_save
cfg = parse_train_config({cfg!r}, source="run.yaml")
t.train(cfg, Path({run_dir!r}), resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=False)
"""


def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, max_steps=10, checkpoint_every=4, epochs=2, batch_size=8)
    # 84 examples per epoch / 8 = 11 batches: the 10 steps stay in epoch 0 (the next test crosses epochs)
    a = run(cfg, tmp_path / "a")

    run_b = tmp_path / "b"
    marker = tmp_path / "checkpoint-written"
    script = KILL_SCRIPT.format(tests=str(TESTS), marker=str(marker), cfg=cfg.model_dump(mode="json"), run_dir=str(run_b))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    kill_9_at_marker(script, marker, env)
    assert marker.read_text() == "step-00000004" and not (run_b / "adapter").exists()

    b = run(cfg, run_b, resume=True)
    assert b.steps == a.steps == 10 and b.tokens_seen == a.tokens_seen
    ta, tb = _adapter_tensors(a.adapter_dir), _adapter_tensors(b.adapter_dir)
    assert ta.keys() == tb.keys() and ta
    for name in ta:
        assert torch.allclose(ta[name], tb[name], atol=1e-5), name
    log_a = [json.loads(x)["loss"] for x in (a.run_dir / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["loss"] for x in (run_b / "train_log.jsonl").read_text().splitlines()]
    assert log_a == pytest.approx(log_b, abs=1e-5) and len(log_b) == 10
    card = json.loads((run_b / "run_card.json").read_text())
    assert card["resumed_from"] == "step-00000004"


def test_resume_across_epoch_boundary_in_process(tiny_model_dir, tmp_path):
    """Interrupt (by max_steps in a first process-local run) is covered above; here a checkpoint taken
    in epoch 0 and resumed into epoch 1 gives the same adapter as one uninterrupted run."""
    # prefix_sharing off: mixed-task batches, so the batch arithmetic below holds (task-grouped
    # batches add a partial batch per task and mega-batch)
    cfg = config(tiny_model_dir, tmp_path, max_steps=None, checkpoint_every=5, epochs=2, batch_size=16, keep_checkpoints=3,
                 prefix_sharing="off")
    a = run(cfg, tmp_path / "a")  # 84 per epoch -> 6 batches per epoch, 12 steps
    assert a.steps == 12
    run_b = tmp_path / "b"
    run(cfg, run_b)
    # simulate a crash after step 10 (epoch 1): drop the final outputs, keep the step-10 checkpoint
    import shutil

    for name in ("adapter", "run_card.json"):
        p = run_b / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    ckpts = sorted(p.name for p in (run_b / "checkpoints").iterdir())
    assert ckpts == ["step-00000005", "step-00000010"]
    state = json.loads((run_b / "checkpoints" / "step-00000010" / "state.json").read_text())
    assert state["epoch"] == 1 and state["next_group"] == 4
    with pytest.raises(ConfigError, match="differs from the one this run was started with"):
        run(cfg.model_copy(update={"lr": 5e-3}), run_b, resume=True)
    b = run(cfg, run_b, resume=True)
    ta, tb = _adapter_tensors(a.adapter_dir), _adapter_tensors(b.adapter_dir)
    for name in ta:
        assert torch.allclose(ta[name], tb[name], atol=1e-5), name


def test_full_fine_tuning_saves_a_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = config(tiny_model_dir, tmp_path, method="full", max_steps=2, lr=1e-3, threads=2)
    result = run(cfg, tmp_path / "full")
    assert torch.get_num_threads() == 1  # `threads` applied only during the call (the fixture set 1)
    assert result.adapter_dir == tmp_path / "full" / "model"
    tuned = AutoModelForCausalLM.from_pretrained(result.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, p), (_, q) in zip(tuned.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert changed


def test_split_by_tokens_bounds_micro_batches():
    from fincocktail.training.data import split_by_tokens

    lengths = [10, 50, 20, 40, 30]
    micro = split_by_tokens([0, 1, 2, 3, 4], lengths, max_tokens=100)
    assert sorted(i for m in micro for i in m) == [0, 1, 2, 3, 4]
    assert all(max(lengths[i] for i in m) * len(m) <= 100 for m in micro)
    assert split_by_tokens([0, 1, 2], lengths, None) == [[1, 2, 0]]
    assert split_by_tokens([1], lengths, 10) == [[1]]  # a single long row still goes through


def test_micro_batch_split_gives_the_same_update(tiny_model_dir, tmp_path):
    """Splitting batches by a token budget changes memory, not the gradient (loss is normalised per step)."""
    cfg = config(
        tiny_model_dir, tmp_path, max_steps=4, lora={"r": 4, "alpha": 8, "dropout": 0.0}, batch_size=8, max_batch_tokens=None
    )
    a = run(cfg, tmp_path / "whole")
    b = run(cfg.model_copy(update={"max_batch_tokens": 64}), tmp_path / "split")
    ta, tb = _adapter_tensors(a.adapter_dir), _adapter_tensors(b.adapter_dir)
    for name in ta:
        assert torch.allclose(ta[name], tb[name], atol=1e-5), name
    assert a.tokens_seen == b.tokens_seen


def test_bf16_base_with_fp32_lora(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    cfg = config(tiny_model_dir, tmp_path, precision="bf16", max_steps=2, checkpoint_every=1)
    result = run(cfg, tmp_path / "bf16")
    assert result.final_loss is not None and result.final_loss == result.final_loss  # not NaN
    card = json.loads((tmp_path / "bf16" / "run_card.json").read_text())
    assert card["base_dtype"] == "bfloat16"
    ckpt = load_file(str(tmp_path / "bf16" / "checkpoints" / "step-00000001" / "trainable.safetensors"))
    assert ckpt and all(t.dtype == torch.float32 for t in ckpt.values())  # trainable LoRA weights stay fp32


def test_cli_train_runs_with_named_flags_and_set(tiny_model_dir, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    import fincocktail.cocktail as cocktail_mod
    from fincocktail.cli.train import register

    monkeypatch.setattr(cocktail_mod, "_default_resolver", resolver)
    monkeypatch.setattr(
        "fincocktail.data.contamination.registry_eval_tasks", lambda extra=(): (list(FAKE_TASKS.values()), {})
    )
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:
        pass

    path = tmp_path / "run.yaml"
    path.write_text(
        f"model: {tiny_model_dir}\ncocktail:\n  ingredients: [fa]\nlora:\n  r: 16\nmax_steps: 50\n"
    )
    out = tmp_path / "cli-run"
    args = ["train", str(path), "--max-steps", "3", "--lr", "1e-3", "--set", "lora.r=2", "--out", str(out),
            "--data-dir", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "run_card.json").read_text())
    assert card["steps"] == 3 and card["config"]["lr"] == 1e-3 and card["config"]["lora"]["r"] == 2
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 2


def test_warmup_longer_than_the_run_is_warned(tiny_model_dir, tmp_path, capsys):
    """warmup_steps 50 with max_steps 20 would peak the rate at 2/5 of lr: one warning line."""
    from fincocktail.training.trainer import warmup_warning

    cfg = config(tiny_model_dir, tmp_path, lr=2e-4, warmup_steps=50)
    line = warmup_warning(cfg, 20)
    assert line is not None and "peaks at 8e-05 instead of 0.0002" in line and "\n" not in line
    assert warmup_warning(cfg, 51) is None
    assert warmup_warning(config(tiny_model_dir, tmp_path), 20) is None  # no warmup
    run(config(tiny_model_dir, tmp_path, warmup_steps=50, max_steps=2), tmp_path / "run")
    assert "warmup_steps 50 is not shorter than the run's 2 steps" in capsys.readouterr().err
