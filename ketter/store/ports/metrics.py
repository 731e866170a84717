"""The job store's reads for a ``/metrics`` scrape (issue #17): the per-route
counters, the jobs per route and state, the oldest waiting job of each route,
the paused routes and the heartbeats — each a few rows read through an index
or a small table, so a scrape of a store with a million jobs stays within
100 ms (``tests/integration/metrics/test_scrape_speed.py``).

The counters are written by :meth:`ketter.store.ports.jobs.JobsPort.advance`
(what each change counts: :mod:`ketter.store.composite.counting`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ketter.jobs.states import State
from ketter.store.rows import HeartbeatRow, RouteStatusRow

#: A waiting job: one no worker holds and that is not finished — due now
#: (``detected``: new, re-queued or its backoff over) or waiting for its
#: next attempt (``retry_wait``: a backoff, a paused route, a source still
#: being written). Its age is counted from its ``created_at`` (its
#: detection): a job that keeps failing and retrying keeps its age.
WAITING_STATES: tuple[str, ...] = (State.DETECTED.value, State.RETRY_WAIT.value)


@dataclass(frozen=True)
class CounterTotal:
    """One ``counters`` row: a route's running total (or mark) ``name``."""

    route: str
    name: str
    value: float


@dataclass(frozen=True)
class JobCount:
    """How many jobs ``route`` has in ``state`` now."""

    route: str
    state: str
    jobs: int


@dataclass(frozen=True)
class ScrapeFacts:
    """Everything one scrape reads from the job store."""

    counters: tuple[CounterTotal, ...]
    jobs: tuple[JobCount, ...]
    #: route → ``created_at`` of its oldest waiting job (routes with one only).
    oldest_waiting: dict[str, float]
    #: The routes paused (an outage, a full destination) or held by an
    #: operator, or both (one row each, by route).
    paused: tuple[RouteStatusRow, ...]
    heartbeats: tuple[HeartbeatRow, ...]


class MetricsPort(Protocol):
    """What a metrics scrape reads from the job store."""

    def counter_totals(self) -> list[CounterTotal]:
        """Every ``counters`` row, by route and name."""
        ...

    def job_counts(self) -> list[JobCount]:
        """The jobs per route and state (pairs with at least one job), by
        route and state."""
        ...

    def oldest_created(self, route: str, state: str) -> float | None:
        """The ``created_at`` of the oldest job of ``route`` in ``state``
        (``None``: it has none)."""
        ...

    def scrape_facts(self) -> ScrapeFacts:
        """The counters, job counts, oldest waiting jobs, paused or held
        routes and heartbeats, read one after the other (no transaction: a scrape must
        never wait for the writers)."""
        ...
