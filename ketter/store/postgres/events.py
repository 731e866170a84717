"""PostgreSQL job store: events (see :class:`ketter.store.ports.events.EventsPort`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from ketter.store.db import schema_behind
from ketter.store.postgres.core import PgCore
from ketter.store.rows import EVENT_COLUMNS, JOB_COLUMNS, EventRow, JobRow

_EVENTS = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)
_SELECT_EVENTS = f"SELECT {_EVENTS} FROM events WHERE id > %s ORDER BY id LIMIT %s"
_SELECT_JOBS = "SELECT {} FROM jobs WHERE id IN ({{}})".format(
    ", ".join(f'"{name}"' for name in JOB_COLUMNS)
)


class EventsPg(PgCore):
    """The events operations on PostgreSQL."""

    def events_after(self, after_seq: int, *, limit: int) -> list[EventRow]:
        # Raw SQL: peewee's row building was a quarter of the shipper's time.
        cursor = self.db.execute_sql(_SELECT_EVENTS, (after_seq, limit))
        return [EventRow(*row) for row in cursor.fetchall()]

    def last_event(self) -> EventRow | None:
        row = self.db.execute_sql(
            f"SELECT {_EVENTS} FROM events ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return EventRow(*row) if row else None

    def event_hash(self, seq: int) -> str | None:
        row = self.db.execute_sql("SELECT hash FROM events WHERE id = %s", (seq,)).fetchone()
        return row[0] if row else None

    def event_hashes(self, first: int, end: int) -> dict[int, str]:
        rows = self.db.execute_sql(
            "SELECT id, hash FROM events WHERE id >= %s AND id < %s", (first, end)
        ).fetchall()
        return dict(rows)

    def first_event_ts_after(self, seq: int) -> float | None:
        row = self.db.execute_sql(
            "SELECT ts FROM events WHERE id > %s ORDER BY id LIMIT 1", (seq,)
        ).fetchone()
        return row[0] if row else None

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

    def job_count(self) -> int:
        return int(self.db.execute_sql("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def service_components(self, *, besides: str) -> list[str]:
        return [
            row[0]
            for row in self.db.execute_sql(
                "SELECT DISTINCT component FROM heartbeats WHERE component != %s "
                "AND component NOT LIKE 'route:%%' ORDER BY component",
                (besides,),
            ).fetchall()
        ]

    def event_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRow]:
        wanted = list(dict.fromkeys(job_ids))
        found: dict[int, JobRow] = {}
        for start in range(0, len(wanted), 500):  # short statements
            part = wanted[start : start + 500]
            sql = _SELECT_JOBS.format(", ".join("%s" for _ in part))
            for row in self._rows(sql, part):
                row["source_path"] = bytes(row["source_path"])
                if row["dest_path"] is not None:
                    row["dest_path"] = bytes(row["dest_path"])
                found[row["id"]] = JobRow(**row)
        return found

    def missing_columns(self) -> list[str]:
        return schema_behind(self.db)  # type: ignore[arg-type]  # any peewee database

    @contextlib.contextmanager
    def hold_writes(self) -> Iterator[None]:
        """Stop only between two transactions of this process's other
        threads: a process frozen inside one keeps its row locks and the
        audit chain's lock from every node (the crash tests want a worker
        frozen mid-copy, not that; see :class:`.db.WriteGate`)."""
        with self.db.gate.hold():
            yield
