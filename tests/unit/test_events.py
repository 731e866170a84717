"""The event bus: subscribers get an audit event once its transaction has
committed, never one that rolled back, and a raising subscriber does not
break the write (ketter/events.py)."""

from __future__ import annotations

import logging

import pytest

from ketter.audit.chain import AuditChain
from ketter.events import Event, EventBus
from ketter.store.sqlite import SqliteJobStore


@pytest.fixture
def chain(job_store: SqliteJobStore) -> AuditChain:
    return job_store.chain


def test_subscriber_gets_the_event_after_commit(
    chain: AuditChain, job_store: SqliteJobStore
) -> None:
    got: list[tuple[Event, bool]] = []
    chain.bus.subscribe("route_paused", lambda e: got.append((e, job_store.in_transaction())))
    with job_store.transaction():
        seq = job_store.append_event("route_paused", now=5.0, route="r", details={"reason": "x"})
        assert got == []  # not while the transaction may still roll back
    assert [(e.seq, e.event, e.route, e.details) for e, _ in got] == [
        (seq, "route_paused", "r", {"reason": "x"})
    ]
    assert got[0][1] is False  # published outside the transaction


def test_a_rolled_back_event_is_never_published(
    chain: AuditChain, job_store: SqliteJobStore
) -> None:
    got: list[Event] = []
    chain.bus.subscribe("*", got.append)
    with pytest.raises(RuntimeError), job_store.transaction():
        job_store.append_event("route_paused", now=5.0, route="r")
        raise RuntimeError("the state change failed")
    with job_store.transaction():
        job_store.append_event("route_resumed", now=6.0, route="r")
    assert [e.event for e in got] == ["route_resumed"]
    rows = job_store.db.execute_sql("SELECT event FROM events").fetchall()
    assert rows == [("route_resumed",)]


def test_a_raising_subscriber_does_not_break_the_write(
    chain: AuditChain, job_store: SqliteJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []

    def broken(event: Event) -> None:
        raise ValueError("subscriber bug")

    chain.bus.subscribe("route_paused", broken)
    chain.bus.subscribe("route_paused", lambda e: got.append(e.event))
    with caplog.at_level(logging.ERROR, logger="ketter.events"), job_store.transaction():
        job_store.append_event("route_paused", now=5.0, route="r")
    assert got == ["route_paused"]  # the other subscriber still ran
    assert job_store.db.execute_sql("SELECT count(*) FROM events").fetchone() == (1,)
    assert "event subscriber" in caplog.text and "subscriber bug" in caplog.text


def test_a_keyed_subscription_replaces_the_earlier_one() -> None:
    bus, got = EventBus(), []
    bus.subscribe("fail", lambda e: got.append("old"), key="alerts")
    bus.subscribe("fail", lambda e: got.append("new"), key="alerts")
    bus.publish(Event(seq=1, event="fail", ts=0.0))
    assert got == ["new"]


def test_only_vocabulary_events_can_be_subscribed() -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        EventBus().subscribe("job_done", lambda e: None)


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, route, message))


def test_the_stall_alert_is_the_subscriber_of_the_stalled_event(
    chain: AuditChain, job_store: SqliteJobStore
) -> None:
    from ketter.events import AlertSubscriber

    alerts = Alerts()
    AlertSubscriber(alerts, store=job_store, stall_timeout=120.0).subscribe(chain.bus)
    with job_store.transaction():
        job_store.append_event(
            "stalled",
            now=5.0,
            job_id=7,
            route="dub",
            attempt=1,
            details={"idle_s": 130.2, "phase": "copy", "bytes_done": 10},
        )
    assert alerts.sent == [
        (
            "stalled",
            "dub",
            "job 7 on route dub stalled: no progress for 120s (phase copy); is the share hung?",
        )
    ]


def test_a_later_room_pause_of_the_episode_does_not_alert(
    chain: AuditChain, job_store: SqliteJobStore
) -> None:
    from ketter.events import AlertSubscriber

    alerts = Alerts()
    AlertSubscriber(alerts, store=job_store).subscribe(chain.bus)
    for pauses in (1, 2):
        with job_store.transaction():
            job_store.append_event(
                "route_paused",
                now=5.0,
                route="dub",
                details={"reason": "no room", "room_needed": 5, "room_pauses": pauses},
            )
    assert alerts.sent == [("route_paused", "dub", "route dub paused: no room")]


def test_the_fail_alert_names_the_job_from_the_store(
    chain: AuditChain, job_store: SqliteJobStore
) -> None:
    from ketter.events import AlertSubscriber

    job_id = job_store.add_job(
        {
            "route": "dub",
            "mode": "copy",
            "kind": "file",
            "source_path": b"/in/take.mov",
            "source_display": "/in/take.mov",
            "source_key": "k",
            "state": "failed",
            "node": "n",
            "created_at": 1.0,
            "updated_at": 1.0,
            "size": 0,
            "file_count": 1,
            "attempt": 1,
            "priority": 0,
            "bytes_done": 0,
        }
    )
    alerts = Alerts()
    AlertSubscriber(alerts, store=job_store).subscribe(chain.bus)
    with job_store.transaction():
        job_store.append_event(
            "fail",
            now=5.0,
            job_id=job_id,
            route="dub",
            from_state="copying",
            to_state="failed",
            details={"error": "disk on fire"},
        )
    assert alerts.sent == [
        ("job_failed", "dub", f"job {job_id} on route dub failed: /in/take.mov: disk on fire")
    ]
