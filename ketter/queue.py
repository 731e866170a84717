"""The queue: a Huey app on SQLite (or PostgreSQL with the job store there,
:mod:`ketter.store.queue_postgres`) that carries job ids, nothing else.

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
The SQLite storage itself (its pragmas, the batch transaction) is part of
the store: :mod:`ketter.store.queue_sqlite`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from huey import Huey

from ketter.config import Config
from ketter.config.store import read_password
from ketter.store.queue_sqlite import DoorbellHuey, QueueStorage

TASK_NAME = "ketter.run_job"
#: Bytes the queue's WAL file is cut back to after a checkpoint.


@dataclass
class Queue:
    """The doorbell: ``ring(job_id)`` enqueues a message for a job."""

    huey: Huey
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


def _not_here(job_id: int) -> None:
    raise RuntimeError(f"job {job_id}: this process only enqueues; run `ketter workers`")


def build_queue(config: Config, handler: Callable[[int], object] | None = None) -> Queue:
    """The Huey app on ``state_dir/queue.db`` (``store.backend: sqlite``) or
    in the job store's PostgreSQL database (``postgresql``), results off.

    ``handler`` runs a job id in the workers process; the watcher and the CLI
    build the queue without one (they only enqueue).
    """
    huey = _huey(config)
    target = handler or _not_here

    # Huey registers a task under "<function's module>.<name>": the wrapper
    # lives here so that the watcher's and the workers' registries agree.
    def run_job(job_id: int) -> None:
        target(job_id)

    task = huey.task(name=TASK_NAME, retries=0)(run_job)
    return Queue(huey=huey, task=task)


def _huey(config: Config) -> Huey:
    if config.store.backend == "postgresql":
        from ketter.store.queue_postgres import pg_queue

        assert config.store.dsn is not None  # the loader requires it
        return pg_queue(
            "ketter", config.store.dsn, password=read_password(config.store.password_file)
        )
    os.makedirs(config.state_dir, exist_ok=True)
    return DoorbellHuey(
        name="ketter",
        storage_class=QueueStorage,
        filename=config.queue_path,
        results=False,
        store_none=False,
        utc=True,
        # A message is small and redundant (see module docstring and
        # QueueStorage): WAL with synchronous=NORMAL is enough.
        journal_mode="wal",
        timeout=60,
    )
