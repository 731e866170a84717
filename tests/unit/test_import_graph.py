"""No import circle among the ketter/ modules (#16 item 8).

Every import counts, at the top of a module or inside a function (a function
level import is how a circle is usually hidden); only ``if TYPE_CHECKING:``
blocks are left out, they never run. A circle still there is in ALLOWED with
its reason, so that no new one can appear and a broken one must leave the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "ketter"

#: Circles not broken yet, each the set of its modules, with why it is there.
ALLOWED: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ketter modules ``name`` imports (the most specific one of a dotted name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            targets = [t for t in targets[:-1] if t in modules] or [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """A path a -> b -> ... -> a inside ``component``, to print."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError("not a cycle")


def test_no_import_circle_among_ketter_modules() -> None:
    graph = _graph()
    circles = _circles(graph)
    new = [c for c in circles if c not in ALLOWED]
    assert not new, "import circle(s):\n" + "\n".join(
        " -> ".join(_one_cycle(graph, c)) for c in new)
    stale = [sorted(c) for c in ALLOWED if c not in circles]
    assert not stale, f"no longer a circle, remove from ALLOWED: {stale}"


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    graph = _graph()
    # relative, at the top of the module
    assert "ketter.engine.renameat" in graph["ketter.engine.placement"]
    assert "ketter.engine.renameat" in graph["ketter.engine.cleanup"]
    # inside a function (oneshot's import of copyfile.buffer_bytes)
    assert "ketter.engine.copyfile" in graph["ketter.jobs.oneshot"]
    # `from pkg import module` is an edge to the module, not to the package
    assert "ketter.engine.direct" in graph["ketter.engine.copyfile"]
