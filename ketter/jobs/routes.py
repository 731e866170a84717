"""Route pause and resume: a share that is down or full pauses its route.

While a route is paused its jobs are not claimed and wait without using up
attempts; one ``route_paused`` event (and alert) goes out per outage, not one
per job. The recovery sweep checks paused routes and resumes them by itself
(``route_resumed``) once the roots are back and there is room.

A destination that refuses writes while it shows free space (a quota,
EDQUOT, or space another writer took between the check and the write) would
resume at every sweep and pause again at the next try, one alert each time,
for ever. So pauses for room count as one episode until a job of the route
is delivered: only the first alerts, and each later one waits longer before
the sweep resumes the route (``resume_at``, :func:`room_backoff`).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

from ketter.choices import Mode
from ketter.config import RouteConfig
from ketter.engine.oserrors import read_only_reason
from ketter.mounts import mount_problem

if TYPE_CHECKING:
    from ketter.store.port import JobStore

#: The longest wait between two tries of a route whose destination keeps
#: refusing writes it shows room for (or ``retry.max_delay`` when longer).
ROOM_BACKOFF_CAP = 900.0


def is_paused(store: JobStore, route: str) -> bool:
    status = store.route_status(route)
    return bool(status and status.paused)


def pause_route(
    store: JobStore,
    route: str,
    reason: str,
    *,
    now: float,
    room_needed: int | None = None,
    room_pauses: int | None = None,
    resume_at: float | None = None,
) -> bool:
    """Pause ``route``; returns True when it was running (an event was written).

    ``room_needed``: paused because the destination is full, the bytes the
    job that did not fit needs free on top of ``min_free``; the route
    resumes only once they are (else it would resume, hit the same wall and
    pause again at every sweep, one alert each time). ``room_pauses``: which
    pause for room of the episode this is (default: the next one,
    :func:`room_pauses_before`); ``resume_at``: the sweep does not resume the
    route before then (:func:`room_backoff`).
    """
    return store.pause_route(
        route,
        reason,
        now=now,
        room_needed=room_needed,
        room_pauses=room_pauses,
        resume_at=resume_at,
    )


def room_pauses_before(store: JobStore, route: str) -> int:
    """How many times ``route`` paused for room with nothing of it delivered
    since: 0 when none, or when a job of the route completed after the last
    one (the episode is over)."""
    return store.room_pauses_before(route)


def room_backoff(pauses: int, max_delay: float) -> float:
    """The wait before the ``pauses``-th try of an episode: ``max_delay``,
    doubling with each pause, at most :data:`ROOM_BACKOFF_CAP` (or
    ``max_delay`` when that is longer)."""
    cap = max(ROOM_BACKOFF_CAP, max_delay)
    return min(max_delay * 2 ** min(max(pauses - 1, 0), 32), cap)


def room_wait_reason(
    route: RouteConfig, message: str, *, room: int, wait: float, now: float, roomy: bool
) -> str:
    """The pause reason of a route that waits ``wait`` seconds before its next
    try: why (the destination shows room the write did not get, or the job
    did not fit again with nothing delivered since the last resume) and when."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + wait))
    if not roomy:
        return (
            f"{message}; it did not fit again with nothing delivered since the route "
            f"resumed: next try at {at} at the earliest (waiting {wait:g} s)"
        )
    try:
        usage = shutil.disk_usage(route.destination)
        shown = f"{usage.free} bytes (min_free {route.min_free}: "
        shown += f"{route.min_free.required(usage.total)} bytes)"
    except OSError as exc:
        shown = f"unknown ({exc.strerror})"
    return (
        f"{message}; quota or space taken by another writer: free space shown "
        f"{shown}, the job needs {room} bytes; next try at {at} (waiting {wait:g} s, "
        "doubling while nothing is delivered)"
    )


def resume_route(store: JobStore, route: str, *, now: float) -> bool:
    """Resume ``route``; returns True when it was paused."""
    return store.resume_route(route, now=now)


def unavailable_reason(route: RouteConfig, *, room: int = 0) -> str | None:
    """Why ``route`` cannot run now (roots missing or unmounted, destination
    below ``min_free``, or without ``room`` bytes free on top of it), or
    ``None`` when it can.

    The destination (and a move route's source, whose files it deletes) must
    be on a writable mount (:func:`ketter.engine.oserrors.read_only_reason`,
    from the mount table: it writes nothing).

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
        if label == "destination" or route.mode == Mode.MOVE:
            # A read-only mount (a folder outside the unit's ReadWritePaths=,
            # a filesystem mounted ro): EROFS for every job. Seen here, a
            # route paused for it resumes as soon as it is writable, not
            # after retry.max_delay, and is not re-alerted every max_delay.
            read_only = read_only_reason(os.fsencode(root))
            if read_only is not None:
                return f"{label} {root}: {read_only}"
    return space_problem(route, room=room)


def space_problem(route: RouteConfig, *, room: int = 0) -> str | None:
    """Why the destination has no room: below ``min_free``, or fewer than
    ``room`` bytes free on top of it; None when there is room."""
    from ketter.mounts import disk_usage  # here: H10's #15 fix, the import block is shared

    try:
        usage = disk_usage(route.destination)
    except OSError as exc:
        return f"destination {route.destination}: {exc.strerror}"
    if usage is None:
        return None  # statfs gives no size (smbnetfs): free space unknown (#15)
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
