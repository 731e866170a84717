"""Contract: a folder job's manifest (``job_files``) and the batch's shared
commit (one transaction, one savepoint per job)."""

from __future__ import annotations

import contextlib
import re

import pytest

from ketter.store.memory import MemoryJobStore
from ketter.store.port import JobStore
from ketter.store.ports.manifests import ManifestFile
from ketter.store.postgres import PgJobStore
from ketter.store.sqlite import SqliteJobStore

# Bytes order, not text order: a name that is not UTF-8 and one past "z".
NAMES = (b"b/take.wav", b"a.wav", b"\xff-latin1.wav", b"Z.wav", b"a/sub/x.wav")


def _files(names: tuple[bytes, ...] = NAMES) -> list[ManifestFile]:
    return [
        ManifestFile(
            relpath=name,
            relpath_display=name.decode("utf-8", "backslashreplace"),
            size=100 + i,
            mtime_ns=1_000 + i,
            mode=0o100644,
            inode=50 + i,
            ctime_ns=2_000 + i,
        )
        for i, name in enumerate(names)
    ]


def _chain(store: JobStore) -> list[tuple[int, int | None]]:
    """``(seq, job_id)`` of every event, read inside the store (the events
    area's readers are not this file's)."""
    if isinstance(store, (SqliteJobStore, PgJobStore)):
        return [tuple(r) for r in store.db.execute_sql("SELECT id, job_id FROM events ORDER BY id")]
    assert isinstance(store, MemoryJobStore)
    return [(row.id, row.job_id) for row in store.tables.events]


def _events(store: JobStore) -> list[int | None]:
    return [job_id for _, job_id in _chain(store)]


def test_a_manifest_reads_back_in_relpath_order(job_store: JobStore) -> None:
    job_store.replace_manifest(7, _files())
    rows = job_store.manifest(7)
    assert [r.relpath for r in rows] == sorted(NAMES)
    by_name = {f.relpath: f for f in _files()}
    for row in rows:
        f = by_name[row.relpath]
        assert (row.job_id, row.relpath_display, row.size, row.mtime_ns, row.mode) == (
            7,
            f.relpath_display,
            f.size,
            f.mtime_ns,
            f.mode,
        )
        assert (row.inode, row.ctime_ns) == (f.inode, f.ctime_ns)
        assert (row.sha256, row.xxh128, row.xxh64) == (None, None, None)
    assert len({r.id for r in rows}) == len(NAMES)


def test_no_manifest_reads_empty(job_store: JobStore) -> None:
    assert job_store.manifest(1) == []


def test_replacing_a_manifest_drops_the_previous_one_only(job_store: JobStore) -> None:
    job_store.replace_manifest(1, _files())
    job_store.replace_manifest(2, _files((b"other.wav",)))
    job_store.replace_manifest(1, _files((b"new.wav", b"a.wav")))
    assert [r.relpath for r in job_store.manifest(1)] == [b"a.wav", b"new.wav"]
    assert [r.relpath for r in job_store.manifest(2)] == [b"other.wav"]
    job_store.replace_manifest(1, [])
    assert job_store.manifest(1) == []


def test_a_manifest_replaced_in_a_rolled_back_transaction_stays(job_store: JobStore) -> None:
    job_store.replace_manifest(1, _files((b"kept.wav",)))
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        job_store.replace_manifest(1, _files((b"gone.wav",)))
        1 / 0  # noqa: B018
    assert [r.relpath for r in job_store.manifest(1)] == [b"kept.wav"]


def test_a_manifest_read_is_a_copy(job_store: JobStore) -> None:
    job_store.replace_manifest(1, _files((b"a.wav",)))
    (row,) = job_store.manifest(1)
    row.sha256 = "tampered"
    assert job_store.manifest(1)[0].sha256 is None


def test_file_hashes_are_recorded_per_file(job_store: JobStore) -> None:
    job_store.replace_manifest(1, _files())
    job_store.replace_manifest(2, _files((b"a.wav",)))
    job_store.record_file_hashes(
        1,
        [
            (b"a.wav", {"sha256": "s-a", "xxh128": "x-a", "xxh64": "h-a", "md5": "ignored"}),
            (b"\xff-latin1.wav", {"sha256": "s-ff"}),
        ],
    )
    got = {r.relpath: (r.sha256, r.xxh128, r.xxh64) for r in job_store.manifest(1)}
    assert got[b"a.wav"] == ("s-a", "x-a", "h-a")
    assert got[b"\xff-latin1.wav"] == ("s-ff", None, None)
    assert got[b"Z.wav"] == (None, None, None)
    # Another job's manifest with the same relpath is not touched.
    assert job_store.manifest(2)[0].sha256 is None


def test_file_hashes_of_a_file_not_in_the_manifest_record_nothing(job_store: JobStore) -> None:
    job_store.replace_manifest(1, _files())
    with pytest.raises(KeyError):
        job_store.record_file_hashes(
            1, [(b"a.wav", {"sha256": "s-a"}), (b"not-there.wav", {"sha256": "s-x"})]
        )
    assert all(r.sha256 is None for r in job_store.manifest(1))


def test_commit_together_keeps_all_that_succeed(job_store: JobStore) -> None:
    def job(job_id: int) -> None:
        job_store.append_event("detect", now=1.0, job_id=job_id)
        job_store.replace_manifest(job_id, _files((b"f.wav",)))

    outcomes = job_store.commit_together([lambda: job(1), lambda: job(2), lambda: job(3)])
    assert outcomes == [None, None, None]
    assert _events(job_store) == [1, 2, 3]
    assert all(len(job_store.manifest(i)) == 1 for i in (1, 2, 3))


