"""Contract: reading the audit chain back, and what verify compares it with."""

from __future__ import annotations

import threading

import pytest

from ketter.audit.chain import GENESIS
from ketter.store.port import JobStore


def append(job_store: JobStore, n: int, **kw: object) -> list[int]:
    with job_store.transaction():
        return [
            job_store.append_event("detect", now=float(i), **kw)  # type: ignore[arg-type]
            for i in range(n)
        ]


def test_events_after_pages_in_sequence_order(job_store: JobStore) -> None:
    assert job_store.events_after(0, limit=10) == []
    assert append(job_store, 5, job_id=1) == [1, 2, 3, 4, 5]
    assert [e.id for e in job_store.events_after(0, limit=2)] == [1, 2]
    assert [e.id for e in job_store.events_after(2, limit=10)] == [3, 4, 5]
    assert job_store.events_after(5, limit=10) == []
    first = job_store.events_after(0, limit=1)[0]
    assert (first.event, first.job_id, first.node, first.prev_hash) == ("detect", 1, "n1", GENESIS)


def test_the_head_and_the_hashes(job_store: JobStore) -> None:
    assert job_store.last_event() is None
    assert job_store.event_hash(1) is None and job_store.event_hashes(0, 10) == {}
    append(job_store, 4)
    rows = job_store.events_after(0, limit=10)
    head = job_store.last_event()
    assert head is not None and (head.id, head.hash, head.ts) == (4, rows[-1].hash, 3.0)
    assert job_store.event_hash(2) == rows[1].hash
    assert job_store.event_hash(9) is None
    assert job_store.event_hashes(2, 4) == {2: rows[1].hash, 3: rows[2].hash}
    assert job_store.event_hashes(0, 100) == {r.id: r.hash for r in rows}


def test_the_first_event_after_a_sequence(job_store: JobStore) -> None:
    assert job_store.first_event_ts_after(0) is None
    append(job_store, 3)
    assert job_store.first_event_ts_after(0) == 0.0
    assert job_store.first_event_ts_after(1) == 1.0
    assert job_store.first_event_ts_after(3) is None


def test_an_empty_store_has_no_jobs_and_no_services(job_store: JobStore) -> None:
    assert job_store.job_count() == 0
    assert job_store.jobs_ahead_of_events() == []
    assert job_store.service_components(besides="audit") == []
    assert job_store.event_jobs([1, 2]) == {}
    assert job_store.missing_columns() == []


def test_hold_writes_keeps_the_other_threads_out(job_store: JobStore) -> None:
    written = threading.Event()

    def write() -> None:
        append(job_store, 1)
        written.set()

    with job_store.hold_writes():
        thread = threading.Thread(target=write)
        thread.start()
        assert not written.wait(0.3)  # waits for the hold to end
    thread.join(10)
    assert written.is_set() and job_store.last_event() is not None


@pytest.mark.parametrize("limit", [1, 2])
def test_events_after_returns_copies(job_store: JobStore, limit: int) -> None:
    append(job_store, 2)
    row = job_store.events_after(0, limit=limit)[0]
    row.hash = "edited"
    assert job_store.events_after(0, limit=limit)[0].hash != "edited"


def add_job(job_store: JobStore, name: str, state: str) -> int:
    job_id = job_store.add_job(
        {
            "route": "r",
            "mode": "copy",
            "kind": "file",
            "source_path": f"/in/{name}".encode(),
            "source_display": f"/in/{name}",
            "source_key": name,
            "state": state,
            "node": "n1",
            "created_at": 1.0,
            "updated_at": 1.0,
            "size": 0,
            "file_count": 1,
            "attempt": 0,
            "priority": 0,
            "bytes_done": 0,
        }
    )
    assert job_id is not None
    return job_id


def test_jobs_whose_state_is_ahead_of_their_events(job_store: JobStore) -> None:
    ok = add_job(job_store, "ok", "queued")
    ahead = add_job(job_store, "ahead", "claimed")  # its newest events were deleted
    silent = add_job(job_store, "silent", "queued")
    with job_store.transaction():
        job_store.append_event("enqueue", now=1.0, job_id=ok, to_state="queued")
        job_store.append_event("enqueue", now=1.0, job_id=ahead, to_state="queued")
        job_store.append_event("warning", now=1.0, job_id=silent)  # no to_state: not counted
        job_store.append_event("enqueue", now=1.0, job_id=ahead + 100, to_state="queued")
    assert job_store.job_count() == 3
    assert job_store.jobs_ahead_of_events() == [
        (ahead, "claimed", 2, "queued"),
        (silent, "queued", None, None),
    ]
    assert job_store.jobs_ahead_of_events(limit=1) == [(ahead, "claimed", 2, "queued")]


def test_the_jobs_events_name(job_store: JobStore) -> None:
    first, second = add_job(job_store, "a", "queued"), add_job(job_store, "b", "queued")
    found = job_store.event_jobs([second, first, 999, first])
    assert sorted(found) == [first, second]
    assert found[first].source_path == b"/in/a" and found[second].source_display == "/in/b"


def test_the_services_that_beat(job_store: JobStore) -> None:
    job_store.beat("n1", {"workers": "{}", "audit": "{}", "route:r": "{}"}, pid=1, now=1.0)
    job_store.beat("n2", {"watcher": "{}", "workers": "{}"}, pid=2, now=1.0)
    assert job_store.service_components(besides="audit") == ["watcher", "workers"]
