"""``/api/v1/stream``: Server-Sent Events of job state changes, route pauses
and the progress of running jobs, about once a second.

Each state change and route event carries its audit sequence as the SSE
``id``: a client that reconnects with ``Last-Event-ID`` (browsers do it by
themselves) gets every change after it, none twice. Progress lines have no
id (they are a sample, not a record). The store is read on a worker thread,
a connection per poll (:mod:`ketter.api.session`): nothing of peewee's
crosses an ``await``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from ketter.api.guard import Caller, require
from ketter.api.problems import responses
from ketter.api.session import session

router = APIRouter(tags=["transfers"])

#: Seconds between two polls of the store.
POLL_SECONDS = 1.0
#: A comment line at least this often keeps proxies from closing the stream.
KEEPALIVE_SECONDS = 15.0
ROUTE_EVENTS = frozenset({"route_paused", "route_resumed", "route_held", "route_released"})


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=responses(
        401,
        403,
        429,
        also={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
    ),
)
def stream(
    request: Request,
    caller: Annotated[Caller, require("transfers:read")],
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> StreamingResponse:
    """Job state changes (``event: state``), route pauses (``event: route``)
    and progress (``event: progress``) of the routes the token covers."""
    start = _start(request, last_event_id)

    async def lines() -> AsyncIterator[str]:
        last, quiet = start, time.monotonic()
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            events, running = await anyio.to_thread.run_sync(_poll, request, last)
            for e in events:
                last = e["seq"]
                route = e.get("route")
                if route is not None and not caller.visible(route):
                    continue
                kind = "route" if e["event"] in ROUTE_EVENTS else "state"
                if kind == "state" and (e.get("job_id") is None or e.get("to_state") is None):
                    continue
                quiet = time.monotonic()
                yield f"id: {e['seq']}\nevent: {kind}\ndata: {json.dumps(e)}\n\n"
            for r in running:
                if caller.visible(r["route"]):
                    quiet = time.monotonic()
                    yield f"event: progress\ndata: {json.dumps(r)}\n\n"
            if time.monotonic() - quiet > KEEPALIVE_SECONDS:
                quiet = time.monotonic()
                yield ": keep-alive\n\n"
            await anyio.sleep(POLL_SECONDS)

    return StreamingResponse(
        lines(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _start(request: Request, last_event_id: str | None) -> int:
    """Where the stream starts: after ``Last-Event-ID``, else at the chain's
    head (only what happens from now on)."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    with session(request) as s:
        last = s.store.last_event()
    return last.id if last is not None else 0


def _poll(request: Request, after: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with session(request) as s:
        events = s.read.events_after(after, 500)
        running = s.read.running_jobs(time.time())
    return (
        [
            {
                "seq": e.seq,
                "time": e.time,
                "event": e.event,
                "job_id": e.job_id,
                "route": e.route,
                "from_state": e.from_state,
                "to_state": e.to_state,
            }
            for e in events
        ],
        [
            {
                "job_id": r.job_id,
                "route": r.route,
                "state": r.state,
                "bytes_done": r.bytes_done,
                "size": r.size,
                "rate": r.rate,
            }
            for r in running
        ],
    )
