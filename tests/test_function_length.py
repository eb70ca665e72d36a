"""No function in src/ is longer than MAX_LINES: past a screen or two a function holds several
steps that deserve names (split it into helpers instead of raising the limit)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fincocktail"
MAX_LINES = 100


def _long_functions(source: str, where: str, max_lines: int = MAX_LINES) -> list[str]:
    """`where:line name (n lines)` for each function (nested and methods too) over `max_lines`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > max_lines:
                found.append(f"{where}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_in_src_is_over_the_limit():
    long = [f for p in sorted(SRC.rglob("*.py")) for f in _long_functions(p.read_text(encoding="utf-8"), str(p.relative_to(SRC)))]
    assert long == []


def test_the_check_catches_a_long_function():
    source = "def long():\n" + "    x = 1\n" * MAX_LINES + "\ndef short():\n    pass\n"
    assert _long_functions(source, "planted.py") == [f"planted.py:1 long ({MAX_LINES + 1} lines)"]
