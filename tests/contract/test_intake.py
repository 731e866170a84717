"""Contract: intake — new jobs (one active job per source key), lookups by
source key, the delivered jobs of a set of claims."""

from __future__ import annotations

from typing import Any

import pytest

from ketter.store.port import JobStore
from ketter.store.ports.intake import KeyedJob


def columns(key: str = "k1", **fields: Any) -> dict[str, Any]:
    return {
        "route": "r",
        "mode": "copy",
        "kind": "file",
        "source_path": b"/src/a",
        "source_display": "/src/a",
        "source_key": key,
        "state": "detected",
        "node": "n1",
        "created_at": 1.0,
        "updated_at": 1.0,
        "size": 10,
        "file_count": 1,
        "attempt": 0,
        "priority": 0,
        "bytes_done": 0,
        **fields,
    }


def test_added_jobs_get_new_ids_and_read_back(job_store: JobStore) -> None:
    first = job_store.add_job(columns("a"))
    second = job_store.add_job(columns("b", source_path=b"/src/\xff", priority=3))
    assert first is not None and second is not None and second > first
    found = job_store.active_job("b")
    assert found is not None
    assert (found.id, found.source_path, found.priority, found.state) == (
        second,
        b"/src/\xff",
        3,
        "detected",
    )


def test_a_second_active_job_for_a_key_is_refused(job_store: JobStore) -> None:
    first = job_store.add_job(columns("k"))
    assert job_store.add_job(columns("k", source_path=b"/src/b")) is None
    active = job_store.active_job("k")
    assert active is not None and active.id == first and active.source_path == b"/src/a"


def test_a_refused_add_leaves_the_callers_transaction_going(job_store: JobStore) -> None:
    job_store.add_job(columns("k"))
    with job_store.transaction():
        assert job_store.add_job(columns("k")) is None
        other = job_store.add_job(columns("other"))
        job_store.append_event("detect", now=1.0, job_id=other)
    assert job_store.active_job("other") is not None
    assert [e.job_id for e in job_store.events_after(0, limit=10)] == [other]


def test_finished_jobs_do_not_hold_their_key(job_store: JobStore) -> None:
    done = job_store.add_job(columns("k", state="completed"))
    failed = job_store.add_job(columns("k", state="failed"))
    assert job_store.active_job("k") is None
    again = job_store.add_job(columns("k"))
    assert again is not None and len({done, failed, again}) == 3
    active = job_store.active_job("k")
    assert active is not None and active.id == again


def test_last_job_is_the_newest_in_any_state(job_store: JobStore) -> None:
    assert job_store.last_job("k") is None
    job_store.add_job(columns("k", state="failed"))
    newest = job_store.add_job(columns("k", state="completed"))
    job_store.add_job(columns("other"))
    last = job_store.last_job("k")
    assert last is not None and last.id == newest and last.state == "completed"


def test_an_unknown_column_is_refused(job_store: JobStore) -> None:
    with pytest.raises(ValueError, match="not a jobs column: colour"):
        job_store.add_job(columns("k", colour="red"))
    assert job_store.active_job("k") is None


def test_a_job_without_a_required_column_is_refused(job_store: JobStore) -> None:
    with pytest.raises(ValueError, match="a job needs: file_count, size"):
        job_store.add_job(columns("k", size=None, file_count=None))
    assert job_store.active_job("k") is None


def test_adds_in_a_failed_transaction_are_all_undone(job_store: JobStore) -> None:
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        job_store.add_job(columns("a"))
        job_store.add_job(columns("b"))
        1 / 0  # noqa: B018
    assert job_store.active_job("a") is None and job_store.active_job("b") is None
    assert job_store.add_job(columns("a")) is not None  # the key is free


def test_active_jobs_by_source_path(job_store: JobStore) -> None:
    """Non-terminal jobs of the route at those paths, whatever their key."""
    held = job_store.add_job(columns("v1", source_path=b"/src/reel", kind="folder"))
    waiting = job_store.add_job(columns("v2", source_path=b"/src/\xff", state="retry_wait"))
    job_store.add_job(columns("v3", source_path=b"/src/reel", state="completed"))
    job_store.add_job(columns("v4", source_path=b"/src/reel", route="other"))
    job_store.add_job(columns("v5", source_path=b"/src/reel/sub"))
    found = job_store.active_jobs_by_source_path("r", [b"/src/reel", b"/src/\xff", b"/src/x"])
    assert [(j.id, j.source_path, j.state) for j in found] == [
        (held, b"/src/reel", "detected"),
        (waiting, b"/src/\xff", "retry_wait"),
    ]
    assert job_store.active_jobs_by_source_path("r", []) == []
    many = [f"/src/{i}".encode() for i in range(1200)] + [b"/src/reel"]
    assert [j.id for j in job_store.active_jobs_by_source_path("r", many)] == [held]


def test_jobs_by_source_keys(job_store: JobStore) -> None:
    job_store.add_job(columns("done", state="completed", source_ctime_ns=5, sha256="aa"))
    job_store.add_job(columns("done", state="completed", source_ctime_ns=5, sha256="aa"))
    job_store.add_job(columns("running", source_ctime_ns=7))
    job_store.add_job(columns("elsewhere"))
    keys = ["done", "running", "unknown"] + [f"x{i}" for i in range(1200)]  # several queries
    found = sorted(job_store.jobs_by_source_keys(iter(keys)))
    assert found == [
        KeyedJob("done", True, 5, "completed", "aa"),  # distinct: one row for the two
        KeyedJob("running", False, 7, "detected", None),
    ]
    assert job_store.jobs_by_source_keys([]) == []


def test_delivered_are_the_completed_jobs_of_those_claims(job_store: JobStore) -> None:
    mine = job_store.add_job(columns("a", state="completed", claim="c1"))
    taken_over = job_store.add_job(columns("b", state="completed", claim="other"))
    retrying = job_store.add_job(columns("c", state="retry_wait", claim="c3"))
    assert mine is not None and taken_over is not None and retrying is not None
    found = job_store.delivered({retrying: "c3", taken_over: "c2", mine: "c1", 999: "x"})
    assert [j.id for j in found] == [mine]
    assert job_store.delivered({}) == []
