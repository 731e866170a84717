"""The read model on an SQL job store: the queries of ``ketter jobs``/``job``/
``status`` (``cli/inspect.py``), of ``ketter health`` (``health.py``) and of
the API's reads, written once for SQLite and PostgreSQL (the differences are
:mod:`ketter.store.dialect`'s). How a backend opens it is its own module's
(:mod:`ketter.store.sqlite_read`, :mod:`ketter.store.postgres.read`).

Only reads, never a write or a write lock: the services keep running while
an operator or a monitoring account asks.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from ketter.jobs.states import TERMINAL, State
from ketter.store.dialect import SQLITE, Dialect
from ketter.store.port import (
    HISTORY_FIELDS,
    HealthFacts,
    HeartbeatFact,
    HeldRoute,
    JobDetail,
    JobEvent,
    JobFilter,
    JobPage,
    JobRecord,
    ManifestEntry,
    PausedRoute,
    RouteStateCount,
    RunningJob,
    StateCount,
    StatusView,
    StoreUnreadable,
)
from ketter.store.rows import ApiTokenRow
from ketter.store.view_time import view_times

#: States in which a job with a live lease is being worked on.
IN_FLIGHT = tuple(s.value for s in State if s not in TERMINAL and s is not State.RETRY_WAIT)


def iso(ts: float | None) -> str | None:
    """A Unix time as ``2026-01-02T03:04:05.678Z`` (as the view prints)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


#: Those columns, the times last and raw (``jobs.<name>_at``).
_JOB_SELECT = (
    "SELECT v.job_id, v.route, v.mode, v.kind, v.state, v.attempt, v.source, "
    "v.destination, v.bytes, v.files, v.sha256, v.xxh128, v.seconds, v.mb_per_s, "
    "v.error, v.node, j.created_at, j.started_at, j.placed_at, j.completed_at, "
    "j.updated_at, j.next_attempt_at FROM job_history AS v JOIN jobs AS j ON j.id = v.job_id"
)


