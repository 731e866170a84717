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
from ketter.mounts import mount_problem
from ketter.store.models import RouteStatus, database


def is_paused(route: str) -> bool:
    status = RouteStatus.get_or_none(RouteStatus.route == route)
    return bool(status and status.paused)


def pause_route(route: str, reason: str, *, now: float, room_needed: int | None = None) -> bool:
    """Pause ``route``; returns True when it was running (an event was written).

    ``room_needed``: paused because the destination is full, the bytes the
    job that did not fit needs free on top of ``min_free``; the route
    resumes only once they are (else it would resume, hit the same wall and
    pause again at every sweep, one alert each time).
    """
    db = database.obj
    with db.atomic():
        status = RouteStatus.get_or_none(RouteStatus.route == route)
        if status is not None and status.paused:
            return False
        (
            RouteStatus.insert(
                route=route,
                paused=1,
                reason=reason,
                since=now,
                updated_at=now,
                room_needed=room_needed,
            )
            .on_conflict_replace()
            .execute()
        )
        details: dict[str, object] = {"reason": reason}
        if room_needed is not None:
            details["room_needed"] = room_needed
        record_event("route_paused", now=now, route=route, details=details)
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
            RouteStatus.update(paused=0, reason=None, since=None, updated_at=now, room_needed=None)
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


def unavailable_reason(route: RouteConfig, *, room: int = 0) -> str | None:
    """Why ``route`` cannot run now (roots missing or unmounted, destination
    below ``min_free``, or without ``room`` bytes free on top of it), or
    ``None`` when it can.

    The mount check is :func:`ketter.mounts.mount_problem`, the same as the
    job's guard: a route paused because a same-device bind mount was
    unmounted resumes once it is mounted again (``os.path.ismount`` calls
    such a mount "not mounted" forever: issue #14, finding 5).
    """
    for label, root, mount in (
        ("source", route.source, route.source_mount),
        ("destination", route.destination, route.destination_mount),
    ):
        problem = mount_problem(label, root, mount)
        if problem is not None:
            return problem
        if not os.path.isdir(root):
            return f"{label} {root} does not exist or is not a folder"
        if not os.access(root, os.R_OK | os.X_OK):
            return f"{label} {root} is not readable by this account"
    return space_problem(route, room=room)


def space_problem(route: RouteConfig, *, room: int = 0) -> str | None:
    """Why the destination has no room: below ``min_free``, or fewer than
    ``room`` bytes free on top of it; None when there is room."""
    try:
        usage = shutil.disk_usage(route.destination)
    except OSError as exc:
        return f"destination {route.destination}: {exc.strerror}"
    needed = route.min_free.required(usage.total)
    if usage.free < needed:
        return (
            f"destination {route.destination} has {usage.free} bytes free, below "
            f"min_free {route.min_free} ({needed} bytes); free space, the route "
            "resumes by itself"
        )
    if room and usage.free - room < needed:
        return (
            f"destination {route.destination} has {usage.free} bytes free; a job needs "
            f"{room} bytes on top of min_free {route.min_free} ({needed} bytes); free "
            "space, the route resumes by itself"
        )
    return None
