"""Route pause and resume: a share that is down or full pauses its route.

While a route is paused its jobs are not claimed and wait without using up
attempts; one ``route_paused`` event (and alert) goes out per outage, not one
per job. The recovery sweep checks paused routes and resumes them by itself
(``route_resumed``) once the roots are back and there is room.
"""

from __future__ import annotations

import os
import shutil

from ketter.audit.chain import record_event
from ketter.config import RouteConfig
from ketter.store.models import RouteStatus, database


def is_paused(route: str) -> bool:
    status = RouteStatus.get_or_none(RouteStatus.route == route)
    return bool(status and status.paused)


def pause_route(route: str, reason: str, *, now: float) -> bool:
    """Pause ``route``; returns True when it was running (an event was written)."""
    db = database.obj
    with db.atomic():
        status = RouteStatus.get_or_none(RouteStatus.route == route)
        if status is not None and status.paused:
            return False
        (
            RouteStatus.insert(route=route, paused=1, reason=reason, since=now, updated_at=now)
            .on_conflict_replace()
            .execute()
        )
        record_event("route_paused", now=now, route=route, details={"reason": reason})
    return True


def resume_route(route: str, *, now: float) -> bool:
    """Resume ``route``; returns True when it was paused."""
    db = database.obj
    with db.atomic():
        status = RouteStatus.get_or_none(RouteStatus.route == route)
        if status is None or not status.paused:
            return False
        outage = now - (status.since or now)
        (
            RouteStatus.update(paused=0, reason=None, since=None, updated_at=now)
            .where(RouteStatus.route == route)
            .execute()
        )
        record_event(
            "route_resumed",
            now=now,
            route=route,
            details={"paused_for_s": round(outage, 3), "reason_was": status.reason},
        )
    return True


def unavailable_reason(route: RouteConfig) -> str | None:
    """Why ``route`` cannot run now (roots missing or unmounted, destination
    below ``min_free``), or ``None`` when it can."""
    for label, root, mount in (
        ("source", route.source, route.source_mount),
        ("destination", route.destination, route.destination_mount),
    ):
        if mount is not None:
            if not os.path.ismount(mount):
                return f"{label}_mount {mount} is not mounted"
            try:
                if os.stat(root).st_dev != os.stat(mount).st_dev:
                    return f"{label} {root} is not on the filesystem mounted at {mount}"
            except OSError as exc:
                return f"{label} {root}: {exc.strerror}"
        if not os.path.isdir(root):
            return f"{label} {root} does not exist or is not a folder"
        if not os.access(root, os.R_OK | os.X_OK):
            return f"{label} {root} is not readable by this account"
    try:
        usage = shutil.disk_usage(route.destination)
    except OSError as exc:
        return f"destination {route.destination}: {exc.strerror}"
    needed = route.min_free.required(usage.total)
    if usage.free < needed:
        return (
            f"destination {route.destination} has {usage.free} bytes free, below "
            f"min_free {route.min_free} ({needed} bytes)"
        )
    return None
