"""Learning curves during training (`training.eval_every`, training/curves.py): the same training
with and without them, a fixed sample across steps and runs, resume without gaps or duplicates,
the likelihood values against a hand computation on the tiny model, no live display off a terminal,
and run ids / fingerprints of configs without the fields unchanged."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pytest
import torch
from fake_tasks import FAKE_TASKS, FakeSentiment, resolver
from fault_helpers import kill_9_at_marker
from test_train import KILL_SCRIPT, REPO, TESTS, _adapter_tensors, config, run

from fincocktail.errors import ConfigError
from fincocktail.models.choice import score_choices
from fincocktail.models.forward import Scorer, answer_logprobs
from fincocktail.tasks.base import Example
from fincocktail.training.curves import (
    curve_text,
    live_curves,
    prepare_curve_tasks,
    score_curve_tasks,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(run_dir: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x], [x for x in lines if "curve" in x]


class FakeAnswer(FakeSentiment):
    """A generative task (free-text answers, no choices) with a validation split."""

    kind = "open_qa"
    labels = None

    def load(self, split, data_dir):
        return [Example(id=e.id, input=e.input, target=f"the answer is {e.target}") for e in super().load(split, data_dir)]


def test_curves_leave_training_unchanged_and_log_every_n_steps(tiny_model_dir, tmp_path):
    """Scoring in eval mode with the RNG state restored: the same losses (dropout 0.1 draws from
    torch's RNG) and the same adapter as a run without curves; points at 0, every 3 steps, the end."""
    plain = run(config(tiny_model_dir, tmp_path), tmp_path / "plain")
    cfg = config(tiny_model_dir, tmp_path, eval_every=3, eval_examples=6)
    curved = run(cfg, tmp_path / "curved")
    loss_a, curve_a = _log(plain.run_dir)
    loss_b, curve_b = _log(curved.run_dir)
    assert curve_a == [] and [x["loss"] for x in loss_a] == [x["loss"] for x in loss_b]
    sd_a, sd_b = _adapter_tensors(plain.adapter_dir), _adapter_tensors(curved.adapter_dir)
    assert sd_a and sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert [x["step"] for x in curve_b] == [0, 3, 6, 8]
    for point in curve_b:  # fa and fb: classification; gen: train-only, not drawn
        assert set(point["curve"]) == {"fa", "fb"} and point["curve_metric"] == {"fa": "gold_prob", "fb": "gold_prob"}
        assert all(0 < v < 1 for v in point["curve"].values()) and point["curve_n"] == {"fa": 6, "fb": 6}
    assert curve_b[0]["curve"] != curve_b[-1]["curve"]  # the model moved
    card = json.loads((curved.run_dir / "run_card.json").read_text())
    assert card["curves"]["every"] == 3 and set(card["curves"]["tasks"]) == {"fa", "fb"}


def test_curve_sample_is_the_same_across_steps_runs_and_seeds(tiny_model_dir, tmp_path):
    cards = []
    for seed in (0, 1):
        cfg = config(tiny_model_dir, tmp_path, eval_every=4, eval_examples=5, seed=seed, max_steps=4, eval_tasks_extra=["fb"],
                     cocktail={"seed": seed, "ingredients": ["fa"]})
        res = run(cfg, tmp_path / f"s{seed}")
        cards.append(json.loads((res.run_dir / "run_card.json").read_text())["curves"]["tasks"])
        assert set(cards[-1]) == {"fa", "fb"}  # the extra task's curve beside the cocktail's
    assert cards[0] == cards[1]


def test_resume_continues_the_curve_without_gaps_or_duplicates(tiny_model_dir, tmp_path):
    """Killed (-9) just after the step-4 checkpoint; the resumed run's curve steps are exactly 0, 2, ..., 10."""
    cfg = config(tiny_model_dir, tmp_path, max_steps=10, checkpoint_every=4, epochs=2, batch_size=8, eval_every=2, eval_examples=4)
    whole = run(cfg, tmp_path / "a")
    run_b = tmp_path / "b"
    marker = tmp_path / "checkpoint-written"
    script = KILL_SCRIPT.format(tests=str(TESTS), marker=str(marker), cfg=cfg.model_dump(mode="json"), run_dir=str(run_b))
    kill_9_at_marker(script, marker, {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"})
    _, before = _log(run_b)
    assert [x["step"] for x in before] == [0, 2, 4]  # the step-4 point was written before its checkpoint
    run(cfg, run_b, resume=True)
    losses, curve = _log(run_b)
    steps = [x["step"] for x in curve]
    assert steps == [0, 2, 4, 6, 8, 10] and steps == sorted(set(steps))
    assert [x["step"] for x in losses] == list(range(1, 11))
    _, curve_whole = _log(whole.run_dir)
    for a, b in zip(curve_whole, curve):
        assert a["curve"] == pytest.approx(b["curve"], abs=1e-5)


def test_curve_values_match_a_hand_computation(tiny_model_dir, tmp_path):
    """Choice tasks: softmax over the choices' summed log-probs from the full logits; generative
    tasks: the answer tokens' log-probs from one full forward of prompt + answer, per token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tasks = {"fa": FAKE_TASKS["fa"], "ans": FakeAnswer("ans", {"validation": 7}, seed=5)}
    sample = prepare_curve_tasks(tasks, tmp_path, 5, tok, "instruction", 512)
    got = score_curve_tasks(model, sample, tok.pad_token_id, batch_size=3)

    def full_logprobs(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)

    choice_task, answer_task = sample
    probs = []
    for item, choices, gold in zip(choice_task.choice_items, choice_task.choices, choice_task.golds):
        sums = []
        for c in item.choice_ids:
            lp = full_logprobs(item.prompt_ids + c)
            n = len(item.prompt_ids)
            sums.append(sum(float(lp[n - 1 + j, t]) for j, t in enumerate(c)))
        z = max(sums)
        probs.append(math.exp(sums[choices.index(gold)] - z) / sum(math.exp(s - z) for s in sums))
    assert got["fa"] == pytest.approx(sum(probs) / len(probs), abs=1e-5)
    per_token = []
    for prompt, answer in answer_task.answer_rows:
        lp = full_logprobs(prompt + answer)
        per_token.append(sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer)) / len(answer))
    assert answer_task.metric == "gold_logprob_per_token" and answer_task.n == 5
    assert got["ans"] == pytest.approx(sum(per_token) / len(per_token), abs=1e-5)
    # the shared helpers agree with each other: a one-token answer is a one-choice item
    scorer = Scorer(model)
    prompt, answer = answer_task.answer_rows[0]
    from fincocktail.models.choice import ChoiceItem

    (lp_sum, n), = answer_logprobs(scorer, [(prompt, answer)], tok.pad_token_id)
    (sc,) = score_choices(scorer, [ChoiceItem(prompt, [answer])], tok.pad_token_id)
    assert n == len(answer) and lp_sum == pytest.approx(sc.logprobs[0], abs=1e-4)


def test_no_live_curves_off_a_terminal(tiny_model_dir, tmp_path):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert live_curves(True, Tty()) and not live_curves(True, io.StringIO()) and not live_curves(False, Tty())
    from rich.console import Console

    out = io.StringIO()
    cfg = config(tiny_model_dir, tmp_path, eval_every=4, eval_examples=3, max_steps=4)
    from fincocktail.training.trainer import train

    train(cfg, tmp_path / "r", resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=True,
          console=Console(file=out, force_terminal=False, width=120))
    assert "curves @" not in out.getvalue()  # pytest's stdout is no terminal
    assert curve_text(None) == ""


def test_eval_fields_stay_out_of_dumps_until_set(tiny_model_dir, tmp_path):
    """Configs without the fields keep their fingerprint and sweep run id (the dump omits them)."""
    cfg = config(tiny_model_dir, tmp_path)
    dump = cfg.model_dump(mode="json")
    assert not {"eval_every", "eval_examples", "eval_tasks_extra"} & set(dump)
    with_curves = config(tiny_model_dir, tmp_path, eval_every=5)
    assert with_curves.model_dump(mode="json")["eval_every"] == 5
    assert with_curves.fingerprint() == cfg.fingerprint()  # a cadence, like log_every: resumable
    assert config(tiny_model_dir, tmp_path, eval_examples=8).fingerprint() != cfg.fingerprint()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"eval_every": 0}, "run.yaml: eval_every: Input should be greater than 0"),
        ({"eval_examples": -1}, "run.yaml: eval_examples: Input should be greater than 0"),
        ({"eval_tasks_extra": ["fb", "fb"]}, "run.yaml: eval_tasks_extra: listed twice: fb"),
    ],
)
def test_bad_curve_settings_name_the_field(change, expected, tmp_path):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, tmp_path, **change)
    assert str(err.value).startswith(expected)


def test_a_task_with_a_test_split_only_is_drawn_on_it(tiny_model_dir, tmp_path):
    """cfa / financebench have no validation split: an extra task's curve then reads its test split."""
    from transformers import AutoTokenizer

    from fincocktail.training.curves import curve_task_objects

    test_only = FakeSentiment("tonly", {"test": 9}, seed=6)
    test_only.splits = ("test",)
    tasks = curve_task_objects({"fa": FAKE_TASKS["fa"], "gen": FAKE_TASKS["gen"]}, ["tonly"], lambda t: test_only)
    assert list(tasks) == ["fa", "tonly"]
    sample = prepare_curve_tasks(tasks, tmp_path, 4, AutoTokenizer.from_pretrained(tiny_model_dir), "instruction", 512)
    assert [(t.task_id, t.split, t.n) for t in sample] == [("fa", "validation", 4), ("tonly", "test", 4)]


def test_unknown_or_unscorable_extra_task_fails_before_training(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"eval_tasks_extra.0: unknown task 'nope'"):
        run(config(tiny_model_dir, tmp_path, eval_every=2, eval_tasks_extra=["nope"]), tmp_path / "x")
    with pytest.raises(ConfigError, match=r"eval_tasks_extra.0: .*'mth'"):
        run(config(tiny_model_dir, tmp_path, eval_every=2, eval_tasks_extra=["mth"]), tmp_path / "y")
    assert not (tmp_path / "x" / "adapter").exists()


def test_curves_go_to_mlflow_as_step_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (pip install 'fincocktail[mlflow]')")
    from mlflow.tracking import MlflowClient

    from fincocktail.sweep.store import RunRow
    from fincocktail.sweep.tracking import MlflowTracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    train_dir = tmp_path / "runs" / "single-x" / "train"
    train_dir.mkdir(parents=True)
    lines = [
        {"step": 0, "curve": {"fa": 0.3}, "curve_metric": {"fa": "gold_prob"}, "curve_n": {"fa": 4}, "curve_s": 0.1},
        {"step": 1, "epoch": 0, "loss": 2.0},
        {"step": 2, "epoch": 0, "loss": 1.5},
        {"step": 2, "curve": {"fa": 0.5}, "curve_metric": {"fa": "gold_prob"}, "curve_n": {"fa": 4}, "curve_s": 0.1},
    ]
    (train_dir / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 3, "cur')
    row = RunRow(run_id="single-x", sweep="s", kind="single", label="fa", model="m", train_tasks=("fa",), general=0.0, math=0.0,
                 seed=0, status="done", attempts=1, config={"train": {"lr": 0.01}}, config_sha256="x",
                 run_dir=str(train_dir.parent))
    uri = (tmp_path / "mlruns").as_uri()
    MlflowTracker(uri, "curves").log_run(row, [])
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("curves").experiment_id])
    history = client.get_metric_history(logged.info.run_id, "curve/fa/gold_prob")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.3), (2, 0.5)]


