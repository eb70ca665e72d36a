"""The precision switch and what bf16 training relies on: `auto` detection, the fp32 LM head
over a bf16 body, autocast LoRA, the attention choice, and the packed-bit LoRA dropout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from fake_tasks import FAKE_TASKS, resolver

import fincocktail.models.precision as precision_mod
from fincocktail.training.config import parse_train_config
from fincocktail.training.data import Encoded, collate
from fincocktail.training.dropout import PackedDropout, effective_p, use_packed_dropout
from fincocktail.training.trainer import (
    answer_loss_sum,
    fp32_head_weight,
    resolve_attention,
    resolve_precision,
    train,
)

COCKTAIL = {"seed": 1, "ingredients": ["fa", {"task": "fb", "count": 20}]}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(model_dir: Path, data_dir: Path, **over):
    base = {
        "model": str(model_dir), "cocktail": COCKTAIL, "data_dir": str(data_dir), "batch_size": 4, "lr": 1e-2,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1}, "max_steps": 4, "checkpoint_every": 100,
    }
    base.update(over)
    return parse_train_config(base, source="run.yaml")


def run(cfg, run_dir: Path):
    return train(cfg, run_dir, resolver=resolver, eval_tasks=list(FAKE_TASKS.values()), progress=False)


# -- the switch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "method", "native", "expected"),
    [
        ("fp32", "lora", True, "float32"),
        ("bf16", "lora", False, "bfloat16"),  # asked for explicitly: honoured even if emulated
        ("auto", "lora", True, "bfloat16"),
        ("auto", "lora", False, "float32"),
        ("auto", "full", True, "float32"),  # full fine-tuning keeps fp32 weights
    ],
)
def test_precision_switch(precision, method, native, expected, monkeypatch, tmp_path):
    monkeypatch.setattr("fincocktail.training.setup.native_bf16", lambda device: native)
    cfg = config(Path("m"), tmp_path, precision=precision, method=method)
    assert resolve_precision(cfg, torch.device("cpu")) == expected


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision_mod.native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision_mod.native_bf16("cpu") is True
    assert precision_mod.cpu_features() == {"avx512_bf16": False, "amx_tile": True}


def test_attention_choice(tmp_path):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_attention(config(Path("m"), tmp_path), cpu, "bfloat16") == "eager"
    assert resolve_attention(config(Path("m"), tmp_path), cpu, "float32") is None
    assert resolve_attention(config(Path("m"), tmp_path), gpu, "bfloat16") is None
    assert resolve_attention(config(Path("m"), tmp_path, max_length=4096), cpu, "bfloat16") is None
    assert resolve_attention(config(Path("m"), tmp_path, attention="sdpa"), cpu, "bfloat16") == "sdpa"


# -- fp32 head over a bf16 body ----------------------------------------------------------------


def test_bf16_body_fp32_head_loss_matches_an_independent_fp32_head(tiny_model_dir):
    """The loss uses fp32 logits from the bf16 body's hidden states, answer positions only."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    w32 = model.get_output_embeddings().weight.detach().clone()
    model = model.to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    head = fp32_head_weight(model)
    assert head is not None and head.dtype == torch.float32
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    items = [Encoded(torch.randint(3, vocab, (n,)).tolist(), n_prompt=p) for n, p in [(15, 10), (9, 4), (20, 17)]]
    batch = collate(items, pad_id=0)
    with torch.no_grad():
        loss_sum, count = answer_loss_sum(model, batch.input_ids, batch.labels, head_weight=head)
        hidden = model.model(input_ids=batch.input_ids).last_hidden_state  # bf16
        logits = hidden[:, :-1].float() @ head.T  # every position, then masked: independent of the picking
        labels = batch.labels[:, 1:]
        mask = labels != -100
        expected = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
    assert count == int(mask.sum())
    assert torch.allclose(loss_sum, expected, rtol=1e-5)
    # the bf16-rounded head differs from the copy made before rounding by at most bf16 resolution
    assert torch.allclose(head, w32, rtol=2**-8, atol=1e-6)


