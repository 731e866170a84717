"""``/api/v1/health`` and ``/api/v1/events``: the node's health and its audit
trail, for monitoring and SIEM pulls."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from ketter.api.answers import Answer
from ketter.api.guard import Caller, require
from ketter.api.problems import responses
from ketter.api.schemas import Event, EventPage, event_fields
from ketter.api.session import session

router = APIRouter(tags=["node"])


@router.get(
    "/health",
    responses=responses(
        401,
        403,
        429,
        also={
            200: {"description": "healthy: what `ketter health --json` says"},
            503: {"description": "unhealthy: the same report"},
        },
    ),
)
def health(request: Request, caller: Annotated[Caller, require("metrics:read")]) -> Answer:
    """What ``ketter health --json`` says; 503 when the node is unhealthy."""
    from ketter.health import check_health

    report = check_health(request.app.state.node.config)
    return Answer(report.as_dict(), status_code=200 if report.healthy else 503)


@router.get("/events", response_model=EventPage, responses=responses(401, 403, 429))
def events(
    request: Request,
    caller: Annotated[Caller, require("audit:read")],
    after: Annotated[int, Query(ge=0, le=2**62, description="the last sequence seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    """Audit events in chain order after ``after``. Events of routes the token
    does not cover are left out; ``last_seq`` is where to continue."""
    with session(request) as s:
        found = s.read.events_after(after, limit)
    items = [e for e in found if e.route is None or caller.visible(e.route)]
    return EventPage(
        items=[Event(**event_fields(e.as_dict())) for e in items],
        last_seq=found[-1].seq if found else after,
    )
