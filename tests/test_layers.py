"""The import rule: data flows one way (config -> data -> model -> predictions -> metrics -> store
-> report), so a package imports only from packages below it, and no module imports itself back
through others. Every import counts: inside functions (they still tie the modules together),
under `if TYPE_CHECKING:` (a type-only import still couples the layers and hides a cycle that a
later runtime import would close), and relative ones (`from .x import y`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fincocktail"
LAYOUT_DOC = ROOT / "docs" / "code-layout.md"

# Bottom to top. A top-level module or package may import from its own package and from lower
# layers only; two in the same layer do not import each other.
LAYERS: list[set[str]] = [
    {"<root>", "errors"},
    {"plumbing"},
    {"metrics"},
    {"tasks"},
    {"cocktail", "data", "models"},
    {"training", "evaluation"},
    {"sweep", "compare", "export", "serving"},
    {"report"},
    {"search"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = ("fincocktail",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a `from ... import` names, relative ones resolved against `importer`."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]  # `.` in a module means its package; in a package's __init__, the package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.AST, modules: set[str], importer: str = "", is_package: bool = False) -> set[str]:
    """fincocktail modules imported anywhere in `tree` (type-only and relative imports included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            if not module.startswith("fincocktail"):
                continue
            subs = {f"{module}.{a.name}" for a in node.names} & modules
            # `from fincocktail.cli import data` imports the module fincocktail.cli.data (a package
            # importing its own submodules is no cycle); any other name comes from the module.
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fincocktail"))
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return _graph_of({name: path.read_text(encoding="utf-8") for name, path in files.items()},
                     {name for name, path in files.items() if path.name == "__init__.py"})


def _graph_of(sources: dict[str, str], packages: set[str]) -> dict[str, set[str]]:
    """The import graph of the modules in `sources` (module name -> source text)."""
    modules = set(sources)
    graph: dict[str, set[str]] = {}
    for name, source in sources.items():
        targets = set()
        for imported in _imports(ast.parse(source), modules, name, name in packages):
            while imported not in modules and "." in imported:  # a name inside a module
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_every_top_level_module_has_a_layer():
    tops = {_top(m) for m in _graph()}
    assert tops - set(RANK) == set(), "add new top-level modules to LAYERS"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go sideways or up the layers, as `importer -> imported`."""
    upward = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = _top(module), _top(target)
            if a != b and RANK[b] >= RANK[a]:
                upward.append(f"{module} -> {target}")
    return upward


def test_imports_only_go_down_the_layers():
    assert _upward(_graph()) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_forbid():
    graph = {"fincocktail.metrics.x": {"fincocktail.tasks.y"}, "fincocktail.tasks.y": {"fincocktail.metrics.x"}}
    assert _cycles(graph) == [["fincocktail.metrics.x", "fincocktail.tasks.y"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fincocktail.report import a\n"
                     "def f():\n    from fincocktail.sweep.store import b\n")
    assert _imports(tree, set()) == {"fincocktail.report", "fincocktail.sweep.store"}


# A planted layer: metrics (layer 2) with one type-only and one relative import of tasks (layer 3).
_PLANTED = {
    "fincocktail.tasks": "",
    "fincocktail.tasks.base": "class Task: ...\n",
    "fincocktail.metrics": "",
    "fincocktail.metrics.typed": (
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from fincocktail.tasks.base import Task\n"
        "def score(task: Task) -> float:\n    return 0.0\n"
    ),
    "fincocktail.metrics.relative": "from ..tasks.base import Task\n",
}


def test_a_planted_type_only_upward_import_is_reported():
    graph = _graph_of(_PLANTED, {"fincocktail.tasks", "fincocktail.metrics"})
    assert "fincocktail.metrics.typed -> fincocktail.tasks.base" in _upward(graph)


def test_a_planted_relative_upward_import_is_reported():
    graph = _graph_of(_PLANTED, {"fincocktail.tasks", "fincocktail.metrics"})
    assert "fincocktail.metrics.relative -> fincocktail.tasks.base" in _upward(graph)


def test_relative_imports_resolve_against_module_and_package():
    node = ast.parse("from .b import c").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _absolute(node, "fincocktail.tasks.a", is_package=False) == "fincocktail.tasks.b"
    assert _absolute(node, "fincocktail.tasks", is_package=True) == "fincocktail.tasks.b"


def _documented_layers(text: str) -> list[set[str]]:
    """The layer table of docs/code-layout.md: rows `| n | `module`, ... | what they hold |`."""
    rows = re.findall(r"^\| (\d+) \| ([^|]*) \|", text, flags=re.MULTILINE)
    assert [int(n) for n, _ in rows] == list(range(len(rows))), "layer rows are numbered 0, 1, ... in order"
    return [set(re.findall(r"`([^`]+)`", modules)) for _, modules in rows]


def test_the_layout_doc_shows_this_layer_table():
    # `<root>` is the package's own __init__, which the doc's table does not list.
    assert _documented_layers(LAYOUT_DOC.read_text(encoding="utf-8")) == [layer - {"<root>"} for layer in LAYERS]


def test_the_doc_check_catches_a_drifted_table():
    drifted = "| 0 | `errors` | x |\n| 1 | `fileio`, `tasks` | y |\n"
    assert _documented_layers(drifted) == [{"errors"}, {"fileio", "tasks"}]
    assert _documented_layers(drifted) != [layer - {"<root>"} for layer in LAYERS]
