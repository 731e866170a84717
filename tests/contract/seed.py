"""Rows put straight into a job store for the contract tests of the jobs and
leases areas (tests may look inside the store; the intake area has its own
contract for creating jobs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ketter.store.memory import MemoryJobStore
from ketter.store.port import JobStore
from ketter.store.rows import JOB_COLUMNS, JobRow, RouteStatusRow

_ids = iter(range(1, 1_000_000))


def put_job(store: JobStore, **fields: Any) -> int:
    """A job row (``detected`` on route ``r`` unless told), its id."""
    values: dict[str, Any] = {
        "route": "r",
        "mode": "copy",
        "kind": "file",
        "source_path": b"/src/a",
        "source_display": "/src/a",
        "source_key": f"key-{next(_ids)}",
        "state": "detected",
        "node": "n1",
        "created_at": 1.0,
        "updated_at": 1.0,
        "source_size": 10,
        **fields,
    }
    if isinstance(store, MemoryJobStore):
        with store.transaction():
            job_id = store.tables.next_id("jobs")
            store.tables.jobs[job_id] = JobRow(id=job_id, **values)
        return job_id
    full = JobRow(id=0, **values)
    names = [n for n in JOB_COLUMNS if n != "id"]
    db = store.db  # type: ignore[attr-defined]
    sql = "INSERT INTO jobs ({}) VALUES ({}) RETURNING id".format(
        ", ".join(f'"{n}"' for n in names), ", ".join(db.param for _ in names)
    )
    with store.transaction():
        return int(db.execute_sql(sql, [getattr(full, n) for n in names]).fetchone()[0])


def pause(store: JobStore, route: str) -> None:
    """Mark ``route`` paused in ``route_status``."""
    if isinstance(store, MemoryJobStore):
        with store.transaction():
            store.tables.route_status[route] = RouteStatusRow(
                route=route, updated_at=1.0, paused=1, reason="test", since=1.0
            )
        return
    with store.transaction():
        store.db.execute_sql(  # type: ignore[attr-defined]
            "INSERT INTO route_status "
            "(route, paused, reason, since, updated_at, room_pauses, held) "
            f"VALUES ({store.db.param}, 1, 'test', 1.0, 1.0, 0, 0)",  # type: ignore[attr-defined]
            (route,),
        )


def events_of(store: JobStore, job_id: int) -> list[tuple[str, str | None, str | None, int | None]]:
    """The job's events: (event, from, to, attempt), in order."""
    return [
        (e.event, e.from_state, e.to_state, e.attempt)
        for e in store.events_after(0, limit=1000)
        if e.job_id == job_id
    ]


def row(store: JobStore, job_id: int) -> JobRow:
    return dataclasses.replace(store.get_job(job_id))
