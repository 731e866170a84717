"""PostgreSQL job store: the counters and what a scrape reads (see
:class:`ketter.store.ports.metrics.MetricsPort`); ``job_counts`` is kept by
the trigger function of migration 0010."""

from __future__ import annotations

from ketter.store.composite.metrics import CompositeMetrics
from ketter.store.ports.metrics import CounterTotal, JobCount
from ketter.store.postgres.core import PgCore

_ADD = (
    "INSERT INTO counters (route, name, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (route, name) DO UPDATE SET value = counters.value + excluded.value"
)
_RAISE = (
    "INSERT INTO counters (route, name, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (route, name) DO UPDATE SET value = GREATEST(counters.value, excluded.value)"
)


class MetricsPg(PgCore, CompositeMetrics):
    """The counters and the scrape's reads on PostgreSQL."""

    def _count(self, route: str, adds: dict[str, float], highs: dict[str, float]) -> None:
        for name, amount in adds.items():
            self.db.execute_sql(_ADD, (route, name, amount))
        for name, value in highs.items():
            self.db.execute_sql(_RAISE, (route, name, value))

    def counter_totals(self) -> list[CounterTotal]:
        rows = self.db.execute_sql(
            "SELECT route, name, value FROM counters ORDER BY route, name"
        ).fetchall()
        return [CounterTotal(*row) for row in rows]

    def job_counts(self) -> list[JobCount]:
        rows = self.db.execute_sql(
            "SELECT route, state, jobs FROM job_counts WHERE jobs > 0 ORDER BY route, state"
        ).fetchall()
        return [JobCount(*row) for row in rows]

    def oldest_created(self, route: str, state: str) -> float | None:
        row = self.db.execute_sql(
            "SELECT MIN(created_at) FROM jobs WHERE route = %s AND state = %s", (route, state)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
