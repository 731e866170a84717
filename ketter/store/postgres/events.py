"""PostgreSQL job store: what its events area does its own way (the rest is
:mod:`ketter.store.sql.events`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ketter.store.postgres.core import PgCore
from ketter.store.sql.events import EventsShared


class EventsPg(PgCore, EventsShared):
    """The events operations on PostgreSQL."""

    def jobs_ahead_of_events(
        self, *, limit: int = 20
    ) -> list[tuple[int, str, int | None, str | None]]:
        rows = self.db.execute_sql(
            "SELECT j.id, j.state, e.id, e.to_state FROM jobs j "
            "LEFT JOIN (SELECT job_id, MAX(id) AS mid FROM events "
            "           WHERE job_id IS NOT NULL AND to_state IS NOT NULL GROUP BY job_id) m "
            "  ON m.job_id = j.id "
            "LEFT JOIN events e ON e.id = m.mid "
            "WHERE e.to_state IS NULL OR e.to_state != j.state ORDER BY j.id LIMIT %s",
            (limit,),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    @contextlib.contextmanager
    def hold_writes(self) -> Iterator[None]:
        """Stop only between two transactions of this process's other
        threads: a process frozen inside one keeps its row locks and the
        audit chain's lock from every node (the crash tests want a worker
        frozen mid-copy, not that; see :class:`.db.WriteGate`)."""
        with self.db.gate.hold():
            yield
