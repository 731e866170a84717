"""The read model's contract (huey's ``StorageTests`` shape): one base class
holds the tests, and each implementation of
:class:`ketter.store.port.JobReadStore` is a subclass that builds its store
from the same rows (``FIXTURE``). A new backend (PostgreSQL) adds a subclass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ketter.store import open_store
from ketter.store.memory_read import MemoryReadStore
from ketter.store.models import Event, Heartbeat, Job, JobFile, RouteStatus
from ketter.store.port import (
    HeartbeatFact,
    JobFilter,
    JobReadStore,
    PausedRoute,
    RouteStateCount,
    StateCount,
)
from ketter.store.postgres.db import open_store as open_pg_store
from ketter.store.postgres.read import open_read as open_pg_read
from ketter.store.sqlite_read import open_read, open_read_raw, open_read_shared

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MiB = 2**20


def _job(job_id: int, route: str, state: str, **extra: Any) -> dict[str, Any]:
    row = {
        "id": job_id,
        "route": route,
        "mode": "copy",
        "kind": "file",
        "source_path": f"/in/{job_id}.mov".encode(),
        "source_display": f"/in/{job_id}.mov",
        "dest_display": f"/out/{job_id}.mov",
        "source_key": f"key{job_id}",
        "size": 1000 * job_id,
        "file_count": 1,
        "state": state,
        "attempt": 1,
        "node": "n1",
        "created_at": NOW - 100 + job_id,
        "updated_at": NOW - 50 + job_id + 0.25,
    }
    row.update(extra)
    return row


def _event(seq: int, job_id: int | None, event: str, ts: float, **extra: Any) -> dict[str, Any]:
    row = {
        "id": seq,
        "job_id": job_id,
        "ts": ts,
        "event": event,
        "route": "a",
        "from_state": None,
        "to_state": None,
        "attempt": 1,
        "node": "n1",
        "pid": 42,
        "user": "ketter",
        "details": "{}",
        "prev_hash": "0" * 64,
        "hash": f"{seq:064d}",
    }
    row.update(extra)
    return row


#: Job 1 completed (verified copy 2 s, 4 MB), 2 transferring on a live lease,
#: 3 transferring on an expired lease, 4 detected (waiting), 5 failed, 6 a completed folder.
FIXTURE: dict[str, list[dict[str, Any]]] = {
    "jobs": [
        _job(1, "a", "completed", started_at=NOW - 90.5, completed_at=NOW - 80.125,
             sha256="ab" * 32, transfer_seconds=2.0, transfer_bytes=4_000_000),
        _job(2, "a", "transferring", size=768 * MiB, lease_owner="h:1:w", claim="c2",
             lease_expires_at=NOW + 60, bytes_done=384 * MiB, progress_at=NOW - 6),
        _job(3, "b", "transferring", lease_owner="h:1:w", claim="c3", lease_expires_at=NOW - 1,
             bytes_done=10, progress_at=NOW - 30),
        _job(4, "b", "detected", next_attempt_at=NOW + 30.5),
        _job(5, "a", "failed", error="checksum mismatch"),
        _job(6, "b", "completed", kind="folder", file_count=2, size=300),
    ],
    "events": [
        _event(1, 1, "create", NOW - 99, to_state="detected"),
        _event(2, 1, "claim", NOW - 90.5, from_state="detected", to_state="claimed",
               details=json.dumps({"owner": "h:1:w"})),
        _event(3, 1, "complete", NOW - 80.125, from_state="verifying", to_state="completed"),
        _event(4, 2, "claim", NOW - 10, from_state="detected", to_state="claimed"),
        _event(5, None, "route_pause", NOW - 5, details=json.dumps({"reason": "down"})),
        _event(6, 2, "resume", NOW - 8, details=json.dumps({"bytes": 0})),
    ],
    "files": [
        {"id": 1, "job_id": 6, "relpath": b"b.wav", "relpath_display": "b.wav", "size": 200,
         "mtime_ns": 1, "mode": 0o644, "sha256": "cd" * 32},
        {"id": 2, "job_id": 6, "relpath": b"a.wav", "relpath_display": "a.wav", "size": 100,
         "mtime_ns": 1, "mode": 0o644, "sha256": None},
    ],
    "routes": [
        {"route": "a", "paused": 0, "reason": None, "since": None, "updated_at": NOW},
        {"route": "b", "paused": 1, "reason": "destination_mount not mounted",
         "since": NOW - 5, "updated_at": NOW - 5},
    ],
    "heartbeats": [
        {"id": 1, "component": "workers", "node": "n1", "pid": 101, "ts": NOW - 3,
         "details": json.dumps({"workers": 4, "running": [
             {"job_id": 1, "phase": "copy", "bytes": 10},
             {"job_id": 2, "phase": "copy", "bytes": 256 * MiB}]})},
        {"id": 2, "component": "watcher", "node": "n1", "pid": 102, "ts": NOW - 2.5,
         "details": json.dumps({"routes": 2})},
        {"id": 3, "component": "route:a", "node": "n1", "pid": 102, "ts": NOW - 2.5,
         "details": json.dumps([1, 2])},
        {"id": 4, "component": "audit", "node": "n2", "pid": 7, "ts": NOW - 1,
         "details": json.dumps({"shipped_seq": 3})},
    ],
}


class ReadContract:
    """Every read store answers these the same way."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JobReadStore]:
        raise NotImplementedError

    def test_list_newest_first(self, store: JobReadStore) -> None:
        page = store.list_jobs(JobFilter(), 50)
        assert [j.job_id for j in page.jobs] == [6, 5, 4, 3, 2, 1]
        assert page.next_cursor is None

    def test_list_filters(self, store: JobReadStore) -> None:
        ids = lambda f: [j.job_id for j in store.list_jobs(f, 50).jobs]  # noqa: E731
        assert ids(JobFilter(state="completed")) == [6, 1]
        assert ids(JobFilter(route="b")) == [6, 4, 3]
        assert ids(JobFilter(state="transferring", route="a")) == [2]
        assert ids(JobFilter(route="nope")) == []

    def test_list_pages_with_a_cursor(self, store: JobReadStore) -> None:
        seen, cursor = [], None
        for _ in range(10):
            page = store.list_jobs(JobFilter(), 4, cursor)
            seen += [j.job_id for j in page.jobs]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [6, 5, 4, 3, 2, 1]
        assert store.list_jobs(JobFilter(), 2, 6).next_cursor == 4

    def test_history_row_as_the_view_shows_it(self, store: JobReadStore) -> None:
        (done,) = [j for j in store.list_jobs(JobFilter(), 50).jobs if j.job_id == 1]
        assert done.as_dict() == {
            "job_id": 1, "route": "a", "mode": "copy", "kind": "file", "state": "completed",
            "attempt": 1, "source": "/in/1.mov", "destination": "/out/1.mov", "bytes": 1000,
            "files": 1, "sha256": "ab" * 32, "xxh128": None,
            "created": "2025-12-31T23:58:21.000Z", "started": "2025-12-31T23:58:29.500Z",
            "placed": None, "completed": "2025-12-31T23:58:39.875Z",
            "updated": "2025-12-31T23:59:11.250Z", "seconds": 2.0, "mb_per_s": 2.0,
            "next_attempt": None, "error": None, "node": "n1",
        }
        (queued,) = store.list_jobs(JobFilter(state="detected"), 1).jobs
        assert queued.next_attempt == "2026-01-01T00:00:30.500Z" and queued.mb_per_s is None

    def test_job_detail(self, store: JobReadStore) -> None:
        detail = store.job_detail(1)
        assert detail is not None and detail.job.job_id == 1
        assert [e.seq for e in detail.events] == [1, 2, 3]
        assert detail.events[1].details == {"owner": "h:1:w"}
        assert detail.events[1].time == "2025-12-31T23:58:29.500Z"
        last = detail.events[2]
        assert (last.from_state, last.to_state) == ("verifying", "completed")
        assert detail.files == ()
        folder = store.job_detail(6)
        assert folder is not None
        assert [(f.path, f.size, f.sha256) for f in folder.files] == [
            ("b.wav", 200, "cd" * 32), ("a.wav", 100, None)]
        assert store.job_detail(99) is None

    def test_status_counts(self, store: JobReadStore) -> None:
        view = store.status(NOW)
        assert view.states == (
            StateCount("completed", 2, 1300),
            StateCount("detected", 1, 4000),
            StateCount("failed", 1, 5000),
            StateCount("transferring", 2, 768 * MiB + 3000),
        )
        assert view.routes == (
            RouteStateCount("a", "completed", 1),
            RouteStateCount("a", "failed", 1),
            RouteStateCount("a", "transferring", 1),
            RouteStateCount("b", "completed", 1),
            RouteStateCount("b", "detected", 1),
            RouteStateCount("b", "transferring", 1),
        )

    def test_status_running_has_the_rate_since_the_last_claim(self, store: JobReadStore) -> None:
        (running,) = store.status(NOW).running  # job 3's lease has expired
        assert (running.job_id, running.bytes_done, running.size) == (2, 384 * MiB, 768 * MiB)
        assert running.rate == pytest.approx(384 * MiB / 2)  # resumed at NOW-8, progress NOW-6
        assert store.status(NOW + 61).running == ()

    def test_status_heartbeats_drop_finished_jobs(self, store: JobReadStore) -> None:
        view = store.status(NOW)
        assert [b.component for b in view.heartbeats] == ["audit", "route:a", "watcher", "workers"]
        workers = view.heartbeats[-1]
        assert [r["job_id"] for r in workers.details["running"]] == [2]
        assert view.heartbeats[1].details == [1, 2]
        assert view.paused == store.paused_routes()

    def test_paused_routes(self, store: JobReadStore) -> None:
        assert store.paused_routes() == (
            PausedRoute("b", "destination_mount not mounted", NOW - 5),
        )

    def test_heartbeats_of_a_node(self, store: JobReadStore) -> None:
        assert [b.component for b in store.heartbeats("n2")] == ["audit"]
        assert len(store.heartbeats()) == 4

    def test_health_facts(self, store: JobReadStore) -> None:
        beats = store.health_facts("n1").heartbeats
        assert set(beats) == {"workers", "watcher", "route:a"}
        assert beats["watcher"] == HeartbeatFact("watcher", "n1", 102, NOW - 2.5, {"routes": 2})
        assert beats["route:a"].details == {}  # not an object: health reads nothing into it
        assert store.health_facts("n3").heartbeats == {}


