"""Device resolution (`models.device`) with `torch.cuda` faked: `auto`, `cuda`, `cuda:N`, `mps`,
the one-line errors, and what a GPU changes in training precision and evaluation dtype.

No test here touches a GPU: this machine has none, so `torch.cuda` is monkeypatched to say
what a GPU machine would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from eval_fakes import lively_model_dir  # noqa: F401 (fixture)
from fincocktail.errors import ConfigError
from fincocktail.models.device import check_device, resolve_device, visible_gpus, wants_gpu


def fake_gpus(monkeypatch, count: int, bf16: bool = True) -> None:
    """torch.cuda as a machine with `count` GPUs (bf16-capable or not) would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16 and count > 0)


def test_auto_is_the_gpu_when_there_is_one(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(" CUDA ") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "gpus", "words"),
    [
        ("cuda", 0, "sees no CUDA GPU"),
        ("cuda:0", 0, "sees no CUDA GPU"),
        ("cuda:2", 2, "numbered 0 to 1"),
        ("tpu", 2, "unknown device"),
        ("cuda:x", 2, "unknown device"),
        ("", 0, "unknown device"),
    ],
)
def test_one_line_errors(monkeypatch, name, gpus, words):
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError) as info:
        resolve_device(name)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_mps_without_mps_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no Apple MPS"):
        resolve_device("mps")


def test_names_and_visible_gpus():
    assert check_device("cuda:3") == "cuda:3" and wants_gpu("auto") and wants_gpu("cuda:0") and not wants_gpu("cpu")
    assert visible_gpus(3, {}) == ["0", "1", "2"]
    assert visible_gpus(2, {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]  # physical ids pass through


# -- training ---------------------------------------------------------------------------------


def _train_config(**over):
    from fincocktail.training.config import parse_train_config

    return parse_train_config({"model": "m", "cocktail": {"ingredients": ["fpb"]}, **over}, source="run.yaml")


def test_training_uses_the_same_resolution(monkeypatch):
    from fincocktail.training.setup import resolve_device as train_device

    fake_gpus(monkeypatch, 0)
    assert train_device(_train_config()) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: cuda: torch sees no CUDA GPU"):
        train_device(_train_config(device="cuda"))
    fake_gpus(monkeypatch, 4)
    assert train_device(_train_config(device="cuda:3")) == torch.device("cuda:3")
    assert train_device(_train_config()) == torch.device("cuda")


def test_training_config_refuses_an_unknown_device_and_keeps_its_fingerprint():
    with pytest.raises(ConfigError, match="run.yaml: device: 'gpu': unknown device"):
        _train_config(device="gpu")
    assert _train_config(device="cuda:1").fingerprint() == _train_config().fingerprint()
    assert _train_config().model_dump(mode="json")["device"] == "auto"  # the dump sweeps hash is unchanged


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_training_precision_auto_on_a_gpu(monkeypatch, bf16, expected):
    """`precision: auto` is bf16 exactly where the GPU reports bf16 (torch.cuda.is_bf16_supported)."""
    from fincocktail.training.setup import resolve_precision

    fake_gpus(monkeypatch, 1, bf16=bf16)
    assert resolve_precision(_train_config(precision="auto"), torch.device("cuda")) == expected


# -- evaluation -------------------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [True, False])
def test_eval_dtype_auto_on_a_gpu(monkeypatch, bf16):
    from fincocktail.evaluation.loading import checked_bf16

    fake_gpus(monkeypatch, 1, bf16=bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert checked_bf16("auto", "cuda") is bf16
    assert checked_bf16("auto", "cuda:0") is bf16
    assert checked_bf16("auto", "cpu") is False
    assert checked_bf16("float32", "cuda") is False


def test_load_for_eval_loads_on_the_resolved_device(monkeypatch, lively_model_dir):
    """`auto` with a (faked) bf16 GPU: the base is loaded for `cuda`, scored in bf16 with an fp32
    reference, as on a bf16 CPU. The weights stay on the CPU here (there is no GPU to move them to)."""
    import fincocktail.evaluation.loading as loading

    fake_gpus(monkeypatch, 1)
    seen: list[str] = []
    real = loading._load_base

    def load_base(name, dtype, device="cpu"):
        seen.append(device)
        return real(name, dtype, "cpu")

    monkeypatch.setattr(loading, "_load_base", load_base)
    loaded = loading.load_for_eval(str(lively_model_dir), dtype="auto", device="auto")
    assert seen == ["cuda"] and loaded.device == "cuda"
    assert loaded.model.dtype == torch.bfloat16 and loaded.reference.dtype == torch.float32
    again = loading.cast_for_eval(loading.load_for_eval(str(lively_model_dir), device="auto"), "auto")
    assert again.reference is not None and again.device == "cuda"


@pytest.mark.parametrize("command", ["eval", "serve"])
def test_cli_device_errors_are_one_line(monkeypatch, capsys, tmp_path, lively_model_dir, command):
    from fincocktail.cli import main

    fake_gpus(monkeypatch, 0)
    args = ["--model", str(lively_model_dir)] + (["--tasks", "fpb", "--out", str(tmp_path / "o")] if command == "eval" else [])
    for device, words in (("tpu", "unknown device"), ("cuda", "sees no CUDA GPU")):
        monkeypatch.setattr(sys, "argv", ["fincocktail", command, *args, "--device", device])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith("error:") and "\n" not in err and words in err, err
    assert not Path(tmp_path / "o" / "run_card.json").exists()
