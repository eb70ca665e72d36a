"""Shared fixtures: a tiny random model for unit tests, the real data folder, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored afterwards. Tiny-model matmuls take microseconds,
    so a second thread only adds sync cost, which explodes when the 2 cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a trained BPE tokenizer and a chat template, as a HF folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (../shared/data or FINCOCKTAIL_DATA)."""
    path = Path(os.environ.get("FINCOCKTAIL_DATA", SHARED_DATA))
    if not path.is_dir():
        pytest.fail(f"data folder {path} not found: tests need the shared datasets (set FINCOCKTAIL_DATA)")
    return path


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point FINCOCKTAIL_HOME at a fresh folder so tests never touch the user's cache."""
    home = tmp_path / "fchome"
    monkeypatch.setenv("FINCOCKTAIL_HOME", str(home))
    return home


from real_model import smollm2_dir_fixture  # noqa: E402,F401  (session fixture `smollm2_dir`: the real SmolLM2)


@pytest.fixture(scope="session")
def load_bench():
    """Import a script of bench/ as a module by its name (bench/ is not a package)."""
    import importlib.util
    import sys

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load
