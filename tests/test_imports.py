"""No import cycles inside `retrerank`: every module under retrerank/ is parsed (ast, nothing is
executed) and its module-level imports of other retrerank modules form a graph that must be acyclic.

Counted: `import retrerank.x` and `from retrerank.x import y` (absolute or relative) anywhere that
runs at import time, including inside module-level `if`/`try` blocks and class bodies; `from
retrerank.x import y` counts as an import of module `retrerank.x.y` when that is a module, else of
`retrerank.x`. Excluded: imports inside functions and methods (they run at call time, e.g. optional
dependencies and heavy loaders) and imports under `if TYPE_CHECKING:` (never run). Importing a
module also runs its packages' `__init__.py` files; those are not counted as edges (they are empty).
"""

from __future__ import annotations

import ast
from pathlib import Path

import retrerank

ROOT = Path(retrerank.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The retrerank modules that module `name` imports when it is imported."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # runs at call time
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in modules else base)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    visit([child for child in children if isinstance(child, (ast.stmt, ast.excepthandler))])

    visit(ast.parse(path.read_text(), str(path)).body)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_retrerank_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert "retrerank.retrieval.pipeline" in graph and graph["retrerank.retrieval.pipeline"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_finds_a_cycle_and_skips_function_and_type_checking_imports(tmp_path):
    package = tmp_path / "retrerank"
    (package / "sub").mkdir(parents=True)
    for init in (package / "__init__.py", package / "sub" / "__init__.py"):
        init.write_text("")
    (package / "a.py").write_text("from retrerank.sub import b\n")
    (package / "sub" / "b.py").write_text("import retrerank.sub.c\n")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from retrerank import a\n"
        "def later():\n    from retrerank import a\n"
    )
    graph = import_graph(package)
    assert graph["retrerank.a"] == {"retrerank.sub.b"} and graph["retrerank.sub.b"] == {"retrerank.sub.c"}
    assert find_cycle(graph) is None
    (package / "sub" / "c.py").write_text("try:\n    from ..a import x\nexcept ImportError:\n    pass\n")
    assert find_cycle(import_graph(package)) == ["retrerank.a", "retrerank.sub.b", "retrerank.sub.c", "retrerank.a"]
