"""The queue's boundaries (issue #16 item 2): detection rings the queue
without importing the workers process, and Ketter writes no SQL into
Huey's tables (messages go through ``Huey.enqueue``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function
    (a lazy import is an import all the same), as absolute dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            # ``from ketter import queue`` imports the module ketter.queue.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _module_file(name: str) -> Path | None:
    stem = ROOT.joinpath(*name.split("."))
    for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _chain_to_workers(start: Path) -> list[str] | None:
    """The import chain from ``start`` to the workers package
    (``ketter.workers``) through Ketter's own modules, or None if there is
    none."""
    seen: set[Path] = set()
    todo: list[tuple[Path, list[str]]] = [(start, [str(start.relative_to(ROOT))])]
    while todo:
        path, chain = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(_imported_modules(path)):
            if name == "ketter.workers" or name.startswith("ketter.workers."):
                return [*chain, name]
            if name == "ketter" or name.startswith("ketter."):
                target = _module_file(name)
                if target is not None:
                    todo.append((target, [*chain, name]))
    return None


def test_detection_does_not_import_the_workers_package() -> None:
    # The watcher only rings the doorbell (ketter/queue.py); importing the
    # workers process from detection would tie the two processes together
    # again (and pull the consumer's imports into the watcher).
    watcher_files = sorted((ROOT / "ketter" / "watcher").rglob("*.py"))
    assert watcher_files
    chains = [c for f in watcher_files if (c := _chain_to_workers(f)) is not None]
    assert chains == [], "ketter/watcher reaches the workers package: " + "; ".join(
        " -> ".join(c) for c in chains
    )


def test_the_queue_module_does_not_import_the_workers_package() -> None:
    assert _chain_to_workers(ROOT / "ketter" / "queue.py") is None


#: SQL that writes Huey's own tables (task, schedule, kv, counter).
HUEY_TABLE_WRITE = re.compile(
    r"\b(insert\s+(or\s+\w+\s+)?into|delete\s+from|update|replace\s+into)\s+"
    r"[\"'`]?(task|schedule|kv|counter)\b",
    re.IGNORECASE,
)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """The string literals of ``path`` that could be SQL: every str constant
    (f-string parts included) except docstrings and other bare expressions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
    ]


def test_no_sql_into_huey_tables() -> None:
    # Huey owns its tables: a hand-written insert would break silently on
    # a Huey upgrade that changes their layout.
    files = [*(ROOT / "ketter").rglob("*.py"), *(ROOT / "workers").rglob("*.py")]
    hits = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in files
        for line, text in _string_literals(path)
        if HUEY_TABLE_WRITE.search(text)
    ]
    assert hits == []
