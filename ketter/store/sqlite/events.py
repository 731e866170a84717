"""SQLite job store: events (see :class:`ketter.store.ports.events.EventsPort`)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator

from ketter.store.db import schema_behind
from ketter.store.rows import EVENT_COLUMNS, JOB_COLUMNS, EventRow, JobRow
from ketter.store.sqlite.core import SqliteCore

_EVENTS = ", ".join(f'"{name}"' for name in EVENT_COLUMNS)
_SELECT_EVENTS = f"SELECT {_EVENTS} FROM events WHERE id > ? ORDER BY id LIMIT ?"
_SELECT_JOBS = "SELECT {} FROM jobs WHERE id IN ({{}})".format(
    ", ".join(f'"{name}"' for name in JOB_COLUMNS)
)


class EventsSql(SqliteCore):
    """The events operations on SQLite."""

    def events_after(self, after_seq: int, *, limit: int) -> list[EventRow]:
        # Raw SQL: peewee's row building was a quarter of the shipper's time.
        cursor = self.db.execute_sql(_SELECT_EVENTS, (after_seq, limit))
        return [EventRow(*row) for row in cursor.fetchall()]

    def last_event(self) -> EventRow | None:
        row = self.db.execute_sql(
            f"SELECT {_EVENTS} FROM events WHERE id = (SELECT MAX(id) FROM events)"
        ).fetchone()
        return EventRow(*row) if row else None

    def event_hash(self, seq: int) -> str | None:
        row = self.db.execute_sql("SELECT hash FROM events WHERE id = ?", (seq,)).fetchone()
        return row[0] if row else None

    def event_hashes(self, first: int, end: int) -> dict[int, str]:
        rows = self.db.execute_sql(
            "SELECT id, hash FROM events WHERE id >= ? AND id < ?", (first, end)
        ).fetchall()
        return dict(rows)

    def first_event_ts_after(self, seq: int) -> float | None:
        row = self.db.execute_sql(
            "SELECT ts FROM events WHERE id > ? ORDER BY id LIMIT 1", (seq,)
        ).fetchone()
        return row[0] if row else None

    def jobs_ahead_of_events(
        self, *, limit: int = 20
    ) -> list[tuple[int, str, int | None, str | None]]:
        # Each job's last state-changing event found through events_job_id
        # (a few index entries per job), not a grouping of every event into a
        # temporary table: 5.1 s instead of 27.5 s on 1,000,000 jobs and
        # 7 M events (#19). Still a read of every job: the check of a history.
        rows = self.db.execute_sql(
            "SELECT j.id, j.state, e.id, e.to_state FROM jobs j "
            "LEFT JOIN events e ON e.id = (SELECT MAX(x.id) FROM events x "
            "  WHERE x.job_id = j.id AND x.to_state IS NOT NULL) "
            "WHERE e.to_state IS NULL OR e.to_state != j.state ORDER BY j.id LIMIT ?",
            (limit,),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def job_count(self) -> int:
        return int(self.db.execute_sql("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def service_components(self, *, besides: str) -> list[str]:
        return [
            row[0]
            for row in self.db.execute_sql(
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
        return schema_behind(self.db)

    @contextlib.contextmanager
    def hold_writes(self) -> Iterator[None]:
        """Stop only between two writes of this process's other threads.

        A process frozen while one of its threads holds SQLite's write lock
        blocks every other writer of the job store (a limit of SQLite, see
        docs/guarantees.md). The crash tests want a worker frozen mid-copy,
        not that. So hold the store's in-process writer mutex (every write
        transaction of this process takes it first: none can be open or
        start) and check that the lock is free (an autocommit write of
        another thread may just hold it); the mutex is given back once the
        process runs again.
        """
        mutex = getattr(self.db, "_writer", None)
        held = mutex.acquire(timeout=10) if mutex is not None else False
        try:
            _wait_for_write_lock(getattr(self.db, "database", None))
            yield
        finally:
            if held and mutex is not None:
                mutex.release()


def _wait_for_write_lock(path: str | None) -> None:
    """Take and release the job store's write lock once (up to 10 s)."""
    if not path:
        return
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        for _ in range(2000):
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                time.sleep(0.005)
    finally:
        con.close()
