"""The SQL job store: the counters and what a scrape reads (see
:class:`ketter.store.ports.metrics.MetricsPort`); ``job_counts`` is kept by
the triggers of migration 0010 (a trigger function on PostgreSQL)."""

from __future__ import annotations

from ketter.store.composite.counting import Tally
from ketter.store.composite.metrics import CompositeMetrics
from ketter.store.ports.metrics import CounterTotal, JobCount
from ketter.store.sql.core import SqlCore

#: ``{rows}``: one ``(?, ?, ?)`` per counter (a name at most once).
_ADD = (
    "INSERT INTO counters (route, name, value) VALUES {rows} "
    "ON CONFLICT (route, name) DO UPDATE SET value = counters.value + excluded.value"
)
#: ``{greatest}``: the dialect's two-value maximum.
_RAISE = (
    "INSERT INTO counters (route, name, value) VALUES {rows} "
    "ON CONFLICT (route, name) DO UPDATE SET value = {greatest}(counters.value, excluded.value)"
)


class MetricsShared(SqlCore, CompositeMetrics):
    """The counters and the scrape's reads on SQL."""

    def _count(self, route: str, adds: dict[str, float], highs: dict[str, float]) -> None:
        self._count_many({route: Tally(adds, highs)})

    def _count_many(self, counts: dict[str, Tally]) -> None:
        # One statement for the totals, one for the marks, over every route
        # (sorted: the rows locked in one order by every writer).
        for sql, part in ((_ADD, "adds"), (_RAISE, "highs")):
            rows = sorted(
                (route, name, value)
                for route, tally in counts.items()
                for name, value in getattr(tally, part).items()
            )
            if rows:
                values = ", ".join("(?, ?, ?)" for _ in rows)
                text = sql.format(rows=values, greatest=self.dialect.greatest)
                self._exec(text, [v for row in rows for v in row])

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
