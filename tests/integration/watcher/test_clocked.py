"""The watcher driven step by step with a fake clock: deterministic, no sleeps."""

from __future__ import annotations

import os

import pytest

from tests.integration.watcher.support import write


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_ready_only_after_stable_seconds(make_env, watch: str) -> None:
    env = make_env(ingest={"watch": watch, "stable_seconds": "30s", "poll_interval": "5s"})
    src = env.source("ingest")
    clock = Clock()
    watcher = env.watcher(clock=clock)
    watcher.start()
    try:
        f = write(src / "a.mov", b"1")
        assert watcher.scan_once() == []  # first observation
        clock.now += 29
        assert watcher.tick() == []  # unchanged, but only for 29 s
        with f.open("ab") as fh:
            fh.write(b"2")  # still being written
        clock.now += 5
        assert watcher.tick() == []  # changed: the quiet period restarts
        clock.now += 29
        assert watcher.tick() == []
        clock.now += 1
        created = watcher.tick()
        assert len(created) == 1
        clock.now += 100
        assert watcher.scan_once() == []  # settled: a rescan does not re-enqueue
    finally:
        watcher.close()
    (job,) = env.jobs()
    assert job.source_size == 2 and bytes(job.source_path) == os.fsencode(src / "a.mov")
    assert env.queue.pending() == 1
