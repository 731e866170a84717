"""``/api/v1/routes``: each route's state, queue and destination space; an
operator's pause and resume."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Request

from ketter.api.guard import Caller, authorize_route, record_call, require
from ketter.api.problems import Problem, responses
from ketter.api.schemas import PauseRequest, Route, RouteChange, RouteList
from ketter.api.session import session
from ketter.jobs.states import State
from ketter.store.composite.counting import LAST_SUCCESS_AT
from ketter.store.sqlite_read import iso

router = APIRouter(prefix="/routes", tags=["routes"])

RouteName = Annotated[str, Path(min_length=1, max_length=255)]

#: How long the destination's free-space probe may take (a hung share).
PROBE_SECONDS = 2.0


@router.get("", response_model=RouteList, responses=responses(401, 403, 429))
def list_routes(
    request: Request, caller: Annotated[Caller, require("transfers:read")]
) -> RouteList:
    """Every route the token covers: paused (an outage, no room) or held (an
    operator's pause), jobs per state, last delivery, free space at the
    destination (``null``: unknown, or the share did not answer in time)."""
    from ketter.health import probe_filesystems

    node = request.app.state.node
    routes = [r for r in node.config.routes if caller.visible(r.name)]
    with session(request) as s:
        counts: dict[str, dict[str, int]] = {}
        for count in s.store.job_counts():  # kept by the store: no count of a million rows
            counts.setdefault(count.route, {})[count.state] = count.jobs
        last = {c.route: c.value for c in s.store.counter_totals() if c.name == LAST_SUCCESS_AT}
        statuses = {r.name: s.store.route_status(r.name) for r in routes}
    space = probe_filesystems([r.destination for r in routes], PROBE_SECONDS)
    items = []
    for route, probe in zip(routes, space, strict=True):
        row = statuses.get(route.name)
        jobs = {state.value: 0 for state in State}
        jobs.update(counts.get(route.name, {}))
        free = None
        if probe and "avail" in probe and probe.get("blocks"):
            free = int(probe["avail"]) * int(probe["frsize"])
        items.append(
            Route(
                name=route.name,
                mode=str(route.mode),
                source=route.source,
                destination=route.destination,
                paused=bool(row and row.paused),
                pause_reason=row.reason if row and row.paused else None,
                paused_since=iso(row.since) if row and row.paused else None,
                held=bool(row and row.held),
                hold_reason=row.held_reason if row and row.held else None,
                held_by=row.held_by if row and row.held else None,
                held_since=iso(row.held_since) if row and row.held else None,
                jobs=jobs,
                last_success=iso(last.get(route.name)),
                free_bytes=free,
            )
        )
    return RouteList(items=items)


def _known(request: Request, caller: Caller, name: str) -> None:
    authorize_route(request, caller, name)
    routes = request.app.state.node.config.routes
    if name not in {r.name for r in routes}:
        known = ", ".join(r.name for r in routes if caller.visible(r.name)) or "none"
        raise Problem(404, f"no route named {name!r} (routes: {known})")


@router.post("/{name}/pause", response_model=RouteChange, responses=responses(401, 403, 404, 429))
def pause_route(
    request: Request,
    name: RouteName,
    body: PauseRequest,
    caller: Annotated[Caller, require("routes:pause")],
) -> RouteChange:
    """Hold the route on purpose (an operator's pause, with a reason): no new
    transfer starts on it until it is resumed; running ones finish. Kept
    across restarts; nothing automatic lifts it (unlike an outage pause)."""
    from ketter.jobs.hold import hold_route

    _known(request, caller, name)
    reason = body.reason.strip()
    if not reason:
        raise Problem(422, "reason: give a reason (who asked, why, until when)")
    now = time.time()
    with session(request) as s:
        changed = hold_route(s.store, name, reason=reason, now=now, actor=caller.principal)
        record_call(
            s,
            caller,
            status=200,
            now=now,
            route=name,
            action="pause",
            changed=changed,
            reason=reason,
        )
    return RouteChange(
        route=name,
        changed=changed,
        message=f"route {name} held: {reason}" if changed else f"route {name} was already held",
    )


@router.post("/{name}/resume", response_model=RouteChange, responses=responses(401, 403, 404, 429))
def resume_route(
    request: Request, name: RouteName, caller: Annotated[Caller, require("routes:pause")]
) -> RouteChange:
    """Lift an operator's hold; the route's waiting transfers start again.
    An outage pause is not lifted by this: it ends when the share is back."""
    from ketter.jobs.hold import release_route

    _known(request, caller, name)
    now = time.time()
    with session(request) as s:
        changed = release_route(s.store, name, now=now, actor=caller.principal)
        record_call(s, caller, status=200, now=now, route=name, action="resume", changed=changed)
    return RouteChange(
        route=name,
        changed=changed,
        message=f"route {name} resumed" if changed else f"route {name} was not held",
    )
