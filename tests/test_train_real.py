"""End to end on the real SmolLM2 and the real data: a cocktail of FPB + TFNS + general + math
trains with LoRA for a few steps, and the adapter reloads with plain peft and generates."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_fpb_tfns_general_math_cocktail_trains_smollm2(smollm2_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fincocktail.tasks.prompts import render
    from fincocktail.tasks.registry import get_task
    from fincocktail.training.config import parse_train_config
    from fincocktail.training.trainer import train

    cfg = parse_train_config(
        {
            "model": str(smollm2_dir),
            "cocktail": {
                "seed": 0,
                "ingredients": [{"task": "fpb", "count": 24}, {"task": "tfns", "count": 24}],
                "general": 0.25,
                "math": 0.25,
            },
            "data_dir": str(data_dir),
            "batch_size": 2,
            "max_steps": 2,
            "max_length": 128,
            "lora": {"r": 4, "alpha": 8},
            "lr": 1e-3,
            "checkpoint_every": 1,
        },
        source="e2e",
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.steps == 2 and result.final_loss is not None and result.final_loss == result.final_loss
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    sources = card["data_manifest"]["sources"]
    assert {k: v["examples_per_epoch"][0] for k, v in sources.items()} == {"fpb": 24, "tfns": 24, "general": 12, "gsm8k": 12}
    assert any(p["eval_task"] == "fpb" and p["eval_split"] == "test" for p in card["contamination"]["pairs"])

    tok = AutoTokenizer.from_pretrained(result.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    fpb = get_task("fpb")
    example = fpb.load("test", data_dir)[0]
    ids = tok(render(fpb, example).prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    assert tok.decode(out[0, ids.shape[1] :]).strip() != ""
