"""The SQL job store: events (see :class:`ketter.store.ports.events.EventsPort`);
``jobs_ahead_of_events`` (tuned for each engine's planner) and
``hold_writes`` (each backend's locks) are the backends'."""

from __future__ import annotations

from collections.abc import Iterable

from ketter.store.db import schema_behind
from ketter.store.rows import EVENT_COLUMNS, JOB_COLUMNS, EventRow, JobRow
from ketter.store.sql.core import SqlCore

_EVENTS = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)
_SELECT_EVENTS = f"SELECT {_EVENTS} FROM events WHERE id > ? ORDER BY id LIMIT ?"
_SELECT_JOBS = "SELECT {} FROM jobs WHERE id IN ({{}})".format(
    ", ".join(f'"{name}"' for name in JOB_COLUMNS)
)


class EventsShared(SqlCore):
    """The events operations on SQL."""

    def events_after(self, after_seq: int, *, limit: int) -> list[EventRow]:
        # Raw SQL: peewee's row building was a quarter of the shipper's time.
        cursor = self._exec(_SELECT_EVENTS, (after_seq, limit))
        return [EventRow(*row) for row in cursor.fetchall()]

    def last_event(self) -> EventRow | None:
        row = self._exec(
            f"SELECT {_EVENTS} FROM events WHERE id = (SELECT MAX(id) FROM events)"
        ).fetchone()
        return EventRow(*row) if row else None

    def event_hash(self, seq: int) -> str | None:
        row = self._exec("SELECT hash FROM events WHERE id = ?", (seq,)).fetchone()
        return row[0] if row else None

    def event_hashes(self, first: int, end: int) -> dict[int, str]:
        rows = self._exec(
            "SELECT id, hash FROM events WHERE id >= ? AND id < ?", (first, end)
        ).fetchall()
        return dict(rows)

    def first_event_ts_after(self, seq: int) -> float | None:
        row = self._exec(
            "SELECT ts FROM events WHERE id > ? ORDER BY id LIMIT 1", (seq,)
        ).fetchone()
        return row[0] if row else None

    def job_count(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def service_components(self, *, besides: str) -> list[str]:
        return [
            row[0]
            for row in self._exec(
                "SELECT DISTINCT component FROM heartbeats WHERE component != ? "
                "AND component NOT LIKE 'route:%' ORDER BY component",
                (besides,),
            ).fetchall()
        ]

    def event_jobs(self, job_ids: Iterable[int]) -> dict[int, JobRow]:
        wanted = list(dict.fromkeys(job_ids))
        found: dict[int, JobRow] = {}
        for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
            part = wanted[start : start + 500]
            sql = _SELECT_JOBS.format(", ".join("?" for _ in part))
            for row in self._rows(sql, part):
                row["source_path"] = bytes(row["source_path"])
                if row["dest_path"] is not None:
                    row["dest_path"] = bytes(row["dest_path"])
                found[row["id"]] = JobRow(**row)
        return found

    def missing_columns(self) -> list[str]:
        return schema_behind(self.db)  # any peewee database
