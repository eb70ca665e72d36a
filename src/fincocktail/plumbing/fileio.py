"""One place for writing files safely and reading config files.

Several modules used to carry their own copy of these helpers, and the copies drifted (one
forgot the parent folder, one used a temp name two processes could share, two formatted
validation errors differently). Keeping them here means every JSON file a run leaves behind is
written the same crash-safe way, and every config file fails with the same one-line message.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fincocktail.errors import ConfigError, FincocktailError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to a temp file next to `path`, then rename: a crash never leaves half a file.

    The temp file is unique (mkstemp: `.NAME.XXXXXXXX`), so two processes writing the same file
    never share one, and it sits in the same folder so `os.replace` is a rename on one
    filesystem (atomic). A killed write leaves only such a dot-file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(
    path: str | os.PathLike,
    payload: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
) -> None:
    """`payload` as indented JSON, written with `write_text_atomic`."""
    text = json.dumps(payload, indent=2, default=default, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n"
    write_text_atomic(path, text)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (dataset files run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_name(name: str, empty: str = "model") -> str:
    """`name` as one file or folder name: anything but letters, digits and . _ - becomes _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or empty


# Values a YAML document may expand to once its aliases (`*a`) are copied out. Why: a few
# nested anchors (`b: &b [*a, *a, ...]`) expand to billions of values, and whatever copies or
# serialises the config (overrides, run cards, hashes) would then eat all memory. Real config
# files hold hundreds of values.
MAX_YAML_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `node` stands for with every alias expanded (shared nodes counted each time)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:  # an anchor inside itself (`&a [*a]`): it expands without end
        return MAX_YAML_VALUES + 1
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_YAML_VALUES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def _safe_load_bounded(text: str, path: Path) -> Any:
    """`yaml.safe_load`, but a document whose aliases expand past `MAX_YAML_VALUES` is refused before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_YAML_VALUES:
            raise ConfigError(
                f"{path}: its YAML aliases (*name) expand to more than {MAX_YAML_VALUES} values; "
                "write the values out or use fewer nested aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse an output folder that is (or lies under) an existing file, before any work starts.

    Why: `mkdir` would fail only after a model load or a training run, with a traceback.
    """
    given = Path(path).expanduser()
    for candidate in (given, *given.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise ConfigError(f"{option} {path}: {candidate} is a file, not a folder; name a new or existing folder")
            return


def load_yaml(path: str | os.PathLike) -> Any:
    """`yaml.safe_load` a file; a missing file, bad encoding, syntax error or alias bomb is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return _safe_load_bounded(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid utf-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML ({problem})") from None


def format_validation_error(
    exc: ValidationError,
    source: str,
    *,
    label: Callable[[str], str] = lambda loc: loc,
    plain_messages: bool = False,
) -> str:
    """`source: field.path: message` for the first problem, plus how many more there are.

    The one formatter of every config error: YAML configs (`field.path`), user task files
    (`label` quotes it: `field 'x'`), command-line options (`label` makes it `--x`, no source).
    Pydantic's internal `function-...` location parts (from wrap validators) are dropped: they
    name our code, not anything the user wrote. Unknown and missing fields are said in our
    words unless `plain_messages` keeps pydantic's.
    """
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    if not plain_messages and err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif not plain_messages and err["type"] == "missing":
        msg = "required field missing"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = ": ".join(part for part in (source, label(loc) if loc else "") if part)
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


class FolderLock:
    """An exclusive `flock` on `folder/name`, held until `close()` (or the process dies, even by kill -9).

    Two train, eval or sweep processes writing one folder would interleave checkpoints,
    predictions and cards; the second one gets a one-line error naming the holder instead.
    """

    def __init__(self, folder: str | os.PathLike, name: str, what: str, fix: str = "wait for it or use another --out"):
        import fcntl

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        self._handle = open(self.path, "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self._handle.close()
            raise FincocktailError(f"{folder}: {what} is already running there ({holder}); {fix}") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lock_held(folder: str | os.PathLike, name: str) -> bool:
    """Whether some process holds `FolderLock(folder, name)` right now."""
    import fcntl

    path = Path(folder) / name
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def damaged_file_errors() -> tuple[type[BaseException], ...]:
    """What loading a truncated, corrupt or hostile weights / pickle file raises.

    safetensors' own error derives from plain Exception, and a refused pickle from
    UnpicklingError, so `except OSError` alone lets them escape as tracebacks.
    """
    import pickle
    import zipfile

    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError,
                                         zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, TypeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(errors)


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (library errors often carry pages of advice)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the device ran out of space (or quota).

    Why the text test as well as errno: safetensors (Rust) reports a full disk as a
    SafetensorError whose message carries "No space left on device" / "os error 28", not an OSError.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded"))


def disk_full_message(folder: str | os.PathLike) -> str:
    """The one line for a full disk: the folder written, and what to do."""
    return f"{folder}: no space left on the device (disk full or over quota) while writing there; free space or choose another --out"


__all__ = [
    "FolderLock", "check_out_dir", "damaged_file_errors", "disk_full_message", "first_line", "is_disk_full", "format_validation_error", "load_yaml", "lock_held",
    "safe_name", "sha256_file", "validate_mapping", "write_json_atomic", "write_text_atomic",
]


M = TypeVar("M", bound=BaseModel)


def validate_mapping(model: type[M], data: Any, source: str, expected: str) -> M:
    """`model` validated from `data`; anything else is one ConfigError naming `source` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with {expected}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
