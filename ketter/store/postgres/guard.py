"""The PostgreSQL job store's guard: what :class:`ketter.store.guard.StoreGuard`
does for the SQLite file, for a database server (issue #18).

There is no file whose identity could change under the process (the server
keeps its own files), so :meth:`check_identity` never reports a lost
store. What can happen is an outage (:mod:`.errors`): the guard records it
as the SQLite store's "not writable" — every route pauses, the workers take
no claim, the watcher records nothing, all stay up — and :meth:`probe`
opens a fresh connection with a backoff until the server answers a write
transaction, then drops the process's broken connections so that each
thread reconnects. The status file that ``ketter health`` reads stays under
``state_dir`` (``status_path``: where the SQLite store would be).
"""

from __future__ import annotations

import logging
from typing import Any

from ketter.store.guard import StoreGuard
from ketter.store.postgres.errors import is_unavailable

log = logging.getLogger(__name__)

#: Seconds a probe waits for the server before it counts as down.
PROBE_TIMEOUT = 5


class PgStoreGuard(StoreGuard):
    """One process's watch over its PostgreSQL job store (thread-safe)."""

    def __init__(self, db: Any, status_path: str, *, where: str) -> None:
        super().__init__(status_path)
        #: No file to watch: nothing can replace the store under us.
        self.identity = None
        self._db = db
        self.where = where

    def check_identity(self) -> str | None:
        return self.lost

    def is_unwritable(self, exc: BaseException) -> bool:
        """The server's outage (:mod:`.errors`) anywhere in ``exc``'s chain."""
        seen: BaseException | None = exc
        for _ in range(8):
            if seen is None:
                return False
            if is_unavailable(seen):
                return True
            seen = seen.__cause__ or seen.__context__
        return False

    def diagnose(self, exc: BaseException | None) -> str:
        text = " ".join(str(exc).split()) if exc is not None else "unknown reason"
        return f"job store database {self.where} unavailable: {text}"

    def probe(self) -> bool:
        """Does the server take a write transaction on a new connection? True
        (and every broken connection of this process dropped) when it does."""
        if self.unwritable is None:
            return True
        try:
            self._db.probe(timeout=PROBE_TIMEOUT)
        except Exception as exc:
            if not self.is_unwritable(exc):
                raise
            self.write_failed(exc)
            return False
        return True
