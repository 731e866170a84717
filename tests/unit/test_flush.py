"""Group commit of fsyncs (ketter.runtime.flush): waiting writers share one
flush, and a failed flush is never counted as done."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ketter.engine.hashing import fsync_dir
from ketter.runtime.flush import FlushGroup, group_for


def test_writers_queued_behind_a_running_flush_share_the_next_one() -> None:
    group = FlushGroup()
    inside, go = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> None:
        calls.append("first")
        inside.set()
        assert go.wait(30)

    first = threading.Thread(target=group.flush, args=(group.ticket(), slow))
    first.start()
    assert inside.wait(30)
    # Two writes land while the first flush runs: it started before them and
    # cannot cover them, but one more flush covers both.
    later = [group.ticket(), group.ticket()]
    waiters = [
        threading.Thread(target=group.flush, args=(t, lambda: calls.append("second")))
        for t in later
    ]
    for w in waiters:
        w.start()
    go.set()
    for t in (first, *waiters):
        t.join(30)
        assert not t.is_alive()
    assert calls == ["first", "second"]
    assert group.flushes == 2


def test_a_lone_writer_flushes_every_time() -> None:
    group = FlushGroup()
    calls: list[int] = []
    for n in range(3):
        group.sync(lambda n=n: calls.append(n))
    assert calls == [0, 1, 2]


def test_a_failed_flush_is_not_counted_and_the_next_writer_flushes_again() -> None:
    group = FlushGroup()

    def broken() -> None:
        raise OSError(5, "Input/output error")

    ticket = group.ticket()
    with pytest.raises(OSError):
        group.flush(ticket, broken)
    calls: list[int] = []
    group.flush(ticket, lambda: calls.append(1))  # the same write: flushed now
    assert calls == [1] and group.flushes == 1


def test_fsync_dir_runs_one_real_fsync_per_call_without_contention(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    (tmp_path / "a").write_bytes(b"x")
    before = group_for(folder).flushes
    fsync_dir(folder)
    os.rename(tmp_path / "a", tmp_path / "b")
    fsync_dir(folder)
    assert group_for(folder).flushes == before + 2
