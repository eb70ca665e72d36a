"""Checking and fetching the datasets listed in `data.catalog`.

Fetching writes each file to a temporary name, verifies its sha256, then renames it into
place: an interrupted or failed fetch never leaves a half-written file where a loader would
read it, and a file that is already present and correct is not downloaded again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fincocktail.data.catalog import DATASETS, DataFile, Dataset
from fincocktail.errors import DataError
from fincocktail.plumbing.fileio import sha256_file


@dataclass(frozen=True)
class FileStatus:
    dataset: str
    path: str
    state: str  # "ok" | "missing" | "size-mismatch" | "sha-mismatch" | "present" (not verified)
    size: int | None


def file_status(data_dir: Path, dataset: Dataset, f: DataFile, verify: bool) -> FileStatus:
    path = data_dir / f.path
    if not path.is_file():
        return FileStatus(dataset.name, f.path, "missing", None)
    size = path.stat().st_size
    if size != f.size:
        return FileStatus(dataset.name, f.path, "size-mismatch", size)
    if verify and sha256_file(path) != f.sha256:
        return FileStatus(dataset.name, f.path, "sha-mismatch", size)
    return FileStatus(dataset.name, f.path, "ok" if verify else "present", size)


def check(data_dir: Path, verify: bool = False, only: list[str] | None = None) -> list[FileStatus]:
    return [
        file_status(data_dir, d, f, verify)
        for d in select(only)
        for f in d.files
    ]


def select(only: list[str] | None) -> list[Dataset]:
    if not only:
        return list(DATASETS)
    known = {d.name: d for d in DATASETS}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise DataError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in only]


Downloader = Callable[[str, Path], None]


def http_download(url: str, dest: Path) -> None:
    """Stream `url` into `dest`, failing fast (no hang) when there is no network."""
    import httpx

    timeout = httpx.Timeout(60.0, connect=10.0)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise DataError(f"download of {url} failed: HTTP {resp.status_code}")
            with dest.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise DataError(
            f"cannot download {url} ({type(exc).__name__}: {exc}); without network, copy the "
            "datasets into the data folder by hand (see docs/data.md)"
        ) from exc


def fetch_file(data_dir: Path, f: DataFile, download: Downloader = http_download) -> bool:
    """Make `data_dir/f.path` present and correct. Returns True if it was downloaded."""
    dest = data_dir / f.path
    if dest.is_file() and dest.stat().st_size == f.size and sha256_file(dest) == f.sha256:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        download(f.url, tmp)
        got = sha256_file(tmp)
        if got != f.sha256:
            raise DataError(f"{f.path}: downloaded file has sha256 {got[:12]}..., expected {f.sha256[:12]}... (refused)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return True
