"""What produced a result: the library versions and the git commit, for every run card.

One helper for training and evaluation, so both run cards name these the same way
(`library_versions`, `git_commit`) and a reader never needs to know which card it holds.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Everything that can change a number: the model stack, the tokenizer, and the API client of
# api evaluations.
LIBRARIES = ("fincocktail", "torch", "transformers", "peft", "safetensors", "tokenizers", "numpy", "httpx")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a result depends on; absent ones are left out."""
    out = {"python": platform.python_version()}
    for pkg in LIBRARIES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the fincocktail checkout, `-dirty` when tracked files have local changes.

    None for an installed package (no checkout) or without git: provenance must never fail a run.
    """
    repo = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    """The run card keys both cards share."""
    return {"library_versions": library_versions(), "git_commit": git_commit()}


__all__ = ["git_commit", "library_versions", "provenance"]