def test_a_refused_job_of_a_shared_commit_leaves_no_raw_write_behind(job_store: JobStore) -> None:
    """A job of a shared commit that records its files' hashes (a bulk
    write) and then fails: its hashes are not kept, the others' are.
    PostgreSQL prepares a shared commit before it takes the write turn; a
    bulk write there once went out on its own, committed, outside the
    transaction."""
    for job_id in (1, 2):
        job_store.replace_manifest(job_id, _files((b"a.wav",)))

    def hashes(job_id: int, *, fail: bool) -> None:
        job_store.append_event("detect", now=1.0, job_id=job_id)
        job_store.record_file_hashes(job_id, [(b"a.wav", {"sha256": f"s-{job_id}"})])
        if fail:
            raise ValueError("refused after its write")

    outcomes = job_store.commit_together(
        [lambda: hashes(1, fail=False), lambda: hashes(2, fail=True)]
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "ValueError"]
    assert job_store.manifest(1)[0].sha256 == "s-1"
    assert job_store.manifest(2)[0].sha256 is None
    assert _events(job_store) == [1]


def test_commit_together_rolls_back_a_refused_one_alone(job_store: JobStore) -> None:
    """The batch's savepoints: a job whose step fails half-way (its event
    already appended) leaves no trace; the others commit, and the chain has
    no gap."""
    refusal = ValueError("claim lost")

    def refused() -> None:
        job_store.append_event("detect", now=1.0, job_id=2)
        job_store.replace_manifest(2, _files((b"f.wav",)))
        raise refusal

    outcomes = job_store.commit_together(
        [
            lambda: job_store.append_event("detect", now=1.0, job_id=1),
            refused,
            lambda: job_store.append_event("detect", now=1.0, job_id=3),
        ]
    )
    assert outcomes == [None, refusal, None]
    assert _events(job_store) == [1, 3]
    assert [seq for seq, _ in _chain(job_store)] == [1, 2]  # no gap
    assert job_store.manifest(2) == []


def test_commit_together_publishes_after_the_one_commit(job_store: JobStore) -> None:
    seen: list[int | None] = []
    job_store.chain.bus.subscribe("*", lambda e: seen.append(e.job_id))

    def first() -> None:
        job_store.append_event("detect", now=1.0, job_id=1)
        assert seen == []  # not before the commit

    job_store.commit_together([first, lambda: job_store.append_event("x", now=1.0, job_id=2)])
    assert seen == [1]  # "x" is not an event name: refused, never published


def test_a_refused_job_of_a_shared_commit_publishes_nothing(job_store: JobStore) -> None:
    """The refused job's event, appended before its refusal, was rolled back
    with its savepoint: no subscriber hears of it (an alert would lie)."""
    seen: list[int | None] = []
    job_store.chain.bus.subscribe("*", lambda e: seen.append(e.job_id))

    def refused() -> None:
        job_store.append_event("detect", now=1.0, job_id=2)
        raise ValueError("claim lost")

    job_store.commit_together(
        [
            lambda: job_store.append_event("detect", now=1.0, job_id=1),
            refused,
            lambda: job_store.append_event("detect", now=1.0, job_id=3),
        ]
    )
    assert seen == [1, 3]


def test_commit_together_is_all_or_nothing_past_an_exception(job_store: JobStore) -> None:
    """A BaseException (a shutdown) is not one job's refusal: nothing holds."""

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job_store.commit_together(
            [lambda: job_store.append_event("detect", now=1.0, job_id=1), stop]
        )
    assert _events(job_store) == []


def test_commit_together_joins_an_open_transaction(job_store: JobStore) -> None:
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        job_store.commit_together([lambda: job_store.append_event("detect", now=1.0, job_id=1)])
        1 / 0  # noqa: B018
    assert _events(job_store) == []


def test_a_failed_insert_in_a_savepoint_does_not_abort_the_batch(job_store: JobStore) -> None:
    """SQL stores: a statement that fails inside one job's savepoint (a NOT
    NULL violation here) is undone with that savepoint; the shared
    transaction commits the others (on PostgreSQL too: the rollback to the
    savepoint ends the failed state)."""
    if not isinstance(job_store, (SqliteJobStore, PgJobStore)):
        pytest.skip("a failed SQL statement is the SQL stores'")

    def failed_insert() -> None:
        job_store.append_event("detect", now=1.0, job_id=2)
        job_store.db.execute_sql("INSERT INTO job_files (job_id) VALUES (2)")

    outcomes = job_store.commit_together(
        [
            lambda: job_store.append_event("detect", now=1.0, job_id=1),
            failed_insert,
            lambda: job_store.append_event("detect", now=1.0, job_id=3),
        ]
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert re.search("not[ -]null", str(outcomes[1]), re.IGNORECASE)
    assert _events(job_store) == [1, 3]


def test_a_write_refused_before_the_turn_is_never_lost_by_an_item_that_catches_it(
    job_store: JobStore,
) -> None:
    """The SQL stores prepare a shared commit before their write turn and
    refuse a write that would go out at once; an item that catches that
    refusal must not leave the commit without its write: the commit runs
    job by job instead, where the write is made."""
    from tests.contract.test_intake import columns

    ids = [job_store.add_job(columns(f"k{i}", source_path=f"/src/{i}".encode())) for i in (1, 2)]

    def noted(job_id: int) -> None:
        job_store.append_event("detect", now=1.0, job_id=job_id)
        # The item's own business; its write must not vanish.
        with contextlib.suppress(Exception):
            job_store.set_error(job_id, "noted")

    outcomes = job_store.commit_together([lambda j=j: noted(j) for j in ids])
    assert outcomes == [None, None]
    assert [job_store.get_job(j).error for j in ids] == ["noted", "noted"]
    assert _events(job_store) == ids
