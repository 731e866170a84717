"""The database has one boundary (issue #16 item 3): no SQL, no ``database``
object, no ``execute_sql``, no ``sqlite3``/``peewee`` and none of the store's
own modules (its peewee models, its connection code) anywhere in ``ketter/``
outside ``ketter/store/``. The code outside holds a
:class:`ketter.store.port.JobStore` (or the read model) and calls it.

Read through the AST rather than by text, so that the words of a message
("queue database") or a docstring do not count, but a query in any string
does.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ketter"

#: Every module of Ketter outside the store.
CHECKED = sorted(p for p in ROOT.rglob("*.py") if "store" not in p.relative_to(ROOT).parts[:1])

#: The store's insides: its peewee models and its connection code.
INSIDES = {"ketter.store.models", "ketter.store.db", "ketter.store.sqlite.core"}

#: A statement in a string: a verb and the clause that goes with it.
SQL = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\b.*\bSET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|VIEW|INDEX|TRIGGER)|PRAGMA)\b",
    re.IGNORECASE | re.DOTALL,
)
DRIVERS = {"sqlite3", "peewee", "playhouse"}
NAMES = {"database", "execute_sql"}


def offences(path: Path) -> list[str]:
    """Where ``path`` reaches past the store boundary, as ``line: what``."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    # Docstrings are prose about the store ("the update sets ..."), not queries.
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in DRIVERS or a.name in INSIDES]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in DRIVERS or module in INSIDES:
                found.append(f"{line}: from {module} import")
            found += [f"{line}: imports {a.name}" for a in node.names if a.name in NAMES]
        elif isinstance(node, ast.Name) and node.id in NAMES | DRIVERS:
            found.append(f"{line}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in NAMES:
            found.append(f"{line}: .{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docs and SQL.search(node.value)):
            found.append(f"{line}: SQL {node.value[:40]!r}")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_store_access_outside_the_store(path: Path) -> None:
    assert offences(path) == [], f"{path}: move these into ketter/store/ (read model: port.py)"


def test_every_module_outside_the_store_is_checked() -> None:
    names = {str(p.relative_to(ROOT)) for p in CHECKED}
    assert {"jobs/claim.py", "jobs/steps.py", "audit/chain.py", "watcher/enqueue.py",
            "cli/inspect.py", "health.py", "node.py"} <= names
    assert not any(n.startswith("store/") for n in names)


def test_the_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlite3\n"
        "from ketter.store.db import database\n"
        "db.execute_sql('select id from jobs where id = ?')\n"
        "label = 'queue database'  # words, not code\n"
        "from ketter.store.models import Job\n"
    )
    assert sorted(o.split(":")[0] for o in offences(sample)) == ["1", "2", "2", "3", "3", "5"]
