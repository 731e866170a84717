"""The doorbell queue (ketter/queue.py): single and batched rings reach the
handler, each job id once, in order; a batch is one queue transaction,
written by Huey's own ``enqueue``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ketter.config import Config, parse_config
from ketter.queue import build_queue
from tests.integration.serializer_faults import refusing_message


def _config(tmp_path: Path) -> Config:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return parse_config(
        f"state_dir: {tmp_path}/state\nroutes:\n  - {{name: a, source: in, destination: out}}\n",
        base_dir=str(tmp_path),
    )


def test_ring_many_enqueues_one_message_per_job_in_order(tmp_path: Path) -> None:
    config = _config(tmp_path)
    seen: list[int] = []
    queue = build_queue(config, handler=seen.append)
    try:
        queue.ring(7)
        queue.ring_many([11, 12, 13])
        queue.ring_many([])
        assert queue.pending() == 4
        while (task := queue.huey.dequeue()) is not None:
            queue.huey.execute(task)
        assert seen == [7, 11, 12, 13]
        assert queue.pending() == 0
    finally:
        queue.close()


def test_ring_many_is_one_transaction_through_huey_enqueue(tmp_path: Path) -> None:
    # The watcher's burst of new jobs must cost one queue commit, not one per
    # job (docs/performance-watcher.md), while the rows are still written by
    # Huey's own enqueue: a Huey upgrade that breaks this fails here.
    queue = build_queue(_config(tmp_path))
    try:
        statements: list[str] = []
        queue.huey.storage.conn.set_trace_callback(statements.append)
        queue.ring_many(list(range(1, 51)))
        queue.huey.storage.conn.set_trace_callback(None)
        lowered = [s.strip().lower() for s in statements]
        assert [s for s in lowered if s.startswith("begin")] == ["begin exclusive"]
        assert [s for s in lowered if s.startswith("commit")] == ["commit"]
        assert sum(s.startswith("insert into task") for s in lowered) == 50
        assert queue.pending() == 50
        # The storage is usable as before after the batch (same thread, and
        # from another thread: the lock was released).
        queue.ring(51)
        other = threading.Thread(target=queue.ring, args=(52,))
        other.start()
        other.join(timeout=30)
        assert not other.is_alive()
        assert queue.pending() == 52
    finally:
        queue.close()


def test_ring_many_that_fails_enqueues_nothing(tmp_path: Path) -> None:
    # All or none: a failure halfway (here the serializer refuses the third
    # message) rolls the whole batch back; the jobs stay `detected` and the
    # sweep rings for them.
    queue = build_queue(_config(tmp_path))
    try:
        with refusing_message(queue, 3), pytest.raises(OSError):
            queue.ring_many([1, 2, 3, 4])
        assert queue.pending() == 0
        queue.ring_many([5])
        assert queue.pending() == 1
    finally:
        queue.close()
