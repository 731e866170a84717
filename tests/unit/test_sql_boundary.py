"""The database has one boundary (issue #16 item 3): no SQL, no ``database``
object, no ``execute_sql`` and no ``sqlite3``/``peewee`` outside
``ketter/store/``.

Scoped for now to the read side that moved into the read model
(:mod:`ketter.store.sqlite_read`): the inspect commands and ``ketter health``.
Widening ``CHECKED`` to every module under ``ketter/`` outside ``store/`` is
the rest of item 3 (claim, steps, the audit chain, enqueue, the other CLI
commands).

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

#: The modules whose store access moved behind ketter.store.port.
CHECKED = [ROOT / "cli" / "inspect.py", ROOT / "health.py"]

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
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in DRIVERS]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in DRIVERS:
                found.append(f"{line}: from {module} import")
            found += [f"{line}: imports {a.name}" for a in node.names if a.name in NAMES]
        elif isinstance(node, ast.Name) and node.id in NAMES | DRIVERS:
            found.append(f"{line}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in NAMES:
            found.append(f"{line}: .{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and SQL.search(node.value)):
            found.append(f"{line}: SQL {node.value[:40]!r}")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_store_access_outside_the_store(path: Path) -> None:
    assert offences(path) == [], f"{path}: move these into ketter/store/ (read model: port.py)"


def test_the_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlite3\n"
        "from ketter.store.db import database\n"
        "db.execute_sql('select id from jobs where id = ?')\n"
        "label = 'queue database'  # words, not code\n"
    )
    assert [o.split(":")[0] for o in offences(sample)] == ["1", "2", "3", "3"]
