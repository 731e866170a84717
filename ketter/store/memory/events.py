"""In-memory job store: events (see :class:`ketter.store.ports.events.EventsPort`)."""

from __future__ import annotations

import bisect
import contextlib
import copy
from collections.abc import Iterable, Iterator

from ketter.store.memory.core import MemoryCore
from ketter.store.rows import EventRow, JobRow


class EventsMemory(MemoryCore):
    """The events operations in memory."""

    def _event_index(self, after_seq: int) -> int:
        """Where the first event with a sequence above ``after_seq`` is (the
        list is in sequence order: appends only)."""
        return bisect.bisect_right(self.tables.events, after_seq, key=lambda e: e.id)

    def events_after(self, after_seq: int, *, limit: int) -> list[EventRow]:
        with self._lock:
            start = self._event_index(after_seq)
            return [copy.copy(e) for e in self.tables.events[start : start + limit]]

    def last_event(self) -> EventRow | None:
        with self._lock:
            events = self.tables.events
            return copy.copy(events[-1]) if events else None

    def event_hash(self, seq: int) -> str | None:
        return self.event_hashes(seq, seq + 1).get(seq)

    def event_hashes(self, first: int, end: int) -> dict[int, str]:
        with self._lock:
            start = self._event_index(first - 1)
            found: dict[int, str] = {}
            for e in self.tables.events[start:]:
                if e.id >= end:
                    break
                found[e.id] = e.hash
            return found

    def first_event_ts_after(self, seq: int) -> float | None:
        with self._lock:
            start = self._event_index(seq)
            events = self.tables.events
            return events[start].ts if start < len(events) else None

    def jobs_ahead_of_events(
        self, *, limit: int = 20
    ) -> list[tuple[int, str, int | None, str | None]]:
        with self._lock:
            last: dict[int, EventRow] = {}
            for e in self.tables.events:
                if e.job_id is not None and e.to_state is not None:
                    last[e.job_id] = e
            ahead: list[tuple[int, str, int | None, str | None]] = []
            for job_id in sorted(self.tables.jobs):
                state = self.tables.jobs[job_id].state
                event = last.get(job_id)
                if event is None:
                    ahead.append((job_id, state, None, None))
                elif event.to_state != state:
                    ahead.append((job_id, state, event.id, event.to_state))
                if len(ahead) == limit:
                    break
            return ahead

    def job_count(self) -> int:
        return len(self.tables.jobs)

    def service_components(self, *, besides: str) -> list[str]:
        with self._lock:
            return sorted(
                {
                    component
                    for component, _node in self.tables.heartbeats
                    if component != besides and not component.startswith("route:")
                }
            )

    def event_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRow]:
        with self._lock:
            jobs = self.tables.jobs
            return {i: copy.copy(jobs[i]) for i in job_ids if i in jobs}

    def missing_columns(self) -> list[str]:
        """Always this Ketter's schema in memory."""
        return []

    @contextlib.contextmanager
    def hold_writes(self) -> Iterator[None]:
        """Every write takes the store's lock: hold it."""
        with self._lock:
            yield