def _shown(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A :data:`_JOB_SELECT` row in the view's order, times formatted."""
    times = view_times(row[16:])
    return row[:12] + times[:5] + row[12:14] + times[5:] + row[14:16]


class SqlReadStore:
    """:class:`ketter.store.port.JobReadStore` on an SQL job store (SQLite or
    PostgreSQL: the SQL is written once, :mod:`ketter.store.dialect`)."""

    def __init__(
        self,
        execute: Callable[..., Any],
        close: Callable[[], Any],
        how: str,
        *,
        dialect: Dialect = SQLITE,
        errors: tuple[type[BaseException], ...] = (),
        lease_clock: Callable[[float], float] | None = None,
    ) -> None:
        self._execute = execute
        self._close = close
        #: How the store was opened (``read-only``, ``immutable (…)``, …).
        self.how = how
        self.dialect = dialect
        #: The driver's errors, raised as :class:`StoreUnreadable`.
        self._errors = errors
        #: The time leases are compared with (the database's clock on
        #: PostgreSQL, :meth:`ketter.store.ports.leases.LeasesPort.lease_clock`).
        self._lease_clock = lease_clock or (lambda now: now)

    def close(self) -> None:
        self._close()

    def clock(self, now: float) -> float:
        """The time heartbeats and leases are stamped on (the database's
        clock on PostgreSQL, ``now`` on SQLite)."""
        return self._lease_clock(now)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self._execute(self.dialect.sql(sql), tuple(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except self._errors as exc:  # the raw connections; peewee's errors pass as before
            raise StoreUnreadable(str(exc)) from exc

    # -- jobs, job ---------------------------------------------------------

    def _jobs(self, where: str, params: tuple[Any, ...]) -> tuple[JobRecord, ...]:
        """``job_history`` rows, the view's columns in its order, but its six
        times taken raw from ``jobs`` and formatted by
        :func:`~ketter.store.view_time.view_times` (the view's ``strftime``
        was half a page's query time; the flattened view computes only the
        columns selected)."""
        try:
            cursor = self._execute(self.dialect.sql(f"{_JOB_SELECT} WHERE {where}"), params)
            rows = cursor.fetchall()
        except self._errors as exc:
            raise StoreUnreadable(str(exc)) from exc
        return tuple(
            JobRecord.from_row(dict(zip(HISTORY_FIELDS, _shown(row), strict=True))) for row in rows
        )

    def list_jobs(self, filters: JobFilter, limit: int, cursor: int | None = None) -> JobPage:
        where: list[str] = []
        params: list[Any] = []
        if filters.state:
            where.append("state = ?")
            params.append(filters.state)
        if filters.route:
            where.append("route = ?")
            params.append(filters.route)
        if filters.routes is not None:
            where.append(f"route IN ({','.join('?' * len(filters.routes))})")
            params.extend(filters.routes)
        if filters.since is not None:
            where.append("created_at >= ?")
            params.append(filters.since)
        if filters.until is not None:
            where.append("created_at < ?")
            params.append(filters.until)
        if filters.name:
            where.append("instr(source_display, ?) > 0")
            params.append(filters.name)
        # Always a range of the primary key, walked from its top down: without
        # one, ``ORDER BY id DESC LIMIT`` plans as a scan of every job.
        if cursor is not None:
            where.append("id < ?")
            params.append(cursor)
        else:
            where.append("id <= (SELECT MAX(id) FROM jobs)")
        # The filters on the table (its columns and indexes), the view's
        # formatting on the page alone.
        sql = "SELECT id FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        jobs = self._jobs(f"v.job_id IN ({sql}) ORDER BY v.job_id DESC", (*params, limit))
        full = limit > 0 and len(jobs) == limit
        return JobPage(jobs, jobs[-1].job_id if full else None)

    def job_detail(self, job_id: int) -> JobDetail | None:
        jobs = self._jobs("v.job_id = ?", (job_id,))
        if not jobs:
            return None
        events = self._rows(
            "SELECT id AS seq, ts, event, from_state, to_state, attempt, node, "
            'pid, "user", details, hash, prev_hash, job_id, route FROM events '
            "WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        files = self._rows(
            "SELECT relpath_display AS path, size, sha256 FROM job_files "
            "WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return JobDetail(
            job=jobs[0],
            events=tuple(_event(e) for e in events),
            files=tuple(ManifestEntry(**f) for f in files),
        )

    def running_jobs(self, now: float) -> tuple[RunningJob, ...]:
        return self._running(now)

    def job_progress(self, job_id: int, now: float) -> RunningJob | None:
        found = self._running(now, job_id)
        return found[0] if found else None

    def events_after(self, after: int, limit: int) -> tuple[JobEvent, ...]:
        rows = self._rows(
            "SELECT id AS seq, ts, event, from_state, to_state, attempt, node, "
            'pid, "user", details, hash, prev_hash, job_id, route FROM events '
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return tuple(_event(e) for e in rows)

    def api_token_by_hash(self, secret_sha256: str) -> ApiTokenRow | None:
        """The API token whose secret has this SHA-256 (the API's per-request
        authentication reads it here, on the read connection)."""
        rows = self._rows("SELECT * FROM api_tokens WHERE secret_sha256 = ?", (secret_sha256,))
        if not rows:
            return None
        row = rows[0]
        return ApiTokenRow(
            **{
                **row,
                "scopes": tuple(json.loads(row["scopes"])),
                "routes": tuple(json.loads(row["routes"])),
            }
        )

    # -- status --------------------------------------------------------------

    def status(self, now: float) -> StatusView:
        # job_counts: kept by triggers on jobs (migrations 0010, 0012), a few
        # rows instead of a count of every job.
        by_state = self._rows(
            "SELECT state, SUM(jobs) AS jobs, SUM(bytes) AS bytes FROM job_counts "
            "WHERE jobs > 0 GROUP BY state ORDER BY state",
        )
        by_route = self._rows(
            "SELECT route, state, jobs FROM job_counts WHERE jobs > 0 ORDER BY route, state",
        )
        paused = self.paused_routes()
        beats = self.heartbeats()
        running = self._running(now)
        terminal = self._terminal_ids(beats)
        for beat in beats:
            _drop_finished(beat.details, terminal)
        return StatusView(
            states=tuple(StateCount(**r) for r in by_state),
            routes=tuple(RouteStateCount(**r) for r in by_route),
            running=running,
            paused=paused,
            heartbeats=beats,
            held=self.held_routes(),
        )

    def _running(self, now: float, job_id: int | None = None) -> tuple[RunningJob, ...]:
        marks = ",".join("?" * len(IN_FLIGHT))
        one = "" if job_id is None else "AND j.id = ? "
        rows = self._rows(
            "SELECT j.id AS job_id, j.route, j.state, j.bytes_done, j.size, j.progress_at, "
            "j.source_display AS source, "
            "(SELECT MAX(e.ts) FROM events AS e WHERE e.job_id = j.id "
            " AND e.event IN ('claim', 'resume', 'recover')) AS claimed_at "
            f"FROM jobs AS j WHERE j.state IN ({marks}) AND j.lease_owner IS NOT NULL "
            # By state first: with the statistics of a store whose history
            # is nearly all one state, SQLite walked all of jobs in id order
            # to spare a sort (0.6-1.3 s on a million jobs); this order is the
            # index jobs_state_id's (18 ms). Sorted by id below.
            f"AND j.lease_expires_at > ? {one}ORDER BY j.state, j.id",
            (*IN_FLIGHT, self._lease_clock(now), *(() if job_id is None else (job_id,))),
        )
        running = []
        for row in rows:
            start, at = row.pop("claimed_at"), row.pop("progress_at")
            rate = row["bytes_done"] / (at - start) if start and at and at > start else None
            running.append(RunningJob(**row, rate=rate))
        return tuple(sorted(running, key=lambda r: r.job_id))

    def _terminal_ids(self, beats: Iterable[HeartbeatFact]) -> set[int]:
        """Ids among the heartbeats' running jobs that have finished since."""
        ids = running_ids(beats)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        ends = ",".join("?" * len(TERMINAL))
        found = self._rows(
            f"SELECT id FROM jobs WHERE id IN ({marks}) AND state IN ({ends})",
            (*sorted(ids), *(s.value for s in TERMINAL)),
        )
        return {row["id"] for row in found}

    def paused_routes(self) -> tuple[PausedRoute, ...]:
        rows = self._rows("SELECT route, reason, since FROM route_status WHERE paused = 1")
        return tuple(PausedRoute(**r) for r in rows)

    def held_routes(self) -> tuple[HeldRoute, ...]:
        rows = self._rows(
            "SELECT route, held_reason AS reason, held_by AS by, held_since AS since "
            "FROM route_status WHERE held = 1 ORDER BY route"
        )
        return tuple(HeldRoute(**r) for r in rows)

    def heartbeats(self, node: str | None = None) -> tuple[HeartbeatFact, ...]:
        rows = self._rows(
            "SELECT component, node, pid, ts, details FROM heartbeats ORDER BY component"
        )
        return tuple(
            HeartbeatFact(
                component=r["component"],
                node=r["node"],
                pid=r["pid"],
                ts=r["ts"],
                details=json.loads(r["details"]),
            )
            for r in rows
            if node is None or r["node"] == node
        )

    # -- health --------------------------------------------------------------

    def health_facts(self, node: str) -> HealthFacts:
        rows = self._rows(
            "SELECT component, node, pid, ts, details FROM heartbeats WHERE node = ?", (node,)
        )
        return HealthFacts(heartbeats={r["component"]: health_beat(r) for r in rows})


def _event(e: dict[str, Any]) -> JobEvent:
    return JobEvent(
        seq=e["seq"],
        time=iso(e["ts"]),
        event=e["event"],
        from_state=e["from_state"],
        to_state=e["to_state"],
        attempt=e["attempt"],
        node=e["node"],
        pid=e["pid"],
        user=e["user"],
        details=json.loads(e["details"]),
        hash=e["hash"],
        prev_hash=e["prev_hash"],
        job_id=e["job_id"],
        route=e["route"],
    )


def health_beat(row: dict[str, Any]) -> HeartbeatFact:
    """A heartbeat row as ``ketter health`` reads it: a damaged or non-object
    ``details`` reads as ``{}`` (health reports; it must not crash)."""
    try:
        parsed = json.loads(row["details"]) if row["details"] else {}
    except ValueError:
        parsed = {}
    return HeartbeatFact(
        component=row["component"],
        node=row["node"],
        pid=int(row["pid"]),
        ts=float(row["ts"]),
        details=parsed if isinstance(parsed, dict) else {},
    )


def running_ids(beats: Iterable[HeartbeatFact]) -> set[int]:
    """The job ids the heartbeats list as running."""
    ids: set[int] = set()
    for beat in beats:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ids |= {int(r["job_id"]) for r in beat.details.get("running", [])}
    return ids


def _drop_finished(details: Any, terminal: set[int]) -> None:
    if isinstance(details, dict) and isinstance(details.get("running"), list):
        details["running"] = [
            r
            for r in details["running"]
            if not (isinstance(r, dict) and r.get("job_id") in terminal)
        ]
