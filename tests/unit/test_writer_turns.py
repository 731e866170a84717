"""Fair turns at the job store's write lock between processes: a writer
that waits for the lock says so, and the others step back meanwhile."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from ketter.store import open_store
from ketter.store.writers import WriterTurns


def test_a_waiting_writer_is_announced_and_others_step_back(tmp_path: Path) -> None:
    db = open_store(tmp_path / "ketter.db")
    other = WriterTurns(db.database)  # another open file: as another process sees it
    assert other.step_back() is False  # nobody waits: no pause

    # Another process holds the write lock.
    holder = sqlite3.connect(db.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    got_in = threading.Event()

    def writer() -> None:
        with db.atomic():
            db.execute_sql("CREATE TABLE IF NOT EXISTS t (x)")
            got_in.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # The writer waits in the busy handler, announced: others step back.
        deadline = time.monotonic() + 30
        while not other.step_back():
            assert time.monotonic() < deadline, "the waiting writer was never announced"
            time.sleep(0.005)
        assert not got_in.is_set()
    finally:
        holder.execute("COMMIT")
        holder.close()
    thread.join(30)
    assert got_in.is_set()
    assert other.step_back() is False  # done waiting: no longer announced
    other.close()
    db.close()


def test_no_writers_file_means_plain_turns(tmp_path: Path) -> None:
    """A state directory where the file cannot be created (here: a folder
    is in its way) still works, without turns."""
    (tmp_path / "other.db-writers").mkdir()
    turns = WriterTurns(str(tmp_path / "other.db"))
    assert turns.step_back() is False
    with turns.waiting():
        pass
