"""In-process subscribers on the audit events: alerts hang off the event stream.

An :class:`EventBus` travels in the process's :class:`ketter.audit.chain.AuditChain`
(built by :class:`ketter.node.Node`). A subscriber names an event of the
closed vocabulary (:mod:`ketter.audit.vocabulary`, the hook list) or ``*``.

When they are published: an event is written inside the transaction that
changes the state it describes (:mod:`ketter.jobs.transitions`), and that
transaction may still roll back (a lost claim, SQLITE_FULL at COMMIT). An
alert for a change that never happened would lie, so the job store's
``append_event`` only *collects* the event, per thread, and the store hands
the collected events to :func:`publish_committed` after its ``COMMIT``
succeeded — once the writer mutex is released, so a subscriber may read the
store — and drops them at ``ROLLBACK``. The store's own commit hook was chosen over "callers publish
after their ``with db.atomic()``": there are dozens of writers and none can
forget. An event written inside a savepoint that rolls back (a batch's
refused job) is dropped with it, by the store's ``transaction()``; one
written in a bare nested ``db.atomic()`` that rolls back would still be
published (Ketter writes none there).

A subscriber's exception is logged and never reaches the writer: the change
is committed already, and one broken subscriber does not stop the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ketter.audit.vocabulary import EVENTS

if TYPE_CHECKING:
    from ketter.jobs.runner import Notifier
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.events")

#: Subscribe to every event.
ALL = "*"


@dataclass(frozen=True)
class Event:
    """One committed audit event (the columns of its ``events`` row a
    subscriber needs)."""

    seq: int
    event: str
    ts: float
    job_id: int | None = None
    route: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    attempt: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    """Subscribers by event name; thread-safe (workers commit from many threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, dict[object, Subscriber]] = {}

    def subscribe(self, event: str, callback: Subscriber, *, key: object = None) -> None:
        """Call ``callback`` with each committed ``event`` (or every one: ``*``).
        A ``key`` names the subscription: subscribing again with it replaces
        the earlier callback (one alert subscriber per process)."""
        if event != ALL and event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}; see ketter.audit.vocabulary")
        with self._lock:
            self._subs.setdefault(event, {})[key if key is not None else object()] = callback

    def publish(self, event: Event) -> None:
        """Hand ``event`` to its subscribers; their exceptions are logged."""
        with self._lock:
            subs = [*self._subs.get(event.event, {}).values(), *self._subs.get(ALL, {}).values()]
        for callback in subs:
            try:
                callback(event)
            except Exception:
                log.exception(
                    "event subscriber %r failed on %s (seq %d); the event is committed",
                    callback,
                    event.event,
                    event.seq,
                )


def publish_committed(pending: Iterable[tuple[EventBus, Event]]) -> None:
    """Publish the events of a transaction that committed, in order."""
    for bus, event in pending:
        bus.publish(event)


# -- alerts as a subscriber ---------------------------------------------------


class AlertSubscriber:
    """The job and route alerts, sent from the events that record them:
    ``job_failed`` from a ``fail`` transition to ``failed``, ``route_paused``
    from the ``route_paused`` event of the first pause of an outage (or of an
    episode of pauses for room), and, given ``stall_timeout`` (the workers'
    ``lease.stall_timeout``), ``stalled`` from the lease keeper's ``stalled``
    event. Texts and kinds are the notifier's as before; the notifier
    throttles. The failed job's source is read from ``store``."""

    def __init__(
        self,
        notifier: Notifier | Callable[[], Notifier],
        *,
        store: JobStore,
        stall_timeout: float | None = None,
    ) -> None:
        self._notifier = notifier
        self.store = store
        self.stall_timeout = stall_timeout

    @property
    def notifier(self) -> Notifier:
        n = self._notifier
        return n if hasattr(n, "notify") else n()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe("fail", self.on_fail, key=("alerts", "fail"))
        bus.subscribe("route_paused", self.on_route_paused, key=("alerts", "route_paused"))
        if self.stall_timeout is not None:
            bus.subscribe("stalled", self.on_stalled, key=("alerts", "stalled"))

    def on_fail(self, event: Event) -> None:
        if event.to_state != "failed" or event.job_id is None:
            return
        from ketter.paths import readable

        job = self.store.get_job(event.job_id)
        error = event.details.get("error") or "failed"
        if event.details.get("rollback") == "incomplete":
            error = f"{event.details.get('error')} (rollback incomplete)"
        if event.details.get("delivery_kept"):
            error = f"{error} (the delivery is in place and kept)"
        source = readable(job.source_path)
        logging.getLogger("ketter.jobs").error(
            "job failed: %s",
            error,
            extra={"ketter.job_id": job.id, "ketter.route": job.route, "file.path": source},
        )
        self.notifier.notify(
            "job_failed", job.route, f"job {job.id} on route {job.route} failed: {source}: {error}"
        )

    def on_route_paused(self, event: Event) -> None:
        # One alert per outage, and one per episode of pauses for room
        # (ketter.jobs.policy: only the first pause for room alerts).
        if int(event.details.get("room_pauses", 0) or 0) > 1:
            return
        route = event.route
        self.notifier.notify(
            "route_paused", route, f"route {route} paused: {event.details.get('reason')}"
        )

    def on_stalled(self, event: Event) -> None:
        self.notifier.notify(
            "stalled",
            event.route,
            f"job {event.job_id} on route {event.route} stalled: no "
            f"progress for {self.stall_timeout:g}s "
            f"(phase {event.details.get('phase')}); is the share hung?",
        )
