"""Warmup-stable-decay and pausing a run at a rung (what the racing mixture search does to a proposal).

A run paused at a share of its steps and resumed later must end exactly where the same run
trained straight through ends: same losses, same learning rates, same adapter, same curve.
"""

from __future__ import annotations

import json

import pytest
import torch
from fake_tasks import FAKE_TASKS, resolver
from test_train import _adapter_tensors, config, run
from test_train_curves import _log

from fincocktail.training.trainer import make_scheduler, stop_step, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _lrs(cfg, total):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(cfg, opt, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_wsd_is_flat_then_decays_linearly_over_the_last_share(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, scheduler="wsd", decay_fraction=0.25, warmup_steps=2, lr=0.1)
    lrs = _lrs(cfg, 20)
    assert lrs[:2] == pytest.approx([0.05, 0.1])  # warmup
    assert lrs[2:15] == pytest.approx([0.1] * 13)  # stable to step 15 = 20 - 0.25 * 20
    assert lrs[15:] == pytest.approx([0.1 * (1 - k / 5) for k in range(5)])  # linear to 0 over 5 steps
    assert "decay_fraction" not in config(tiny_model_dir, tmp_path).model_dump()  # at its default: out of run ids


def test_a_paused_run_resumed_later_ends_exactly_like_a_straight_run(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, scheduler="wsd", max_steps=8, checkpoint_every=100, eval_every=100, eval_examples=4)
    straight = run(cfg, tmp_path / "straight")
    rung = tmp_path / "raced"
    first = train(cfg, rung, resume="if_present", stop_at=0.25, progress=False,
                  resolver=resolver, eval_tasks=list(FAKE_TASKS.values()))
    assert first.paused and first.steps == stop_step(0.25, 8) == 2 and first.adapter_dir is None
    card = json.loads((rung / "run_card.json").read_text())
    assert card["status"] == "paused" and card["paused_at_step"] == 2
    _, curve = _log(rung)
    assert [p["step"] for p in curve] == [2]  # the rung's point, and no step-0 point (the base model's)
    again = train(cfg, rung, resume="if_present", stop_at=0.25, progress=False,  # a rerun of the same rung trains nothing
                  resolver=resolver, eval_tasks=list(FAKE_TASKS.values()))
    assert again.paused and again.steps == 2 and [p["step"] for p in _log(rung)[1]] == [2]
    second = train(cfg, rung, resume="if_present", stop_at=0.5, progress=False,
                   resolver=resolver, eval_tasks=list(FAKE_TASKS.values()))
    assert second.paused and second.steps == 4 and second.resumed_from == "step-00000002"
    done = run(cfg, rung, resume=True)
    assert not done.paused and done.steps == 8
    loss_a, curve_a = _log(straight.run_dir)
    loss_b, curve_b = _log(rung)
    assert [(x["step"], x["loss"], x["lr"]) for x in loss_a] == [(x["step"], x["loss"], x["lr"]) for x in loss_b]
    sd_a, sd_b = _adapter_tensors(straight.adapter_dir), _adapter_tensors(done.adapter_dir)
    assert sd_a and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert [p["step"] for p in curve_b] == [2, 4, 8] and [p["step"] for p in curve_a] == [0, 8]
    assert curve_a[-1]["curve"] == pytest.approx(curve_b[-1]["curve"], abs=1e-6)
