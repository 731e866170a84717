"""The queue's storage on PostgreSQL (issue #18): huey's own
``PostgresStorage`` (psycopg 3; ``FOR UPDATE SKIP LOCKED`` dequeues and
``LISTEN``/``NOTIFY`` wake-ups) in the job store's database, its tables
prefixed ``huey_``. Delete-on-read as on SQLite: the job row stays the
truth and the sweep re-rings a job whose lease ran out. The doorbell itself
is :mod:`ketter.queue`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from huey import PostgresHuey
from huey.storage import PostgresStorage

from ketter.store.postgres.db import ORDINARY_COMMIT, liveness

#: Advisory-lock key of the queue's table creation (the job store's are in
#: :mod:`ketter.store.postgres.db`).
QUEUE_SCHEMA_LOCK = 0x6B657474_00000003  # "kett"


class PgQueueStorage(PostgresStorage):
    """``PostgresStorage`` with the batch of :meth:`one_transaction` that
    :class:`ketter.queue.Queue` uses: the messages enqueued in it go in
    together when it ends, one statement (a burst of the watcher's costs one
    round trip, not one per job)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()

    @contextlib.contextmanager
    def one_transaction(self) -> Iterator[None]:
        if getattr(self._held, "messages", None) is not None:
            yield  # nested: the outer block sends them
            return
        self._held.messages = []
        try:
            yield
            messages = self._held.messages
        finally:
            self._held.messages = None  # an error in the block: none sent
        if messages:
            self._enqueue_all(messages)

    def _enqueue_all(self, messages: list[tuple[bytes, float]]) -> None:
        """Every message's row, in order, and one ``NOTIFY`` (every waiting
        consumer wakes on it, and each takes messages until none is left)."""
        with self.db() as curs:
            curs.execute(
                f"WITH task AS (INSERT INTO {self.table_task} (queue, data, priority) "
                "SELECT %s, m.data, m.priority FROM unnest(%s::bytea[], %s::double precision[]) "
                "WITH ORDINALITY AS m(data, priority, n) ORDER BY m.n RETURNING id) "
                "SELECT pg_notify(%s, '') FROM (SELECT 1 FROM task LIMIT 1) AS rung",
                (
                    self.name,
                    [data for data, _ in messages],
                    [priority for _, priority in messages],
                    self.channel,
                ),
            )

    def enqueue(self, data: bytes, priority: int | None = None) -> None:
        """Huey's enqueue (the task's row and its ``NOTIFY``) in **one**
        statement, committed on its own: one round trip instead of four
        (``BEGIN``, ``INSERT``, ``pg_notify``, ``COMMIT``). The notification
        goes out when the row is committed, as huey's. Inside
        :meth:`one_transaction`, held until it ends."""
        held = getattr(self._held, "messages", None)
        if held is not None:
            held.append((data, priority or 0))
            return
        with self.db() as curs:
            curs.execute(
                f"WITH task AS (INSERT INTO {self.table_task} (queue, data, priority) "
                "VALUES (%s, %s, %s) RETURNING id) SELECT pg_notify(%s, '') FROM task",
                (self.name, data, priority or 0, self.channel),
            )

    def initialize_schema(self) -> None:
        """Huey's ``CREATE TABLE IF NOT EXISTS``, one process at a time: run
        at once by the watcher and the workers starting together, PostgreSQL
        let both create the table and failed the second on its catalog's
        unique index (``pg_type_typname_nsp_index``; seen in the node's
        end-to-end test). A transaction-scoped advisory lock orders them."""
        with self.db(commit=True, close=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (QUEUE_SCHEMA_LOCK,))
            for sql in self.ddl:
                curs.execute(sql)


class PgDoorbell(PostgresHuey):
    """``PostgresHuey`` without task revocation, which Ketter never uses (a
    job is cancelled in the job store, ``ketter cancel``): huey looks for a
    revocation before each task and deletes it after, two round trips per
    doorbell that can find nothing."""

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("a doorbell is not revoked: cancel the job (`ketter cancel`)")

    def delete(self, key: str) -> bool:
        if key.startswith("r:"):  # a task's revocation (Task.revoke_id): there is none
            return False
        return bool(super().delete(key))


def pg_queue(name: str, dsn: str, *, password: str | None = None, **kwargs: Any) -> PostgresHuey:
    """The Huey app on the PostgreSQL database ``dsn`` (results off)."""
    # An enqueue need not wait for the WAL flush: the job row is the truth,
    # and the sweep rings a job again whose task was lost with a server crash.
    params: dict[str, Any] = {
        "options": f"-c synchronous_commit={ORDINARY_COMMIT}",
        **liveness(dsn),
    }
    if password is not None:
        params["password"] = password
    return PgDoorbell(
        name=name,
        storage_class=PgQueueStorage,
        dsn=dsn,
        results=False,
        store_none=False,
        utc=True,
        **params,
        **kwargs,
    )
