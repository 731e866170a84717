"""The job store's events operations: reading the audit chain back (the
shipper copies it to the log, ``ketter audit verify`` checks it) and what
verify compares the chain with (the jobs' states, whether the node has run).
Appending an event is :meth:`ketter.store.ports.core.CorePort.append_event`;
the shipper's ``audit`` heartbeat row (its high-water mark) is written and
read through :class:`ketter.store.ports.heartbeats.HeartbeatsPort`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Protocol

from ketter.store.rows import EventRow, JobRow


class EventsPort(Protocol):
    """The events operations of the job store."""

    def events_after(self, after_seq: int, *, limit: int) -> list[EventRow]:
        """The events with a sequence above ``after_seq``, in sequence order,
        at most ``limit`` (gaps are not filled: a deleted row is missing)."""
        ...

    def last_event(self) -> EventRow | None:
        """The chain's head (the highest sequence); None for an empty chain."""
        ...

    def event_hash(self, seq: int) -> str | None:
        """The hash of the event at ``seq``; None when there is none."""
        ...

    def event_hashes(self, first: int, end: int) -> dict[int, str]:
        """The hashes of the events with ``first <= seq < end``, by sequence."""
        ...

    def first_event_ts_after(self, seq: int) -> float | None:
        """The time of the first event after ``seq``; None when there is none."""
        ...

    def jobs_ahead_of_events(
        self, *, limit: int = 20
    ) -> list[tuple[int, str, int | None, str | None]]:
        """Jobs whose state is not the ``to_state`` of their last event with
        one, by id, at most ``limit``: ``(job id, state, that event's
        sequence or None, its to_state or None)``."""
        ...

    def job_count(self) -> int:
        """How many jobs the store holds (any state)."""
        ...

    def service_components(self, *, besides: str) -> list[str]:
        """The heartbeat components other than ``besides`` and the routes'
        (``route:<name>``), sorted, each once: the services that have run."""
        ...

    def event_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRow]:
        """The jobs among ``job_ids`` that exist, by id (events name them)."""
        ...

    def missing_columns(self) -> list[str]:
        """``table.column`` names this Ketter's schema has and the store
        lacks (a store older than the code: ``ketter db upgrade`` first).
        Reads only."""
        ...

    def hold_writes(self) -> contextlib.AbstractContextManager[None]:
        """While inside: no write transaction of this process is open or can
        start, and no other writer holds the store's write lock at entry
        (waits up to about 10 s for both). Crash tests freeze the process
        there (:func:`ketter.runtime.faults.fault`)."""
        ...