def _fill(db: Any) -> None:
    with db.atomic():
        for model, rows in ((Job, "jobs"), (Event, "events"), (JobFile, "files"),
                            (RouteStatus, "routes"), (Heartbeat, "heartbeats")):
            for row in FIXTURE[rows]:
                model.insert(**row).execute()
    db.close()


def _sqlite_store(tmp_path: Path) -> str:
    path = tmp_path / "state" / "ketter.db"
    _fill(open_store(path))
    return str(path)


class TestSqliteRaw(ReadContract):
    """Through the plain read-only ``sqlite3`` connection ``ketter health`` uses."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JobReadStore]:
        store = open_read_raw(_sqlite_store(tmp_path))
        yield store
        store.close()


class TestSqlitePeewee(ReadContract):
    """Through :func:`ketter.store.open_readonly`, as the inspect commands open it."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JobReadStore]:
        store = open_read(_sqlite_store(tmp_path))
        yield store
        store.close()


class TestSqliteShared(ReadContract):
    """Through the connection the API lends to one thread after another."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JobReadStore]:
        store = open_read_shared(_sqlite_store(tmp_path))
        yield store
        store.close()


class TestMemory(ReadContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JobReadStore]:
        yield MemoryReadStore(**FIXTURE)


class TestPostgres(ReadContract):
    """On PostgreSQL (issue #18), leases compared with the test's ``now``
    (``db_clock=False``; the database's clock: test_postgres_store.py)."""

    @pytest.fixture
    def store(self, pg_dsn: str) -> Iterator[JobReadStore]:
        _fill(open_pg_store(pg_dsn))
        store = open_pg_read(pg_dsn, db_clock=False)
        yield store
        store.close()
