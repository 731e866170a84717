"""The job store's WAL stays bounded, and comes back under its limit once a
long reader lets go (issue #19 item 4).

Who checkpoints: every connection the store opens (``ketter.store.db.connect``)
runs SQLite's automatic checkpoint after a commit that leaves 1,000 pages or
more in the WAL (PASSIVE: it copies what no reader still needs and never
waits). When a checkpoint has copied the whole WAL, the next writer starts
the WAL file again from its beginning, and its commit cuts the file back to
``journal_size_limit`` (``WAL_SIZE_LIMIT``): without that pragma SQLite reuses
the file but never shrinks it, so one long reader would leave it at its
largest size for good.

A read transaction (an operator's forgotten ``sqlite3 -readonly`` shell)
pins the WAL: nothing after its snapshot can be checkpointed, so the file
grows while it lasts. These tests hold one, write past the limit, let go,
and count the commits until the file is back under the limit. Real files,
the store's own connection (pragmas, ``StoreDatabase`` transactions).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.store.db import WAL_SIZE_LIMIT, StoreDatabase, connect

ROW = 256 << 10  # bytes per transaction (64 pages of 4 KiB)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreDatabase]:
    db = connect(tmp_path / "ketter.db")
    assert isinstance(db, StoreDatabase)
    db.execute_sql("CREATE TABLE filler (b BLOB NOT NULL)")
    yield db
    db.close()


def wal_size(db: StoreDatabase) -> int:
    try:
        return os.stat(db.database + "-wal").st_size
    except FileNotFoundError:
        return 0


def commit(db: StoreDatabase, blob: bytes) -> None:
    """One transaction of ``ROW`` bytes; the table keeps its last 8 rows, so
    the database file stays small and only the WAL takes the volume."""
    with db.atomic():
        db.execute_sql("INSERT INTO filler (b) VALUES (?)", (blob,))
        db.execute_sql("DELETE FROM filler WHERE rowid <= (SELECT MAX(rowid) - 8 FROM filler)")


def write(db: StoreDatabase, nbytes: int) -> list[int]:
    """``nbytes`` in transactions of ``ROW``; the WAL's size after each."""
    blob = os.urandom(ROW)
    sizes = []
    for _ in range(nbytes // ROW):
        commit(db, blob)
        sizes.append(wal_size(db))
    return sizes


def hold_reader(path: str) -> sqlite3.Connection:
    """A read transaction with its snapshot taken, as ``sqlite3 -readonly``
    after ``BEGIN; SELECT …;``."""
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM filler").fetchone()
    return reader


def test_without_a_long_reader_the_wal_stays_small(store: StoreDatabase) -> None:
    """Twice the limit written: the automatic checkpoints keep up and the
    file never grows near the limit (a few MiB: 1,000 pages and a commit)."""
    sizes = write(store, 2 * WAL_SIZE_LIMIT)
    assert max(sizes) <= 8 << 20, f"WAL reached {max(sizes) / 2**20:.1f} MiB"


def test_the_wal_is_cut_back_once_a_long_reader_lets_go(store: StoreDatabase) -> None:
    reader = hold_reader(store.database)
    pinned = write(store, WAL_SIZE_LIMIT + (32 << 20))
    # The reader held the WAL: it grew past the limit (else this test shows nothing).
    assert pinned[-1] > WAL_SIZE_LIMIT + (16 << 20), f"{pinned[-1] / 2**20:.1f} MiB"
    reader.execute("END")
    reader.close()

    blob = os.urandom(ROW)
    after = []
    for _ in range(10):
        commit(store, blob)
        after.append(wal_size(store))
        if after[-1] <= WAL_SIZE_LIMIT:
            break
    # The commit after the release checkpoints the whole WAL; the next one
    # starts it again and cuts the file back to journal_size_limit.
    assert after[-1] <= WAL_SIZE_LIMIT, [f"{s / 2**20:.1f} MiB" for s in after]
    assert len(after) <= 3, [f"{s / 2**20:.1f} MiB" for s in after]
    # And it stays there under more load.
    later = write(store, WAL_SIZE_LIMIT)
    assert max(later) <= WAL_SIZE_LIMIT, f"{max(later) / 2**20:.1f} MiB"
    # Nothing was lost on the way: every commit is there (the last 8 rows kept).
    count, last = store.execute_sql("SELECT COUNT(*), MAX(rowid) FROM filler").fetchone()
    assert (count, last) == (8, len(pinned) + len(after) + len(later))


def test_a_reader_in_another_process_pins_and_releases_the_wal(store: StoreDatabase) -> None:
    """The same with the operator's real ``sqlite3 -readonly`` shell."""
    import shutil
    import subprocess

    sqlite3_cli = shutil.which("sqlite3")
    assert sqlite3_cli, "the sqlite3 command is a dependency of the operations docs"
    shell = subprocess.Popen(
        [sqlite3_cli, "-readonly", store.database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdin is not None and shell.stdout is not None
    try:
        shell.stdin.write("BEGIN;\nSELECT COUNT(*) FROM filler;\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip().isdigit()  # the snapshot is taken
        pinned = write(store, WAL_SIZE_LIMIT + (32 << 20))
        assert pinned[-1] > WAL_SIZE_LIMIT + (16 << 20), f"{pinned[-1] / 2**20:.1f} MiB"
        shell.stdin.write("END;\n.quit\n")
        shell.stdin.close()
        assert shell.wait(60) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    after = write(store, 3 * ROW)
    assert after[-1] <= WAL_SIZE_LIMIT, [f"{s / 2**20:.1f} MiB" for s in after]
