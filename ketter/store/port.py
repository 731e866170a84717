"""The job store's read model: what ``ketter jobs``, ``job``, ``status`` and
``health`` (and later the HTTP API and a metrics collector) may ask.

Callers get frozen answers, never a cursor or a database object, so the CLI
only formats and a PostgreSQL store or the in-memory fake
(:mod:`ketter.store.memory_read`) can answer the same questions. Every
implementation runs the contract suite in
``tests/unit/store/test_read_contract.py``.

The write side is :class:`JobStore`: one protocol per area in
:mod:`ketter.store.ports` (transactions and event appends, jobs and their
transitions, leases, intake, routes, heartbeats, events, manifests, API tokens,
the metrics scrape's reads),
implemented by :mod:`ketter.store.sqlite` and the in-memory fake
:mod:`ketter.store.memory` (their composite operations, a transition or a
claim with its audit event, written once in :mod:`ketter.store.composite`
over each backend's primitives), both run by the contract suite in
``tests/contract``. A process gets its store from
:class:`ketter.node.Node`; nothing outside :mod:`ketter.store` holds a
database object or writes SQL (``tests/unit/test_sql_boundary.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ketter.errors import KetterError


class StoreUnreadable(KetterError):
    """The job store could not be read (missing tables, locked, corrupt)."""


#: The columns of the ``job_history`` view, in its order (migration 0005):
#: the one row per job that ``ketter jobs`` and ``ketter job`` print.
HISTORY_FIELDS = (
    "job_id",
    "route",
    "mode",
    "kind",
    "state",
    "attempt",
    "source",
    "destination",
    "bytes",
    "files",
    "sha256",
    "xxh128",
    "created",
    "started",
    "placed",
    "completed",
    "updated",
    "seconds",
    "mb_per_s",
    "next_attempt",
    "error",
    "node",
)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs to list; ``None`` means any.

    ``routes``: only these routes (an API token's visible routes; empty:
    none). ``since``/``until``: created at or after / before (epoch
    seconds). ``name``: a substring of the source path, case-sensitive."""

    state: str | None = None
    route: str | None = None
    routes: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job as people read it: the ``job_history`` row (times as ISO
    strings, the transfer rate of the verified copy)."""

    job_id: int
    route: str
    mode: str
    kind: str
    state: str
    attempt: int
    source: str
    destination: str | None
    bytes: int | None
    files: int | None
    sha256: str | None
    xxh128: str | None
    created: str | None
    started: str | None
    placed: str | None
    completed: str | None
    updated: str | None
    seconds: float | None
    mb_per_s: float | None
    next_attempt: str | None
    error: str | None
    node: str | None

    def as_dict(self) -> dict[str, Any]:
        # Shallow (the fields are plain values; dataclasses.asdict deep-copies
        # and cost more than the query on a page of 50).
        return dict(self.__dict__)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        """The record of a ``job_history`` row. A frozen dataclass's
        ``__init__`` sets each of the 22 fields through
        ``object.__setattr__`` (10 µs a record, half a page's query time);
        a row with exactly the fields is taken as it is."""
        if row.keys() != _JOB_RECORD_FIELDS:
            return cls(**row)  # says which field is missing or unknown
        record = object.__new__(cls)
        record.__dict__.update(row)
        return record


_JOB_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))


@dataclass(frozen=True)
class JobPage:
    """Jobs newest first; ``next_cursor`` lists the following page
    (``None``: this was the last one)."""

    jobs: tuple[JobRecord, ...]
    next_cursor: int | None


@dataclass(frozen=True)
class JobEvent:
    """One audit event of a job (``details`` parsed from its JSON)."""

    seq: int
    event: str
    from_state: str | None
    to_state: str | None
    attempt: int | None
    node: str | None
    pid: int | None
    user: str | None
    details: Any
    time: str | None
    #: The chain's hash of this event and of the one before it.
    hash: str | None = None
    prev_hash: str | None = None
    job_id: int | None = None
    route: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # Shallow (the fields are plain values; dataclasses.asdict deep-copies
        # and cost more than the query on a page of 50).
        return dict(self.__dict__)


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a job's manifest (a folder job has many)."""

    path: str
    size: int
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        # Shallow (the fields are plain values; dataclasses.asdict deep-copies
        # and cost more than the query on a page of 50).
        return dict(self.__dict__)


@dataclass(frozen=True)
class JobDetail:
    """A job with its events in order and its per-file manifest."""

    job: JobRecord
    events: tuple[JobEvent, ...]
    files: tuple[ManifestEntry, ...]


@dataclass(frozen=True)
class StateCount:
    state: str
    jobs: int
    bytes: int | None


@dataclass(frozen=True)
class RouteStateCount:
    route: str
    state: str
    jobs: int


@dataclass(frozen=True)
class RunningJob:
    """A job a worker holds right now (live lease, not terminal); ``rate`` is
    bytes per second since the claim that is running it."""

    job_id: int
    route: str
    state: str
    bytes_done: int | None
    size: int | None
    source: str
    rate: float | None


@dataclass(frozen=True)
class PausedRoute:
    route: str
    reason: str | None
    since: float | None


@dataclass(frozen=True)
class HeldRoute:
    """A route an operator holds (``ketter pause``): why, who, since when."""

    route: str
    reason: str | None
    by: str | None
    since: float | None


@dataclass(frozen=True)
class HeartbeatFact:
    """A component's last heartbeat; ``details`` is the parsed JSON."""

    component: str
    node: str
    pid: int
    ts: float
    details: Any


@dataclass(frozen=True)
class StatusView:
    """``ketter status``: counts per state and per route, the running jobs,
    the paused routes and the heartbeats — whose ``running`` lists no longer
    name a job that finished since they were written (a heartbeat is up to
    ``lease.heartbeat`` old)."""

    states: tuple[StateCount, ...]
    routes: tuple[RouteStateCount, ...]
    running: tuple[RunningJob, ...]
    paused: tuple[PausedRoute, ...]
    heartbeats: tuple[HeartbeatFact, ...]
    #: Routes held by an operator (apart from the outage pauses).
    held: tuple[HeldRoute, ...] = ()


@dataclass(frozen=True)
class HealthFacts:
    """What ``ketter health`` reads from the store for one node: its
    heartbeats by component (details a dict; unreadable JSON reads as ``{}``).
    The paused routes are :meth:`JobReadStore.paused_routes`."""

    heartbeats: Mapping[str, HeartbeatFact] = field(default_factory=dict)


class JobReadStore(Protocol):
    """The read-model part of the ``JobStore`` port."""

    def list_jobs(self, filters: JobFilter, limit: int, cursor: int | None = None) -> JobPage:
        """Jobs matching ``filters``, newest first, at most ``limit``, with an
        id below ``cursor`` when given."""
        ...

    def job_detail(self, job_id: int) -> JobDetail | None:
        """The job, its events and its manifest; ``None`` if there is no such job."""
        ...

    def running_jobs(self, now: float) -> tuple[RunningJob, ...]:
        """The jobs workers hold at ``now`` (live lease), with their progress."""
        ...

    def job_progress(self, job_id: int, now: float) -> RunningJob | None:
        """The job's live progress when a worker holds it at ``now``."""
        ...

    def events_after(self, after: int, limit: int) -> tuple[JobEvent, ...]:
        """Audit events with a sequence above ``after``, in chain order, at
        most ``limit``, each with its job id, route and chain hashes."""
        ...

    def status(self, now: float) -> StatusView:
        """Counts, running jobs (lease live at ``now``), paused routes, heartbeats."""
        ...

    def paused_routes(self) -> tuple[PausedRoute, ...]:
        """Routes paused in ``route_status`` (share down, destination full)."""
        ...

    def held_routes(self) -> tuple[HeldRoute, ...]:
        """Routes an operator holds (``route_status.held``): on purpose,
        lifted only by ``ketter resume``."""
        ...

    def clock(self, now: float) -> float:
        """The time heartbeats and leases are stamped on (the database's
        clock on PostgreSQL, ``now`` on one node)."""
        ...

    def heartbeats(self, node: str | None = None) -> tuple[HeartbeatFact, ...]:
        """Heartbeats by component name, of ``node`` only when given, details
        parsed as they are (a damaged row raises ``ValueError``)."""
        ...

    def health_facts(self, node: str) -> HealthFacts:
        """What ``ketter health`` needs to know of ``node``."""
        ...

    def close(self) -> None: ...


from ketter.store.ports.core import CorePort  # noqa: E402
from ketter.store.ports.events import EventsPort  # noqa: E402
from ketter.store.ports.heartbeats import HeartbeatsPort  # noqa: E402
from ketter.store.ports.intake import IntakePort  # noqa: E402
from ketter.store.ports.jobs import JobsPort  # noqa: E402
from ketter.store.ports.leases import LeasesPort  # noqa: E402
from ketter.store.ports.manifests import ManifestsPort  # noqa: E402
from ketter.store.ports.metrics import MetricsPort  # noqa: E402
from ketter.store.ports.routes import RoutesPort  # noqa: E402
from ketter.store.ports.tokens import TokensPort  # noqa: E402


class JobStore(
    CorePort,
    JobsPort,
    LeasesPort,
    IntakePort,
    RoutesPort,
    HeartbeatsPort,
    EventsPort,
    ManifestsPort,
    TokensPort,
    MetricsPort,
    Protocol,
):
    """The job store a process that writes holds (one per process, built by
    :class:`ketter.node.Node`): every write and every read the services make."""
