"""The SQL job store: the counters and what a scrape reads (see
:class:`ketter.store.ports.metrics.MetricsPort`); ``job_counts`` is kept by
the triggers of migration 0010 (a trigger function on PostgreSQL)."""

from __future__ import annotations

from ketter.store.composite.metrics import CompositeMetrics
from ketter.store.ports.metrics import CounterTotal, JobCount
from ketter.store.sql.core import SqlCore

_ADD = (
    "INSERT INTO counters (route, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (route, name) DO UPDATE SET value = counters.value + excluded.value"
)
#: ``{greatest}``: the dialect's two-value maximum.
_RAISE = (
    "INSERT INTO counters (route, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (route, name) DO UPDATE SET value = {greatest}(counters.value, excluded.value)"
)


class MetricsShared(SqlCore, CompositeMetrics):
    """The counters and the scrape's reads on SQL."""

    def _count(self, route: str, adds: dict[str, float], highs: dict[str, float]) -> None:
        for name, amount in adds.items():
            self._exec(_ADD, (route, name, amount))
        for name, value in highs.items():
            self._exec(_RAISE.format(greatest=self.dialect.greatest), (route, name, value))

    def counter_totals(self) -> list[CounterTotal]:
        rows = self._exec("SELECT route, name, value FROM counters ORDER BY route, name").fetchall()
        return [CounterTotal(*row) for row in rows]

    def job_counts(self) -> list[JobCount]:
        rows = self._exec(
            "SELECT route, state, jobs FROM job_counts WHERE jobs > 0 ORDER BY route, state"
        ).fetchall()
        return [JobCount(*row) for row in rows]

    def oldest_created(self, route: str, state: str) -> float | None:
        row = self._exec(
            "SELECT MIN(created_at) FROM jobs WHERE route = ? AND state = ?", (route, state)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
