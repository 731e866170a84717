"""The job store's guard (ketter/store/guard.py; issue #14 findings 8 and 9):
what counts as "not writable", the refusal to start over with an empty store
where the node has run before, the identity check before irreversible steps,
and the engine's hook before each source deletion. Real files, a real store."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from peewee import OperationalError

from ketter.engine import Placement, TransferSpec, delete_source, inspect_source
from ketter.engine.context import TransferContext
from ketter.errors import StoreLost, StoreMissing
from ketter.jobs.claim import ensure_claim
from ketter.store import open_store
from ketter.store.guard import (
    MARKER,
    StoreGuard,
    ensure_may_create,
    guard_of,
    is_unwritable_error,
    read_status,
)


def _chained(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904 -- the implicit context is the point
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "unwritable"),
    [
        # SQLite's full disk, as peewee raises it
        (OperationalError("database or disk is full"), True),
        # an immutable or read-only store
        (sqlite3.OperationalError("attempt to write a readonly database"), True),
        # COMMIT failed with SQLITE_FULL, SQLite rolled back, peewee's ROLLBACK
        # then failed: the cause is down the chain
        (
            _chained(
                OperationalError("database or disk is full"),
                OperationalError("cannot rollback - no transaction is active"),
            ),
            True,
        ),
        (OSError(28, "No space left on device"), True),
        # busy is not unwritable: the writer waits its turn
        (OperationalError("database is locked"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_counts_as_unwritable(exc: BaseException, unwritable: bool) -> None:
    assert is_unwritable_error(exc) is unwritable


def test_first_store_is_created_without_any_flag(tmp_path: Path) -> None:
    # `make run` on a fresh machine: no marker, no audit log yet.
    db = open_store(tmp_path / "state" / "ketter.db", evidence=[str(tmp_path / "audit.jsonl")])
    db.close()
    assert (tmp_path / "state" / MARKER).is_file()


def test_missing_store_where_the_node_ran_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ketter.db"
    open_store(path).close()
    for name in ("ketter.db", "ketter.db-wal", "ketter.db-shm"):
        (tmp_path / "state" / name).unlink(missing_ok=True)
    with pytest.raises(StoreMissing, match=r"has run before.*--new-store"):
        open_store(path)
    assert not path.exists()
    open_store(path, new_store=True).close()  # said on purpose
    assert path.exists()


def test_an_audit_log_alone_shows_the_node_ran(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "audit.jsonl"
    log.parent.mkdir()
    log.write_text('{"seq": 1}\n')
    with pytest.raises(StoreMissing, match=r"audit\.jsonl"):
        ensure_may_create(str(tmp_path / "state" / "ketter.db"), evidence=[str(log)])


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_irreversible_steps_stop_once_the_store_is_gone(tmp_path: Path, how: str) -> None:
    path = tmp_path / "state" / "ketter.db"
    db = open_store(path)
    try:
        guard = guard_of(db)
        assert guard is not None
        guard.ensure_intact("place")  # still the file we opened
        if how == "deleted":
            path.unlink()
        else:
            shutil.copy(path, tmp_path / "other.db")
            os.replace(tmp_path / "other.db", path)
        with pytest.raises(StoreLost, match=how):
            ensure_claim(1, "c1")  # the check before placement and deletion
        path.unlink(missing_ok=True)
        with pytest.raises(StoreLost):  # sticky: lost for this process
            guard.ensure_intact("delete the source")
        assert guard.problem is not None
    finally:
        db.close()


def test_status_file_is_rewritten_in_place_for_health(tmp_path: Path) -> None:
    db_path = str(tmp_path / "ketter.db")
    sqlite3.connect(db_path).close()
    guard = StoreGuard(db_path)
    guard.start_publishing("workers")
    try:
        status_file = tmp_path / "run" / f"store-{os.getpid()}.json"
        size = status_file.stat().st_size
        assert guard.write_failed(OperationalError("database or disk is full"))
        assert not guard.write_failed(OperationalError("database or disk is full"))
        (status,) = read_status(db_path)
        assert status["unwritable"].startswith("state store not writable: ")
        assert status_file.stat().st_size == size  # no new block needed
        assert guard.write_ok()
        (status,) = read_status(db_path)
        assert status["unwritable"] is None
    finally:
        guard.stop_publishing()
    assert read_status(db_path) == []


class _StopAfter(TransferContext):
    """Plays a job store that disappears after the first source deletion."""

    def __init__(self) -> None:
        super().__init__("7", "c1")
        self.calls = 0

    def before_irreversible(self, what: str) -> None:
        self.calls += 1
        if self.calls > 1:
            raise StoreLost(f"{what}: not done: the job store was deleted")


def test_each_source_deletion_asks_first(tmp_path: Path) -> None:
    src, final = tmp_path / "src" / "reel", tmp_path / "dst" / "reel"
    src.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (src / name).write_bytes(name.encode() * 100)
    shutil.copytree(src, final)
    spec = TransferSpec(mode="move", folders="as_unit")
    plan = inspect_source(spec, os.fsencode(src))
    st = os.lstat(final)
    ctx = _StopAfter()
    with pytest.raises(StoreLost):
        delete_source(spec, plan, Placement(os.fsencode(final), st.st_ino, st.st_dev, False), ctx)
    assert len(os.listdir(src)) == 2  # one deleted, then nothing more
