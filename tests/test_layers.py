"""The import rule: data flows one way (config -> data -> model -> predictions -> metrics -> store
-> report), so a package imports only from packages below it, and no module imports itself back
through others. Imports inside functions count (they still tie the modules together); those
under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fincocktail"

# Bottom to top. A top-level module or package may import from its own package and from lower
# layers only; two in the same layer do not import each other.
LAYERS: list[set[str]] = [
    {"<root>", "errors"},
    {"fileio", "paths", "redact", "quiet", "provenance", "threads"},
    {"answers", "data_catalog"},
    {"metrics", "prompts", "data_fetch"},
    {"tasks"},
    {"cocktail", "contamination", "models"},
    {"training", "evaluation"},
    {"sweep", "compare", "export"},
    {"report"},
    {"search"},
    {"cli"},
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = ("fincocktail",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """fincocktail modules imported anywhere in `tree`, except under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("fincocktail"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            # `from fincocktail.cli import data` imports the module fincocktail.cli.data (a package
            # importing its own submodules is no cycle); any other name comes from node.module.
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fincocktail"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), modules):
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


def test_imports_only_go_down_the_layers():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            a, b = _top(module), _top(target)
            if a != b and RANK[b] >= RANK[a]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_forbid():
    graph = {"fincocktail.metrics.x": {"fincocktail.tasks.y"}, "fincocktail.tasks.y": {"fincocktail.metrics.x"}}
    assert _cycles(graph) == [["fincocktail.metrics.x", "fincocktail.tasks.y"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fincocktail.report import a\n"
                     "def f():\n    from fincocktail.sweep.store import b\n")
    assert _imports(tree, set()) == {"fincocktail.sweep.store"}
