"""Where fincocktail keeps things: the user cache (models, tokenized data) and the data folder.

Both can be redirected by environment variables so tests, CI and shared machines never write
into a user's home by accident.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fincocktail.errors import ConfigError, DataError


# A name that becomes a folder (a sweep's, a mix search's): one path component, like a task id.
# Why: `..`, `.` or `a/b` would put a store or folder outside the one the user named.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NAME_RULE = "one path component: letters, digits, '_', '-' and '.', not starting with '.'"


def check_name(value: str) -> str:
    """`value` if it is safe as one folder name (`NAME_RE`), else a ValueError saying what is expected."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: expected {NAME_RULE}")
    return value


def home() -> Path:
    """Root of fincocktail's cache: `FINCOCKTAIL_HOME`, else `$XDG_CACHE_HOME/fincocktail`."""
    env = os.environ.get("FINCOCKTAIL_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fincocktail"


def models_dir() -> Path:
    return home() / "models"


def data_dir_candidates(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The data folders we look at, in order, each with the reason it is a candidate."""
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("--data-dir", Path(explicit).expanduser()))
        return out
    env = os.environ.get("FINCOCKTAIL_DATA")
    if env:
        out.append(("FINCOCKTAIL_DATA", Path(env).expanduser()))
        return out
    out.append(("./data", Path.cwd() / "data"))
    out.append(("../shared/data", Path.cwd().parent / "shared" / "data"))
    return out


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: `--data-dir`, else `FINCOCKTAIL_DATA`, else `./data`, else `../shared/data`.

    An explicit choice (flag or variable) that does not exist is an error rather than a silent
    fall-through, so a typo never makes us read some other copy of the data.
    """
    candidates = data_dir_candidates(explicit)
    for _, path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = ", ".join(f"{why} ({path})" for why, path in candidates)
    if candidates[0][0] == "--data-dir":  # an option naming nothing is a usage error (exit 2); the variable is environment
        why, path = candidates[0]
        raise ConfigError(f"{why} {path}: no such folder; pass the folder that holds the datasets (see `fincocktail data check`)")
    raise DataError(
        f"no data folder found (tried {tried}); put the datasets in ./data, pass --data-dir DIR, "
        "or set FINCOCKTAIL_DATA (see `fincocktail data check` and `fincocktail data fetch`)"
    )
