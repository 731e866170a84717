"""The metrics area's composite read, written once: :meth:`scrape_facts`
over the backend's :meth:`counter_totals`, :meth:`job_counts`,
:meth:`oldest_created`, ``paused_route_statuses``, ``held_route_statuses``
and ``list_heartbeats``."""

from __future__ import annotations

import abc

from ketter.store.ports.metrics import (
    WAITING_STATES,
    CounterTotal,
    JobCount,
    ScrapeFacts,
)
from ketter.store.rows import HeartbeatRow, RouteStatusRow


class CompositeMetrics(abc.ABC):
    """What a scrape reads (see :class:`ketter.store.ports.metrics.MetricsPort`)."""

    @abc.abstractmethod
    def counter_totals(self) -> list[CounterTotal]: ...

    @abc.abstractmethod
    def job_counts(self) -> list[JobCount]: ...

    @abc.abstractmethod
    def oldest_created(self, route: str, state: str) -> float | None: ...

    @abc.abstractmethod
    def paused_route_statuses(self) -> list[RouteStatusRow]: ...

    @abc.abstractmethod
    def held_route_statuses(self) -> list[RouteStatusRow]: ...

    @abc.abstractmethod
    def list_heartbeats(self, node: str | None = None) -> list[HeartbeatRow]: ...

    def scrape_facts(self) -> ScrapeFacts:
        jobs = tuple(self.job_counts())
        oldest: dict[str, float] = {}
        for count in jobs:  # one index seek per route and waiting state
            if count.jobs > 0 and count.state in WAITING_STATES:
                created = self.oldest_created(count.route, count.state)
                if created is not None:
                    oldest[count.route] = min(oldest.get(count.route, created), created)
        return ScrapeFacts(
            counters=tuple(self.counter_totals()),
            jobs=jobs,
            oldest_waiting=oldest,
            paused=_paused_or_held(self.paused_route_statuses(), self.held_route_statuses()),
            heartbeats=tuple(self.list_heartbeats()),
        )


def _paused_or_held(
    paused: list[RouteStatusRow], held: list[RouteStatusRow]
) -> tuple[RouteStatusRow, ...]:
    """The status rows of the routes paused or held, once each, by route."""
    rows = {row.route: row for row in held}
    rows.update({row.route: row for row in paused})
    return tuple(rows[route] for route in sorted(rows))
