"""The real default model: pulled from PyPI and converted once, then loaded offline."""

from __future__ import annotations

import json
import re
import time

import pytest
from real_model import real_model_home, smollm2_dir_fixture  # noqa: F401  (session fixture `smollm2_dir`)

pytestmark = pytest.mark.slow


def test_converted_folder_is_a_proper_hf_model(smollm2_dir):
    from fincocktail.models import DEFAULT_MODEL, MARKER_FILE, get_model_spec

    spec = get_model_spec(DEFAULT_MODEL)
    marker = json.loads((smollm2_dir / MARKER_FILE).read_text())
    assert marker["name"] == DEFAULT_MODEL and marker["sha256"] == spec.gguf_sha256
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["dtype"] == "float32" and config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500_000_000  # 134.5M float32 parameters
    assert not list(smollm2_dir.glob("*.gguf"))


def test_smollm2_loads_offline_and_answers_in_english(smollm2_dir, monkeypatch):
    import torch

    from fincocktail.models import load_model_and_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(smollm2_dir)
    load_s = time.perf_counter() - start
    print(f"SmolLM2 load time: {load_s:.1f}s")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008

    messages = [
        {
            "role": "user",
            "content": "What is the sentiment of this financial news: 'Operating profit rose to EUR 13.1 mn "
            "from EUR 8.7 mn a year earlier.' Answer positive, negative or neutral, and explain briefly.",
        }
    ]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(f"SmolLM2 says: {text!r}")
    assert text
    assert sum(ch.isascii() for ch in text) / len(text) > 0.95
    words = re.findall(r"[a-z]+", text.lower())
    assert len(words) >= 5
    # a real instruction-tuned model, not noise: common English words appear
    assert {"the", "is", "a", "of", "and", "to", "in", "positive", "sentiment"} & set(words)


def test_second_pull_is_instant_and_does_not_reconvert(smollm2_dir, monkeypatch):
    from fincocktail.models import DEFAULT_MODEL, MARKER_FILE, get_model_spec, pull

    monkeypatch.setenv("FINCOCKTAIL_HOME", str(real_model_home()))
    marker = smollm2_dir / MARKER_FILE
    weights = smollm2_dir / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, marker.read_text())
    start = time.perf_counter()
    result = pull(get_model_spec(DEFAULT_MODEL))
    assert time.perf_counter() - start < 2
    assert not result.converted and result.path == smollm2_dir
    assert (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, marker.read_text()) == before