def test_live_curves_show_under_the_bar_on_a_terminal(tiny_model_dir, tmp_path, monkeypatch):
    import sys

    from rich.console import Console

    from fincocktail.training.trainer import train

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    out = io.StringIO()
    cfg = config(tiny_model_dir, tmp_path, eval_every=2, eval_examples=3, max_steps=4)
    train(cfg, tmp_path / "r", resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=True,
          console=Console(file=out, force_terminal=True, width=160))
    assert "curves @ step 4: fa " in out.getvalue()


def test_cli_eval_every_flag_is_an_override():
    from fincocktail.cli.train import _overrides

    assert _overrides([], None, None, None, None, None, None, None, None, False, 25) == ["eval_every=25"]
    assert _overrides(["lr=0.1"], None, None, None, None, None, None, None, None, False) == ["lr=0.1"]


def test_curves_with_a_bf16_base(tiny_model_dir, tmp_path):
    """precision bf16 (frozen bf16 base, fp32 LoRA, autocast): the curve is scored in the training
    forward's precision, is finite, and leaves the losses as they are."""
    plain = run(config(tiny_model_dir, tmp_path, precision="bf16", max_steps=4), tmp_path / "a")
    curved = run(config(tiny_model_dir, tmp_path, precision="bf16", max_steps=4, eval_every=2, eval_examples=4), tmp_path / "b")
    (loss_a, _), (loss_b, curve) = _log(plain.run_dir), _log(curved.run_dir)
    assert [x["loss"] for x in loss_a] == [x["loss"] for x in loss_b]
    assert [x["step"] for x in curve] == [0, 2, 4] and all(0 < v < 1 for x in curve for v in x["curve"].values())


def test_eval_tasks_draws_exactly_the_listed_curves(tiny_model_dir, tmp_path):
    """`eval_tasks` replaces the default (the cocktail's scorable tasks + eval_tasks_extra): a listed task outside
    the cocktail is drawn, a cocktail task not listed is not; an unknown one names the field."""
    cfg = config(tiny_model_dir, tmp_path, eval_every=4, eval_examples=3, max_steps=4, eval_tasks=["fb"],
                 cocktail={"ingredients": ["fa"]})
    res = run(cfg, tmp_path / "only")
    _, curve = _log(res.run_dir)
    assert curve and all(set(p["curve"]) == {"fb"} for p in curve)
    assert "eval_tasks" not in config(tiny_model_dir, tmp_path).model_dump()  # at its default: out of run ids
    with pytest.raises(ConfigError, match="eval_tasks.0"):
        run(config(tiny_model_dir, tmp_path, eval_every=4, eval_tasks=["nope"]), tmp_path / "bad")
