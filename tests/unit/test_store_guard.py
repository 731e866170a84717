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

from ketter.audit.chain import AuditChain
from ketter.engine import Placement, TransferSpec, delete_source, inspect_source
from ketter.engine.context import TransferContext
from ketter.errors import DestinationFull, PermanentError, StoreLost, StoreMissing
from ketter.jobs.claim import ensure_claim
from ketter.jobs.fence import ClaimFence
from ketter.store import open_store
from ketter.store.guard import (
    MARKER,
    StoreGuard,
    ensure_may_create,
    guard_of,
    is_unwritable_error,
    read_status,
)
from ketter.store.sqlite import SqliteJobStore
from tests.contract.seed import put_job


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
        # an OSError says nothing about the store unless it names a file of it
        (OSError(28, "No space left on device"), False),
        # busy is not unwritable: the writer waits its turn
        (OperationalError("database is locked"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_counts_as_unwritable(exc: BaseException, unwritable: bool) -> None:
    assert is_unwritable_error(exc) is unwritable


def _from(cause: BaseException, exc: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "unwritable"),
    [
        # a file of the state disk
        (OSError(28, "No space left on device", "/state/logs/audit.jsonl"), True),
        (OSError(1, "Operation not permitted", "/state/ketter.db-wal"), True),
        # a destination's or a source's: the job's problem (review of #14
        # findings 8 and 17: a chattr +i destination paused the whole node)
        (OSError(1, "Operation not permitted", "/mnt/dst/.ketter-1-a.part"), False),
        (OSError(13, "Permission denied", b"/mnt/share/in"), False),
        (OSError(5, "Input/output error", "/state-other/x"), False),
        # the engine's classify_oserror(e) from e: never followed past it
        (_from(OSError(28, "No space", "/state/x"), DestinationFull("full")), False),
        (_from(OSError(1, "Operation not permitted", "/mnt/dst/x"), PermanentError("x")), False),
    ],
)
def test_only_the_state_disk_counts(exc: BaseException, unwritable: bool) -> None:
    assert is_unwritable_error(exc, state_dir="/state") is unwritable


def test_store_only_operations_count_any_oserror() -> None:
    # The last audit drain of `ketter run` touches the state disk only; an
    # os.write() error carries no file name.
    assert is_unwritable_error(OSError(28, "No space left on device"), store_only=True)
    assert not is_unwritable_error(_from(OSError(28, "x"), DestinationFull("x")),
                                   store_only=True)


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
            # the check before placement and deletion
            ensure_claim(SqliteJobStore(db, AuditChain(node="n1")), 1, "c1")
        path.unlink(missing_ok=True)
        with pytest.raises(StoreLost):  # sticky: lost for this process
            guard.ensure_intact("delete the source")
        assert guard.problem is not None
    finally:
        db.close()


def test_a_batch_trusting_its_claim_read_still_stops_once_the_store_is_replaced(
    tmp_path: Path,
) -> None:
    """A batch's placements trust one read of their claims for a while
    (ketter.jobs.fence); the store's identity is still checked before each."""
    path = tmp_path / "state" / "ketter.db"
    db = open_store(path)
    try:
        store = SqliteJobStore(db, AuditChain(node="n1"))
        claims = {}
        for _ in range(2):
            job_id = put_job(store)
            got = store.claim_next({"r": 0}, hint=job_id, owner="a/1/w", now=100.0, ttl=30.0)
            assert got is not None
            claims[job_id] = got.claim
        first, second = claims
        boot = lambda: 0.0  # noqa: E731  # the boot clock stands still: trusted throughout
        fence = ClaimFence(store, claims, ttl=lambda: 30.0, now=lambda: 110.0, clock=boot)
        fence.ensure(first)  # the read
        shutil.copy(path, tmp_path / "other.db")
        os.replace(tmp_path / "other.db", path)
        with pytest.raises(StoreLost, match="replaced"):
            fence.ensure(second)
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


@pytest.mark.parametrize("folder", ["plain", "odd ?name#with%25 signs"])
def test_probe_never_creates_a_deleted_store(tmp_path: Path, folder: str) -> None:
    # Review of #14 finding 9: the paused node's probe opened a fresh
    # connection with sqlite3.connect(path), which creates a missing file: a
    # store deleted while the node was paused came back empty and "writable".
    # The probe opens it mode=rw (its path quoted for the URI) and checks
    # the identity first.
    state = tmp_path / folder
    state.mkdir()
    db_path = state / "ketter.db"
    sqlite3.connect(db_path).execute("CREATE TABLE t (x)").connection.close()
    guard = StoreGuard(str(db_path))
    guard.write_failed(OperationalError("database or disk is full"))
    assert guard.probe()  # a paused, intact store: the probe may resume it
    guard.write_failed(OperationalError("database or disk is full"))
    db_path.unlink()
    assert guard.probe() is False
    assert not db_path.exists()
    assert guard.lost is not None and "deleted" in guard.lost


def test_fresh_connection_does_not_create_the_store(tmp_path: Path) -> None:
    db_path = tmp_path / "ketter.db"
    sqlite3.connect(db_path).close()
    guard = StoreGuard(str(db_path))
    db_path.unlink()
    guard.identity = None  # a guard that never saw the file: only mode=rw stops it
    guard._fresh_connection_writes()
    assert not db_path.exists()


def test_a_share_error_in_a_route_scan_is_not_the_stores(tmp_path: Path) -> None:
    # The watcher's route.tick and the workers' orphan sweep ask the guard:
    # a share's EACCES/EPERM/EIO must not pause every route of the node.
    guard = StoreGuard(str(tmp_path / "state" / "ketter.db"))
    assert not guard.is_unwritable(PermissionError(13, "Permission denied", "/mnt/share/in"))
    assert not guard.is_unwritable(OSError(5, "Input/output error", "/mnt/share/out/x"))
    assert guard.is_unwritable(OSError(28, "No space", str(tmp_path / "state" / "queue.db")))
    assert guard.is_unwritable(OperationalError("database or disk is full"))
