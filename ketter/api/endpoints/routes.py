"""``/api/v1/routes``: each route's state, queue and destination space; an
operator's pause and resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from ketter.api.guard import Caller, require
from ketter.api.problems import responses
from ketter.api.schemas import Route, RouteList
from ketter.api.session import session
from ketter.jobs.states import State
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
    with session(node) as s:
        counts = s.read.route_state_counts()
        last = s.read.last_successes()
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
                held=bool(row and getattr(row, "held", 0)),
                hold_reason=getattr(row, "held_reason", None) if row else None,
                held_by=getattr(row, "held_by", None) if row else None,
                held_since=iso(getattr(row, "held_since", None)) if row else None,
                jobs=jobs,
                last_success=iso(last.get(route.name)),
                free_bytes=free,
            )
        )
    return RouteList(items=items)