def test_fp32_head_weight_is_none_for_fp32_or_trainable_heads(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert fp32_head_weight(model) is None
    model = model.to(torch.bfloat16)  # full fine-tuning: the head trains, so no frozen copy
    assert fp32_head_weight(model) is None


def test_bf16_run_tracks_the_fp32_run(tiny_model_dir, tmp_path):
    """Same data, seed and steps: bf16 autocast LoRA stays close to fp32 and keeps fp32 state."""
    fp32 = run(config(tiny_model_dir, tmp_path, precision="fp32"), tmp_path / "fp32")
    bf16 = run(config(tiny_model_dir, tmp_path, precision="bf16"), tmp_path / "bf16")
    log32 = [json.loads(x) for x in (tmp_path / "fp32" / "train_log.jsonl").read_text().splitlines()]
    log16 = [json.loads(x) for x in (tmp_path / "bf16" / "train_log.jsonl").read_text().splitlines()]
    assert len(log32) == len(log16) == 4
    for a, b in zip(log32, log16):
        assert math.isfinite(b["loss"])
        assert abs(a["loss"] - b["loss"]) <= 0.05 * a["loss"] + 0.02, (a, b)
    card = json.loads((tmp_path / "bf16" / "run_card.json").read_text())
    assert card["base_dtype"] == "bfloat16" and card["attention"] == "eager"
    assert json.loads((tmp_path / "fp32" / "run_card.json").read_text())["base_dtype"] == "float32"
    from safetensors.torch import load_file

    adapter = load_file(str(bf16.adapter_dir / "adapter_model.safetensors"))
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    assert fp32.tokens_seen == bf16.tokens_seen


# -- packed dropout ----------------------------------------------------------------------------


def _reference_drop_mask(n: int, p: float) -> torch.Tensor:
    """Recompute the drop decisions from the raw 64-bit draws with plain integer arithmetic."""
    words = torch.empty(((n + 3) // 4,), dtype=torch.int64).random_(-(2**63), None).tolist()
    threshold = round(p * 65536)
    out = []
    for w in words:
        for k in range(4):  # little-endian 16-bit slices, read as signed, shifted to [0, 65536)
            unsigned = (w >> (16 * k)) & 0xFFFF
            signed = unsigned - 65536 if unsigned >= 32768 else unsigned
            out.append(signed + 32768 < threshold)
    return torch.tensor(out[:n])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_dropout_drops_what_the_bits_say_and_scales_the_rest(dtype):
    x = torch.randn(7, 33).to(dtype) + 3.0  # no zeros in the input
    layer = PackedDropout(0.3).train()
    torch.manual_seed(5)
    y = layer(x)
    torch.manual_seed(5)
    dropped = _reference_drop_mask(x.numel(), 0.3).view(x.shape)
    assert torch.equal(y == 0, dropped)
    scale = 1 / (1 - effective_p(0.3))
    assert torch.allclose(y[~dropped].float(), x[~dropped].float() * scale, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_packed_dropout_rate_gradient_and_eval_mode():
    p = 0.05
    layer = PackedDropout(p).train()
    x = torch.ones(400, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    n = x.numel()
    dropped = int((y == 0).sum())
    assert abs(dropped - n * p) < 5 * math.sqrt(n * p * (1 - p))  # binomial, 5 sigma
    assert abs(effective_p(p) - p) <= 0.5 / 65536
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the backward reuses the forward's mask
    assert torch.allclose(x.grad[y != 0], y[y != 0])  # d(x * scale)/dx = scale = y where x = 1
    layer.eval()
    assert layer(x) is x
    torch.manual_seed(1)
    a = PackedDropout(p).train()(x)
    torch.manual_seed(1)
    assert torch.equal(a, PackedDropout(p).train()(x))  # seeded: resume replays the same masks
    with pytest.raises(ValueError, match="dropout probability"):
        PackedDropout(1.0)


def test_use_packed_dropout_replaces_lora_dropout_only(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    n_layers = model.config.num_hidden_layers
    assert use_packed_dropout(peft_model) == 2 * n_layers
    kinds = [type(m).__name__ for m in peft_model.modules() if isinstance(m, (torch.nn.Dropout, PackedDropout))]
    assert kinds.count("PackedDropout") == 2 * n_layers
    assert use_packed_dropout(peft_model) == 0  # idempotent
