"""The queue's storage on SQLite (``state_dir/queue.db``): Huey's own
``SqliteStorage`` with the pragmas and the batch transaction Ketter needs.
The doorbell itself (what a message means, who rings) is :mod:`ketter.queue`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from huey import SqliteHuey
from huey.storage import SqliteStorage

#: The queue's WAL is cut back to this size at each checkpoint.
QUEUE_WAL_LIMIT = 1024 * 1024


class QueueStorage(SqliteStorage):
    """SqliteStorage with ``synchronous=NORMAL``: huey offers FULL (its
    default, one fsync per enqueue — over half of the watcher's time per
    file) or OFF (a power cut may corrupt the file). NORMAL in WAL mode
    survives a killed process and never corrupts; a message lost to a power
    cut is re-rung by the recovery sweep, since the job row is the truth."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        # Checkpoint (and shrink) the WAL every 256 pages, not SQLite's 1000:
        # the queue is tiny, but every message is an insert and a delete, and
        # a 4 MiB WAL is the whole of a small state disk: one that was full
        # filled up again from the queue's WAL right after space came back
        # (issue #14 finding 8).
        conn.execute("pragma wal_autocheckpoint=256")
        conn.execute(f"pragma journal_size_limit={QUEUE_WAL_LIMIT}")
        return conn

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: The thread whose ``one_transaction`` is open, if any (set before
        #: huey's __init__, which creates the tables through ``db()``).
        self._batch_owner: int | None = None
        super().__init__(*args, **kwargs)

    @contextlib.contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Every ``enqueue`` in the block shares one transaction on this
        storage's own connection: one ``begin exclusive`` and one commit for
        a burst of messages, all of them or none (an error rolls them all
        back; the jobs stay ``detected`` and the sweep rings for them).

        Huey 3.5 has no batch enqueue, and writing the ``insert into task``
        ourselves would tie Ketter to the layout of Huey's table. So the rows
        are still written by Huey's own ``enqueue``; only the transaction
        around them is opened here, with Huey's own ``db(commit=True)``,
        which holds the storage lock for the whole block (another thread's
        enqueue or dequeue waits for the commit, as it would for one
        message). tests/integration/test_queue.py counts the transactions,
        so a Huey upgrade whose ``enqueue`` stops going through ``db()``
        fails there instead of deadlocking in production.
        """
        with self.db(commit=True):
            self._batch_owner = threading.get_ident()
            try:
                yield
            finally:
                self._batch_owner = None

    @contextlib.contextmanager
    def db(self, commit: bool = False, close: bool = False) -> Iterator[Any]:
        """Huey's cursor context; inside :meth:`one_transaction` (same
        thread) it hands out a cursor in the open transaction instead of
        beginning and committing one of its own — the storage lock is
        already held, and taking it again would deadlock."""
        if self._batch_owner == threading.get_ident():
            cursor = self.conn.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        with super().db(commit=commit, close=close) as cursor:
            yield cursor


class DoorbellHuey(SqliteHuey):
    """SqliteHuey without revocation: Ketter never revokes a message (a job
    is stopped in the job store, not in the queue), and huey's revocation
    check was one more read of queue.db before every task."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False
