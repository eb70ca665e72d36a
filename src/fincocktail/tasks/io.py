"""Reading dataset files with errors that name the file and line.

A malformed row must never be skipped silently or surface as a bare KeyError: every reader
here raises `DataError("path:line: what was wrong, what was expected")`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from fincocktail.errors import DataError


def require_file(path: Path, task_id: str) -> Path:
    """Fail with the task and the expected path when a data file is missing."""
    if not path.is_file():
        raise DataError(
            f"task {task_id!r}: data file {path} not found; run `fincocktail data check` "
            "to see which datasets are missing and where they go"
        )
    return path


def read_text(path: Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file (without newlines), with a clear error on a wrong encoding."""
    try:
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid {encoding} text ({exc.reason})") from exc


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    for lineno, line in enumerate(read_text(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _decode(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text; a decoding error names the line it happened on."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid {encoding} text ({exc.reason})") from exc


def read_json(path: Path) -> Any:
    text = _decode(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc


def read_csv(path: Path, delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row dict) for a CSV/TSV file with a header row.

    A row with more values than the header has columns is an error: it is almost always an
    unquoted delimiter inside a text, and reading it would shift or drop part of the text.
    """
    text = _decode(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            extra = row.get(None)  # type: ignore[call-overload]
            if extra:
                raise DataError(
                    f"{path}:{reader.line_num}: {len(reader.fieldnames or []) + len(extra)} values but the header has "
                    f"{len(reader.fieldnames or [])} columns; quote texts that contain {delimiter!r}"
                )
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


def field(row: dict[str, Any], name: str, path: Path, lineno: int, kind: type | tuple[type, ...] = str) -> Any:
    """`row[name]`, or a DataError naming the file, line and field."""
    if name not in row or row[name] is None:
        raise DataError(f"{path}:{lineno}: missing field {name!r}")
    return typed(row[name], kind, f"{path}:{lineno}", name)


def typed(value: Any, kind: type | tuple[type, ...], where: str, name: str) -> Any:
    """`value` when it is a `kind`, else a DataError naming `where`, the field and both types."""
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {name!r} should be {expected}, got {type(value).__name__}")
    return value
