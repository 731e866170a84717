"""An in-memory :class:`ketter.store.port.JobReadStore` for unit tests.

Built from plain rows shaped like the tables (``jobs``, ``events``,
``job_files``, ``route_status``, ``heartbeats`` columns), it answers what
:mod:`ketter.store.sqlite_read` answers; the contract suite
(``tests/unit/store/test_read_contract.py``) holds both to the same results.
The ``job_history`` view is computed here the way SQLite computes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ketter.jobs.states import TERMINAL
from ketter.store.port import (
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
)
from ketter.store.sql_read import IN_FLIGHT, _drop_finished, health_beat, iso, running_ids
from ketter.store.view_time import view_time

Row = Mapping[str, Any]

#: Events after which a job's running claim began (the rate is measured since).
_CLAIM_EVENTS = ("claim", "resume", "recover")


def history_row(job: Row) -> JobRecord:
    """One ``jobs`` row as the ``job_history`` view shows it (migration 0005)."""
    seconds, moved = job.get("transfer_seconds"), job.get("transfer_bytes")
    return JobRecord(
        job_id=job["id"],
        route=job["route"],
        mode=job["mode"],
        kind=job["kind"],
        state=job["state"],
        attempt=job.get("attempt", 0),
        source=job["source_display"],
        destination=job.get("dest_display"),
        bytes=job.get("size", 0),
        files=job.get("file_count", 1),
        sha256=job.get("sha256"),
        xxh128=job.get("xxh128"),
        created=view_time(job["created_at"]),
        started=view_time(job.get("started_at")),
        placed=view_time(job.get("placed_at")),
        completed=view_time(job.get("completed_at")),
        updated=view_time(job["updated_at"]),
        seconds=None if seconds is None else round(seconds, 3),
        mb_per_s=(
            round(moved / seconds / 1e6, 1)
            if seconds and seconds > 0 and moved and moved > 0
            else None
        ),
        next_attempt=view_time(job.get("next_attempt_at")),
        error=job.get("error"),
        node=job["node"],
    )


class MemoryReadStore:
    """The read model over rows held in lists (copied at construction)."""

    def __init__(
        self,
        *,
        jobs: Iterable[Row] = (),
        events: Iterable[Row] = (),
        files: Iterable[Row] = (),
        routes: Iterable[Row] = (),
        heartbeats: Iterable[Row] = (),
    ) -> None:
        self.jobs = sorted((dict(r) for r in jobs), key=lambda r: r["id"])
        self.events = sorted((dict(r) for r in events), key=lambda r: r["id"])
        self.files = sorted((dict(r) for r in files), key=lambda r: r["id"])
        self.routes = [dict(r) for r in routes]
        self.beats = sorted((dict(r) for r in heartbeats), key=lambda r: r["component"])

    def close(self) -> None:
        pass

    def list_jobs(self, filters: JobFilter, limit: int, cursor: int | None = None) -> JobPage:
        found = [
            history_row(j)
            for j in reversed(self.jobs)
            if (not filters.state or j["state"] == filters.state)
            and (not filters.route or j["route"] == filters.route)
            and (filters.routes is None or j["route"] in filters.routes)
            and (filters.since is None or j["created_at"] >= filters.since)
            and (filters.until is None or j["created_at"] < filters.until)
            and (not filters.name or filters.name in j["source_display"])
            and (cursor is None or j["id"] < cursor)
        ]
        # SQLite's LIMIT with a negative count means no limit.
        jobs = tuple(found if limit < 0 else found[:limit])
        full = limit > 0 and len(jobs) == limit
        return JobPage(jobs, jobs[-1].job_id if full else None)

    def job_detail(self, job_id: int) -> JobDetail | None:
        job = next((j for j in self.jobs if j["id"] == job_id), None)
        if job is None:
            return None
        return JobDetail(
            job=history_row(job),
            events=tuple(_event(e) for e in self.events if e.get("job_id") == job_id),
            files=tuple(
                ManifestEntry(path=f["relpath_display"], size=f["size"], sha256=f.get("sha256"))
                for f in self.files
                if f["job_id"] == job_id
            ),
        )

    def running_jobs(self, now: float) -> tuple[RunningJob, ...]:
        return self._running(now)

    def job_progress(self, job_id: int, now: float) -> RunningJob | None:
        found = [r for r in self._running(now) if r.job_id == job_id]
        return found[0] if found else None

    def events_after(self, after: int, limit: int) -> tuple[JobEvent, ...]:
        return tuple(_event(e) for e in self.events if e["id"] > after)[:limit]

    def status(self, now: float) -> StatusView:
        states = sorted({j["state"] for j in self.jobs})
        by_state = tuple(
            StateCount(
                state=s,
                jobs=sum(1 for j in self.jobs if j["state"] == s),
                bytes=sum(j.get("size", 0) for j in self.jobs if j["state"] == s),
            )
            for s in states
        )
        pairs = sorted({(j["route"], j["state"]) for j in self.jobs})
        by_route = tuple(
            RouteStateCount(
                route=r,
                state=s,
                jobs=sum(1 for j in self.jobs if (j["route"], j["state"]) == (r, s)),
            )
            for r, s in pairs
        )
        beats = self.heartbeats()
        ids = running_ids(beats)
        ended = {s.value for s in TERMINAL}
        terminal = {j["id"] for j in self.jobs if j["id"] in ids and j["state"] in ended}
        for beat in beats:
            _drop_finished(beat.details, terminal)
        return StatusView(
            states=by_state,
            routes=by_route,
            running=self._running(now),
            paused=self.paused_routes(),
            heartbeats=beats,
            held=self.held_routes(),
        )

    def _running(self, now: float) -> tuple[RunningJob, ...]:
        running = []
        for j in self.jobs:
            live = j.get("lease_owner") is not None and (j.get("lease_expires_at") or 0) > now
            if j["state"] not in IN_FLIGHT or not live:
                continue
            claims = [
                e["ts"]
                for e in self.events
                if e.get("job_id") == j["id"] and e["event"] in _CLAIM_EVENTS
            ]
            start, at = max(claims, default=None), j.get("progress_at")
            done = j.get("bytes_done", 0)
            rate = done / (at - start) if start and at and at > start else None
            running.append(
                RunningJob(
                    job_id=j["id"],
                    route=j["route"],
                    state=j["state"],
                    bytes_done=done,
                    size=j.get("size", 0),
                    source=j["source_display"],
                    rate=rate,
                )
            )
        return tuple(running)

    def paused_routes(self) -> tuple[PausedRoute, ...]:
        return tuple(
            PausedRoute(route=r["route"], reason=r.get("reason"), since=r.get("since"))
            for r in self.routes
            if r.get("paused") == 1
        )

    def held_routes(self) -> tuple[HeldRoute, ...]:
        return tuple(
            HeldRoute(
                route=r["route"],
                reason=r.get("held_reason"),
                by=r.get("held_by"),
                since=r.get("held_since"),
            )
            for r in sorted(self.routes, key=lambda r: r["route"])
            if r.get("held") == 1
        )

    def clock(self, now: float) -> float:
        return now

    def heartbeats(self, node: str | None = None) -> tuple[HeartbeatFact, ...]:
        return tuple(
            HeartbeatFact(
                component=b["component"],
                node=b["node"],
                pid=b["pid"],
                ts=b["ts"],
                details=json.loads(b["details"]),
            )
            for b in self.beats
            if node is None or b["node"] == node
        )

    def health_facts(self, node: str) -> HealthFacts:
        return HealthFacts(
            heartbeats={b["component"]: health_beat(b) for b in self.beats if b["node"] == node}
        )


def _event(e: Row) -> JobEvent:
    return JobEvent(
        seq=e["id"],
        time=iso(e["ts"]),
        event=e["event"],
        from_state=e.get("from_state"),
        to_state=e.get("to_state"),
        attempt=e.get("attempt"),
        node=e["node"],
        pid=e["pid"],
        user=e["user"],
        details=json.loads(e["details"]),
        hash=e.get("hash"),
        prev_hash=e.get("prev_hash"),
        job_id=e.get("job_id"),
        route=e.get("route"),
    )
