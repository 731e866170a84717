"""The queue: a Huey app on SQLite that carries job ids, nothing else.

Huey is only a doorbell. Its SQLite storage deletes a message the moment a
worker takes it (there is no ack: huey #253, #418), so a worker killed right
after would lose the message. Nothing depends on a message surviving: the job
row in ``ketter.db`` is the truth, a message only says "there is work, job N
may be ready", and the recovery sweep rings again for any due job that no
message covers. Duplicate messages are harmless: claiming is a
compare-and-set on the job row.

It lives here, not in ``workers/``, because both sides use it: detection
(:mod:`ketter.watcher`) and the CLI ring it, the workers process consumes
it, and ringing a doorbell must not import the process that answers it.
:func:`build_queue` is the one place the Huey instance is built from the
config. Ketter writes no SQL into Huey's tables: messages go through
``Huey.enqueue``, which serializes them and calls the storage's ``enqueue``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from huey import SqliteHuey
from huey.storage import SqliteStorage

from ketter.config import Config

TASK_NAME = "ketter.run_job"
#: Bytes the queue's WAL file is cut back to after a checkpoint.
QUEUE_WAL_LIMIT = 1024 * 1024


@dataclass
class Queue:
    """The doorbell: ``ring(job_id)`` enqueues a message for a job."""

    huey: SqliteHuey
    task: Any

    def ring(self, job_id: int, *, delay: float | None = None) -> None:
        """Enqueue ``job_id`` now, or after ``delay`` seconds (a retry)."""
        if delay and delay > 0:
            self.task.schedule(args=(job_id,), delay=delay)
        else:
            self.task(job_id)

    def ring_many(self, job_ids: list[int]) -> None:
        """Enqueue one message per job in a single queue transaction: a burst
        of new jobs costs one commit, not one per job (each commit also made
        a worker's dequeue wait on SQLite's sleeping busy handler)."""
        if not job_ids:
            return
        with self.huey.storage.one_transaction():
            for job_id in job_ids:
                self.huey.enqueue(self.task.s(job_id))

    def pending(self) -> int:
        """Messages waiting in the queue (not counting scheduled ones)."""
        return int(self.huey.pending_count())

    def close(self) -> None:
        self.huey.storage.close()


class _QueueStorage(SqliteStorage):
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


class _DoorbellHuey(SqliteHuey):
    """SqliteHuey without revocation: Ketter never revokes a message (a job
    is stopped in the job store, not in the queue), and huey's revocation
    check was one more read of queue.db before every task."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False


def _not_here(job_id: int) -> None:
    raise RuntimeError(f"job {job_id}: this process only enqueues; run `ketter workers`")


def build_queue(config: Config, handler: Callable[[int], object] | None = None) -> Queue:
    """The Huey app on ``state_dir/queue.db``, results off.

    ``handler`` runs a job id in the workers process; the watcher and the CLI
    build the queue without one (they only enqueue).
    """
    os.makedirs(config.state_dir, exist_ok=True)
    huey = _DoorbellHuey(
        name="ketter",
        storage_class=_QueueStorage,
        filename=config.queue_path,
        results=False,
        store_none=False,
        utc=True,
        # A message is small and redundant (see module docstring and
        # _QueueStorage): WAL with synchronous=NORMAL is enough.
        journal_mode="wal",
        timeout=60,
    )
    target = handler or _not_here

    # Huey registers a task under "<function's module>.<name>": the wrapper
    # lives here so that the watcher's and the workers' registries agree.
    def run_job(job_id: int) -> None:
        target(job_id)

    task = huey.task(name=TASK_NAME, retries=0)(run_job)
    return Queue(huey=huey, task=task)
