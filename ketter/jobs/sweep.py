"""The recovery sweep: no due job is left without a doorbell.

Runs at worker start and every ``lease.sweep_interval``. It covers every way
a message can be lost — the watcher killed after committing a row but before
enqueueing it, a worker killed after Huey handed it a message but before the
claim, a worker killed mid-job (its lease expires) — by counting the jobs
that are due and unowned and ringing for those the queue does not cover
(rq's ``StartedJobRegistry.cleanup()`` in spirit). It also resumes paused
routes whose share came back and removes orphaned temporaries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ketter.config import Config
from ketter.engine.cleanup import find_orphans
from ketter.jobs.routes import resume_route, unavailable_reason
from ketter.jobs.shares import ShareCheck

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.sweep")


@dataclass
class SweepReport:
    due: int = 0
    pending: int = 0
    rung: list[int] = field(default_factory=list)
    expired_leases: int = 0
    resumed_routes: list[str] = field(default_factory=list)
    orphans_removed: int = 0


def due_jobs(store: JobStore, config: Config, now: float, limit: int) -> list[int]:
    """Ids of unowned jobs that are due, on running routes, best first; a
    route with ``max_parallel`` contributes only as many as it has free slots
    (ringing for the others would only wake workers that cannot take them)."""
    routes = {r.name: r.max_parallel or 0 for r in config.routes}
    return store.due_job_ids(routes, now=now, limit=limit)


def sweep(
    store: JobStore,
    config: Config,
    *,
    now: float,
    pending: Callable[[], int],
    ring: Callable[[int], None],
    cleanup_orphans: bool = False,
    shares: ShareCheck | None = None,
) -> SweepReport:
    """One sweep (pure of time: ``now`` is passed in, so tests need no sleeps)."""
    report = SweepReport()
    for status in store.paused_route_statuses():
        try:
            route = config.route(status.route)
        except KeyError:
            continue
        # A route paused because a job did not fit waits for room, but only
        # for jobs still waiting on it: the job that did not fit may have
        # been deleted, superseded or re-queued, and waiting for its room
        # kept the route paused for ever (review of #14 finding 17).
        if status.resume_at is not None and now < status.resume_at:
            # Backing off: the destination refused a write it showed room
            # for (a quota, another writer), so room alone proves nothing.
            continue
        room = room_needed(store, route.name, status.room_needed)
        if unavailable_reason(route, room=room) is not None:
            continue
        # Only once the mounts are there: a marker written into an empty
        # mount point would be hidden by the share mounted over it later.
        if shares is not None and shares.problem(route) is not None:
            continue  # still another share (or none) at a root: stays paused
        if resume_route(store, route.name, now=now):
            report.resumed_routes.append(route.name)
    report.expired_leases = store.expired_lease_count(now)
    report.pending = pending()
    # Ring only for due jobs beyond what the queue already holds; a message
    # is a doorbell for "the best due job", so which ids we ring for matters
    # less than how many (duplicates are harmless, just wasted wake-ups).
    window = max(report.pending + 1000, 1000)
    due = due_jobs(store, config, now, window)
    report.due = len(due)
    for job_id in due[report.pending :]:
        ring(job_id)
        report.rung.append(job_id)
    if cleanup_orphans:
        report.orphans_removed = remove_orphans(store, config)
    if report.rung or report.resumed_routes or report.orphans_removed:
        log.info(
            "sweep",
            extra={
                "ketter.due": report.due,
                "ketter.pending": report.pending,
                "ketter.rung": len(report.rung),
                "ketter.expired_leases": report.expired_leases,
                "ketter.resumed_routes": report.resumed_routes,
                "ketter.orphans_removed": report.orphans_removed,
            },
        )
    return report


def room_needed(store: JobStore, route: str, paused_for: int | None) -> int:
    """The free bytes a route paused for room waits for: what the job that
    did not fit needed (``paused_for``), but no more than the smallest job
    still waiting on the route needs; 0 once none is waiting (any of them
    that fits can run; one that does not pauses the route again). Sizes not
    known yet (0) are left out."""
    if not paused_for:
        return 0
    smallest = store.smallest_waiting_size(route)
    if smallest is None:
        return 0
    return min(paused_for, int(smallest))


def remove_orphans(store: JobStore, config: Config) -> int:
    """Remove temporaries (``.ketter-<job>-…``) of jobs that are no longer active.

    Each candidate's job is looked up when it is found, not from a list taken
    before a walk that may last minutes: a job created meanwhile keeps its
    temporaries.
    """

    def is_active(job: str) -> bool:
        if not job.isdigit():
            return False
        return store.is_active(int(job))

    removed = 0
    for route in config.routes:
        if not os.path.isdir(route.destination) or unavailable_reason(route) is not None:
            continue
        try:
            removed += len(find_orphans(os.fsencode(route.destination), is_active))
        except OSError as exc:
            log.warning("orphan sweep failed: %s", exc, extra={"ketter.route": route.name})
    return removed
