"""Fair turns at the job store's write lock between processes: a writer
that waits for the lock says so, and the others step back meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from ketter.store import open_store
from ketter.store.writers import MAX_YIELD, WriterTurns


def test_a_waiting_writer_is_announced_and_others_step_back(tmp_path: Path) -> None:
    """The announcement itself (a writer of another process waiting for the
    write lock file: tests/integration/test_write_lock_file.py)."""
    path = str(tmp_path / "ketter.db")
    waiter, other = WriterTurns(path), WriterTurns(path)  # two open files: two processes
    assert other.step_back() is False  # nobody waits: no pause
    with waiter.waiting():
        started = time.monotonic()
        assert other.step_back() is True
        assert time.monotonic() - started >= MAX_YIELD  # stepped back for as long as allowed
    assert other.step_back() is False  # done waiting: no longer announced
    waiter.close()
    other.close()


def test_no_writers_file_means_plain_turns(tmp_path: Path) -> None:
    """A state directory where the file cannot be created (here: a folder
    is in its way) still works, without turns."""
    (tmp_path / "other.db-writers").mkdir()
    (tmp_path / "other.db-write-lock").mkdir()
    turns = WriterTurns(str(tmp_path / "other.db"))
    assert turns.step_back() is False
    assert turns.take(1.0) is False
    with turns.waiting():
        pass
    db = open_store(tmp_path / "other.db")  # its writers go without the file
    with db.atomic():
        db.execute_sql("CREATE TABLE t (x)")
    assert db.turns.take(1.0) is False
    db.close()
