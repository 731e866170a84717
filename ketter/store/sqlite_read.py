"""How the read model (:mod:`ketter.store.sql_read`) opens the SQLite job store.

Only reads, never a write or a write lock: the services keep running while
an operator or a monitoring account asks. Two ways to open:

* :func:`open_read` (the inspect commands, the API) through
  :func:`ketter.store.db.open_readonly`;
* :func:`open_read_raw` (health) through :func:`connect_readonly`,
  a plain ``sqlite3`` connection with its own read-only URI that falls back
  to ``immutable`` only when no ``-wal`` file shows a writer.

Both go through SQLite's own file handling: nothing here opens or closes a
file descriptor on ``ketter.db`` itself, which would drop the POSIX locks of
every SQLite connection of the same process on that file.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from ketter.store.port import StoreUnreadable
from ketter.store.sql_read import (  # noqa: F401  (re-exported: their old home)
    IN_FLIGHT,
    SqlReadStore,
    health_beat,
    iso,
    running_ids,
)


def connect_readonly(
    path: str, *, check_same_thread: bool = True
) -> tuple[sqlite3.Connection, str]:
    """A read-only connection to the SQLite file at ``path`` and how it was opened.

    Raises ``sqlite3.Error`` or ``FileNotFoundError`` when it cannot be read.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist (run `ketter db upgrade`)")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))
    conn = sqlite3.connect(
        uri + "?mode=ro", uri=True, timeout=5.0, check_same_thread=check_same_thread
    )
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn, "read-only"
    except sqlite3.OperationalError:
        conn.close()
        if os.path.exists(path + "-wal"):
            raise  # a writer is (or was, until a crash) active: no safe fallback
    # No -wal file: no writer, and a reader without write access to the folder
    # cannot create the -shm file. Nothing changes under us: read it as is.
    conn = sqlite3.connect(
        uri + "?immutable=1", uri=True, timeout=5.0, check_same_thread=check_same_thread
    )
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return conn, "immutable (no writer running)"


def probe_readonly(path: str) -> str:
    """How the SQLite file at ``path`` opens read-only (the queue database
    check of ``ketter health``); :class:`StoreUnreadable` or ``OSError`` if not."""
    try:
        conn, how = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StoreUnreadable(str(exc)) from exc
    conn.close()
    return how


def history_command(db_path: str) -> str:
    """The shell command an operator runs to read the history with ``sqlite3``
    (printed by ``ketter run``; docs/operations.md has more queries)."""
    return f"sqlite3 {db_path} 'select * from job_history'"


#: The read model's name before it served PostgreSQL too (the API's session
#: still says so): one class answers on every SQL backend.
SqliteReadStore = SqlReadStore


def open_read(path: str) -> SqlReadStore:
    """The read model for the inspect commands
    (:func:`ketter.store.db.open_readonly`)."""
    from ketter.store.db import open_readonly

    db = open_readonly(path)
    return SqlReadStore(db.execute_sql, db.close, "read-only")


def open_read_shared(path: str) -> SqlReadStore:
    """For the API's read connections (:mod:`ketter.api.session`): a plain
    read-only ``sqlite3`` connection that may be used from one thread after
    another (never by two at once: the API lends it to one step of a
    request at a time)."""
    try:
        conn, how = connect_readonly(path, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreUnreadable(str(exc)) from exc
    return SqlReadStore(conn.execute, conn.close, how, errors=(sqlite3.Error,))


def open_read_raw(path: str) -> SqlReadStore:
    """The read model for ``ketter health``: :func:`connect_readonly`; raises
    :class:`StoreUnreadable` or ``OSError`` when it cannot be read."""
    try:
        conn, how = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StoreUnreadable(str(exc)) from exc
    return SqlReadStore(conn.execute, conn.close, how, errors=(sqlite3.Error,))
