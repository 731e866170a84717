"""The job store's write lock file between processes
(:mod:`ketter.store.writers`): a writer of another Ketter process waits for
it in the kernel, announced, gets in once it is let go, and is never let in
while it is held; a holder killed with SIGKILL lets it go; the wait is
bounded; a program other than Ketter holding SQLite's lock still meets the
busy handler."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from peewee import OperationalError

from ketter.store import open_store
from ketter.store.db import StoreDatabase
from ketter.store.writers import WriterTurns

#: A second process that opens the store, writes one row inside a
#: transaction, says so, and commits when told (a line on stdin).
HOLDER = """
import sys
from ketter.store import open_store
from ketter.store.db import StoreDatabase
db = open_store(sys.argv[1])
db.execute_sql("CREATE TABLE IF NOT EXISTS seen (who TEXT)")
with db.atomic():
    db.execute_sql("INSERT INTO seen VALUES ('holder')")
    print("in", flush=True)
    sys.stdin.readline()
print("out", flush=True)
"""


def _holder(db_path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "in"
    return proc


def _flocks(path: str) -> set[str]:
    """The kinds of ``flock`` held on ``path`` (``READ``, ``WRITE``), from
    /proc/locks, by the file's inode."""
    ino = os.stat(path).st_ino
    kinds = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[5].rsplit(":", 1)[-1] == str(ino):
            kinds.add(fields[3])
    return kinds


def _wait_until(what: str, cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _writer(
    db: StoreDatabase, who: str, done: threading.Event, errors: list[BaseException]
) -> threading.Thread:
    def run() -> None:
        try:
            with db.atomic():
                db.execute_sql("INSERT INTO seen VALUES (?)", (who,))
            done.set()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _store(tmp_path: Path) -> tuple[str, StoreDatabase]:
    """A job store with the ``seen`` table the writers insert into."""
    path = str(tmp_path / "ketter.db")
    db = open_store(path)
    assert isinstance(db, StoreDatabase)
    db.execute_sql("CREATE TABLE IF NOT EXISTS seen (who TEXT)")
    return path, db


def test_a_writer_waits_for_another_process_announced_and_gets_in_after_it(tmp_path: Path) -> None:
    path, db = _store(tmp_path)
    holder, done, errors = _holder(path), threading.Event(), []
    thread = _writer(db, "writer", done, errors)
    try:
        # Waiting in the kernel for the lock file, announced to the others
        # (a shared flock on <db>-writers; stepping back takes an exclusive one).
        _wait_until("the waiting writer announced", lambda: "READ" in _flocks(path + "-writers"))
        assert "WRITE" in _flocks(path + "-write-lock")
        assert not done.is_set() and not errors
        other = WriterTurns(path)
        assert other.step_back() is True  # the others step back
        other.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
    thread.join(30)
    assert done.is_set(), errors
    rows = [r[0] for r in db.execute_sql("SELECT who FROM seen ORDER BY rowid").fetchall()]
    assert rows == ["holder", "writer"]
    assert _flocks(path + "-writers") == set() and _flocks(path + "-write-lock") == set()
    db.close()


def test_a_holder_killed_lets_the_lock_go(tmp_path: Path) -> None:
    path, db = _store(tmp_path)
    holder, done, errors = _holder(path), threading.Event(), []
    thread = _writer(db, "writer", done, errors)
    _wait_until("the waiting writer announced", lambda: "READ" in _flocks(path + "-writers"))
    assert not done.is_set()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    thread.join(30)
    assert done.is_set(), errors
    # The killed holder's transaction never committed.
    assert [r[0] for r in db.execute_sql("SELECT who FROM seen").fetchall()] == ["writer"]
    db.close()


def _waiting_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ketter-write-lock")


def test_the_wait_is_bounded_and_a_given_up_wait_leaves_nothing_held(tmp_path: Path) -> None:
    path = str(tmp_path / "ketter.db")
    open_store(path).close()
    holder, waiter = WriterTurns(path), WriterTurns(path)
    assert holder.take(1.0) is True
    before = _waiting_threads()
    for _ in range(3):  # a holder frozen for long: one thread, one file, however many tries
        with pytest.raises(
            OperationalError, match=r"database is locked: .*ketter\.db-write-lock held"
        ):
            waiter.take(0.2)
    assert _waiting_threads() == before + 1
    assert "READ" not in _flocks(path + "-writers")  # no longer announced
    holder.give_back()
    # The given-up wait gets the lock and lets it go at once.
    _wait_until("the lock file free", lambda: _flocks(path + "-write-lock") == set())
    third = WriterTurns(path)
    assert third.take(5.0) is True
    third.give_back()
    assert waiter.take(5.0) is True
    waiter.give_back()
    for turns in (holder, waiter, third):
        turns.close()


def test_an_exception_while_waiting_leaves_nothing_held(tmp_path: Path) -> None:
    """A signal handler that raises while the writer waits (Ctrl-C in a
    CLI command): the lock is not kept once it comes."""
    path = str(tmp_path / "ketter.db")
    open_store(path).close()
    holder, waiter = WriterTurns(path), WriterTurns(path)
    assert holder.take(1.0) is True

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            waiter.take(30.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    holder.give_back()
    _wait_until("the lock file free", lambda: _flocks(path + "-write-lock") == set())
    time.sleep(0.2)
    assert _flocks(path + "-write-lock") == set()  # and it stays free
    assert holder.take(1.0) is True
    holder.give_back()
    holder.close()
    waiter.close()


def test_a_writer_frozen_while_it_looks_does_not_hold_a_waiting_one(tmp_path: Path) -> None:
    """Another process frozen inside its look (step_back's brief exclusive
    lock on <db>-writers): a writer waiting for the lock file goes
    unannounced instead of waiting for that process."""
    path = str(tmp_path / "ketter.db")
    open_store(path).close()
    holder, waiter = WriterTurns(path), WriterTurns(path)
    assert holder.take(1.0) is True
    looker = os.open(path + "-writers", os.O_RDWR)
    fcntl.flock(looker, fcntl.LOCK_EX)  # frozen in the middle of its look
    try:
        threading.Timer(0.5, holder.give_back).start()
        assert waiter.take(10.0) is True
        waiter.give_back()
    finally:
        os.close(looker)
    holder.close()
    waiter.close()


def test_a_foreign_holder_of_sqlites_lock_meets_the_busy_handler(tmp_path: Path) -> None:
    """``sqlite3`` opened read-write by an operator holds SQLite's lock
    without the file: Ketter's writer takes the file, waits for SQLite's
    lock in the busy handler, and gets in once the shell commits."""
    path, db = _store(tmp_path)
    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    shell.execute("INSERT INTO seen VALUES ('shell')")
    done, errors = threading.Event(), []
    thread = _writer(db, "writer", done, errors)
    try:
        _wait_until(
            "the writer holding the lock file", lambda: "WRITE" in _flocks(path + "-write-lock")
        )
        time.sleep(0.3)  # it stays out while the shell holds SQLite's lock
        assert not done.is_set() and not errors
    finally:
        shell.execute("COMMIT")
        shell.close()
    thread.join(30)
    assert done.is_set(), errors
    rows = [r[0] for r in db.execute_sql("SELECT who FROM seen ORDER BY rowid").fetchall()]
    assert rows == ["shell", "writer"]
    db.close()
