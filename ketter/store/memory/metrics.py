"""In-memory job store: the counters and what a scrape reads (see
:class:`ketter.store.ports.metrics.MetricsPort`); the job counts are counted
from the rows."""

from __future__ import annotations

from collections import Counter

from ketter.store.composite.counting import Tally
from ketter.store.composite.metrics import CompositeMetrics
from ketter.store.memory.core import MemoryCore
from ketter.store.ports.metrics import CounterTotal, JobCount


class MetricsMemory(MemoryCore, CompositeMetrics):
    """The counters and the scrape's reads in memory."""

    def _count(self, route: str, adds: dict[str, float], highs: dict[str, float]) -> None:
        with self._write():
            counters = self.tables.counters
            for name, amount in adds.items():
                counters[(route, name)] = counters.get((route, name), 0) + amount
            for name, value in highs.items():
                counters[(route, name)] = max(counters.get((route, name), value), value)

    def _count_later(self, route: str, counted: Tally) -> None:
        self._count(route, counted.adds, counted.highs)

    def counter_totals(self) -> list[CounterTotal]:
        with self._lock:
            return [
                CounterTotal(route, name, value)
                for (route, name), value in sorted(self.tables.counters.items())
            ]

    def job_counts(self) -> list[JobCount]:
        with self._lock:
            counts = Counter((job.route, job.state) for job in self.tables.jobs.values())
        return [JobCount(route, state, n) for (route, state), n in sorted(counts.items())]

    def oldest_created(self, route: str, state: str) -> float | None:
        with self._lock:
            return min(
                (
                    job.created_at
                    for job in self.tables.jobs.values()
                    if job.route == route and job.state == state
                ),
                default=None,
            )
