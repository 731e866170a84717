"""A pytest plugin that records every SQL statement the SQLite job store
issues (``-p tests.integration.store_sql_trace``; the file is named by
``KETTER_SQL_TRACE``): ``sqlite3``'s trace callback on each connection the
store opens. ``test_query_plans.py`` plans the statements a run of the
contract suite really issues, not a hand-kept list of them.

Left out: the migrations (they run once, on a store being upgraded) and the
statements a test itself sends through the store's connection (the caller
is not under ``ketter/``).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from typing import Any

from ketter.store import db as store_db
from ketter.store.db import StoreDatabase

_PATH = os.environ.get("KETTER_SQL_TRACE")
_LOCK = threading.Lock()
_STATE = threading.local()
_KETTER = os.path.dirname(os.path.abspath(store_db.__file__)).rsplit(os.sep, 1)[0]
_connect = StoreDatabase._connect
_PASS_THROUGH = {"execute_sql", "cursor"}
_upgrade = store_db.upgrade


def _caller_is_ketter() -> bool:
    """The nearest frame outside peewee, sqlite3, this file and the store
    database's own pass-through (``StoreDatabase.execute_sql``/``cursor``,
    which a test's statement goes through too) is Ketter's."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name == store_db.__file__ and frame.f_code.co_name in _PASS_THROUGH:
            frame = frame.f_back  # type: ignore[assignment]
            continue
        if name.startswith(_KETTER):
            return True
        if "peewee" not in name and "playhouse" not in name and name != __file__:
            return False
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _record(statement: str) -> None:
    if _PATH is None or getattr(_STATE, "migrating", False) or not _caller_is_ketter():
        return
    with _LOCK, open(_PATH, "a", encoding="utf-8") as out:
        out.write(statement + "\0")  # NUL-separated: SQL may hold newlines


def _traced_connect(self: StoreDatabase) -> sqlite3.Connection:
    conn: Any = _connect(self)
    conn.set_trace_callback(_record)
    return conn  # type: ignore[no-any-return]


def _untraced_upgrade(db: Any) -> list[str]:
    _STATE.migrating = True
    try:
        return _upgrade(db)
    finally:
        _STATE.migrating = False


StoreDatabase._connect = _traced_connect  # type: ignore[method-assign]
store_db.upgrade = _untraced_upgrade
