"""Contract: routes — pause and resume with their events, the room episode."""

from __future__ import annotations

import pytest

from ketter.store.port import JobStore


def route_events(store: JobStore) -> list[tuple[str, str | None, dict]]:
    import json

    return [(e.event, e.route, json.loads(e.details)) for e in store.events_after(0, limit=100)]


def test_an_unknown_route_runs(job_store: JobStore) -> None:
    assert job_store.route_status("r") is None
    assert job_store.paused_route_statuses() == []
    assert job_store.room_pauses_before("r") == 0
    assert job_store.resume_route("r", now=1.0) is False
    assert job_store.events_after(0, limit=10) == []


def test_pause_once_then_resume_once(job_store: JobStore) -> None:
    assert job_store.pause_route("r", "share gone", now=10.0) is True
    assert job_store.pause_route("r", "again", now=11.0) is False  # nothing written
    status = job_store.route_status("r")
    assert status is not None
    assert (status.paused, status.reason, status.since, status.updated_at) == (
        1,
        "share gone",
        10.0,
        10.0,
    )
    assert [s.route for s in job_store.paused_route_statuses()] == ["r"]
    assert job_store.resume_route("r", now=15.5) is True
    assert job_store.resume_route("r", now=16.0) is False
    status = job_store.route_status("r")
    assert status is not None
    assert (status.paused, status.reason, status.since, status.updated_at) == (0, None, None, 15.5)
    assert job_store.paused_route_statuses() == []
    assert route_events(job_store) == [
        ("route_paused", "r", {"reason": "share gone"}),
        ("route_resumed", "r", {"paused_for_s": 5.5, "reason_was": "share gone"}),
    ]


def test_pauses_for_room_count_an_episode(job_store: JobStore) -> None:
    assert job_store.pause_route("q", "full", now=10.0, room_needed=100, resume_at=40.0)
    status = job_store.route_status("q")
    assert status is not None
    assert (status.room_needed, status.room_pauses, status.room_paused_at, status.resume_at) == (
        100,
        1,
        10.0,
        40.0,
    )
    assert job_store.room_pauses_before("q") == 1
    job_store.resume_route("q", now=50.0)
    status = job_store.route_status("q")
    assert status is not None
    # The episode survives the resume; the wait and the room do not.
    assert (status.room_needed, status.room_pauses, status.room_paused_at, status.resume_at) == (
        None,
        1,
        10.0,
        None,
    )
    # Another reason keeps the count; the next pause for room is the second.
    job_store.pause_route("q", "share gone", now=60.0)
    status = job_store.route_status("q")
    assert status is not None and (status.room_pauses, status.room_paused_at) == (1, 10.0)
    job_store.resume_route("q", now=61.0)
    job_store.pause_route("q", "full", now=70.0, room_needed=5)
    status = job_store.route_status("q")
    assert status is not None and (status.room_pauses, status.room_paused_at) == (2, 70.0)
    details = route_events(job_store)[-1][2]
    assert details == {"reason": "full", "room_needed": 5, "room_pauses": 2}
    job_store.resume_route("q", now=71.0)
    # Told which pause it is: that count.
    job_store.pause_route("q", "full", now=80.0, room_needed=5, room_pauses=7)
    status = job_store.route_status("q")
    assert status is not None and status.room_pauses == 7


def test_a_delivery_after_the_pause_ends_the_episode(job_store: JobStore) -> None:
    job_store.pause_route("q", "full", now=10.0, room_needed=100)
    base = {
        "mode": "copy",
        "kind": "file",
        "source_path": b"/s",
        "source_display": "/s",
        "state": "completed",
        "node": "n1",
        "created_at": 1.0,
        "updated_at": 1.0,
        "size": 1,
        "file_count": 1,
        "attempt": 0,
        "priority": 0,
        "bytes_done": 0,
    }
    job_store.add_job({**base, "route": "q", "source_key": "a", "completed_at": 9.0})
    job_store.add_job({**base, "route": "other", "source_key": "b", "completed_at": 11.0})
    assert job_store.room_pauses_before("q") == 1  # before the pause, or another route
    job_store.add_job({**base, "route": "q", "source_key": "c", "completed_at": 10.0})
    assert job_store.room_pauses_before("q") == 0


def test_a_pause_in_a_failed_transaction_is_undone(job_store: JobStore) -> None:
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        assert job_store.pause_route("r", "share gone", now=1.0)
        1 / 0  # noqa: B018
    assert job_store.route_status("r") is None
    assert job_store.events_after(0, limit=10) == []
