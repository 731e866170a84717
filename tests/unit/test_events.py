"""The event bus: subscribers get an audit event once its transaction has
committed, never one that rolled back, and a raising subscriber does not
break the write (ketter/events.py)."""

from __future__ import annotations

import logging

import pytest

from ketter.audit.chain import AuditChain, record_event
from ketter.events import Event, EventBus
from ketter.store.models import database


@pytest.fixture
def chain(store) -> AuditChain:
    return AuditChain(node="test-node")


def test_subscriber_gets_the_event_after_commit(chain: AuditChain) -> None:
    got: list[tuple[Event, bool]] = []
    chain.bus.subscribe("route_paused", lambda e: got.append((e, database.obj.in_transaction())))
    with database.obj.atomic():
        seq = record_event("route_paused", now=5.0, route="r", details={"reason": "x"}, chain=chain)
        assert got == []  # not while the transaction may still roll back
    assert [(e.seq, e.event, e.route, e.details) for e, _ in got] == [
        (seq, "route_paused", "r", {"reason": "x"})
    ]
    assert got[0][1] is False  # published outside the transaction


def test_a_rolled_back_event_is_never_published(chain: AuditChain) -> None:
    got: list[Event] = []
    chain.bus.subscribe("*", got.append)
    with pytest.raises(RuntimeError), database.obj.atomic():
        record_event("route_paused", now=5.0, route="r", chain=chain)
        raise RuntimeError("the state change failed")
    with database.obj.atomic():
        record_event("route_resumed", now=6.0, route="r", chain=chain)
    assert [e.event for e in got] == ["route_resumed"]
    rows = database.obj.execute_sql("SELECT event FROM events").fetchall()
    assert rows == [("route_resumed",)]


def test_a_raising_subscriber_does_not_break_the_write(
    chain: AuditChain, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []

    def broken(event: Event) -> None:
        raise ValueError("subscriber bug")

    chain.bus.subscribe("route_paused", broken)
    chain.bus.subscribe("route_paused", lambda e: got.append(e.event))
    with caplog.at_level(logging.ERROR, logger="ketter.events"), database.obj.atomic():
        record_event("route_paused", now=5.0, route="r", chain=chain)
    assert got == ["route_paused"]  # the other subscriber still ran
    assert database.obj.execute_sql("SELECT count(*) FROM events").fetchone() == (1,)
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


def test_the_stall_alert_is_the_subscriber_of_the_stalled_event(chain: AuditChain) -> None:
    from ketter.events import AlertSubscriber

    alerts = Alerts()
    AlertSubscriber(alerts, stall_timeout=120.0).subscribe(chain.bus)
    with database.obj.atomic():
        record_event(
            "stalled",
            now=5.0,
            job_id=7,
            route="dub",
            attempt=1,
            details={"idle_s": 130.2, "phase": "copy", "bytes_done": 10},
            chain=chain,
        )
    assert alerts.sent == [
        (
            "stalled",
            "dub",
            "job 7 on route dub stalled: no progress for 120s (phase copy); is the share hung?",
        )
    ]


def test_a_later_room_pause_of_the_episode_does_not_alert(chain: AuditChain) -> None:
    from ketter.events import AlertSubscriber

    alerts = Alerts()
    AlertSubscriber(alerts).subscribe(chain.bus)
    for pauses in (1, 2):
        with database.obj.atomic():
            record_event(
                "route_paused",
                now=5.0,
                route="dub",
                details={"reason": "no room", "room_needed": 5, "room_pauses": pauses},
                chain=chain,
            )
    assert alerts.sent == [("route_paused", "dub", "route dub paused: no room")]
