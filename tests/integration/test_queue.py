"""The doorbell queue (workers/app.py): single and batched rings reach the
handler, each job id once, in order."""

from __future__ import annotations

from pathlib import Path

from ketter.config import parse_config
from workers.app import build_queue


def test_ring_many_enqueues_one_message_per_job_in_order(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    config = parse_config(
        f"state_dir: {tmp_path}/state\nroutes:\n  - {{name: a, source: in, destination: out}}\n",
        base_dir=str(tmp_path),
    )
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
