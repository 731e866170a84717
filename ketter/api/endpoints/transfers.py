"""``/api/v1/transfers``: list, read, submit, re-queue and cancel transfers."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from ketter.api.answers import Answer
from ketter.api.guard import Caller, authorize_route, record_call, require
from ketter.api.problems import Problem, responses
from ketter.api.schemas import (
    Outcome,
    Submit,
    SubmitResult,
    Submitted,
    TransferDetail,
    TransferPage,
    event_fields,
)
from ketter.api.session import session
from ketter.jobs.states import State
from ketter.store.port import JobFilter

router = APIRouter(prefix="/transfers", tags=["transfers"])

#: An ISO 8601 date or date and time (UTC unless an offset is given).
ISO_MOMENT = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?)?$"
)
MOMENT = "created at or after / before: 2026-12-04 or 2026-12-04T08:00:00Z"

JobId = Annotated[int, Path(ge=1, le=2**62, description="the job's id")]


def visible_routes(request: Request, caller: Caller) -> tuple[str, ...]:
    """The configured routes whose jobs ``caller`` may see."""
    return tuple(r.name for r in request.app.state.node.config.routes if caller.visible(r.name))


@router.get("", response_model=TransferPage, responses=responses(401, 403, 429))
def list_transfers(
    request: Request,
    caller: Annotated[Caller, require("transfers:read")],
    state: State | None = None,
    route: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[str | None, Query(pattern=ISO_MOMENT, description=MOMENT)] = None,
    until: Annotated[str | None, Query(pattern=ISO_MOMENT, description=MOMENT)] = None,
    name: Annotated[
        str | None, Query(max_length=1024, description="part of the source path")
    ] = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Answer:
    """Transfers newest first, filtered; a page at a time (stable under new
    submissions: the cursor is the last job id seen)."""
    if name is not None and "\0" in name:
        raise Problem(422, "name: contains a NUL byte")
    filters = JobFilter(
        state=state.value if state else None,
        route=route,
        routes=visible_routes(request, caller),
        since=_epoch(since),
        until=_epoch(until),
        name=name or None,
    )
    with session(request) as s:
        page = s.read.list_jobs(filters, limit, cursor)
    # Plain JSON: the schema is TransferPage's (the tests hold the answers
    # to it), without a model per row on the hot path.
    return Answer({"items": [job.as_dict() for job in page.jobs], "next_cursor": page.next_cursor})


@router.get("/{job_id}", response_model=TransferDetail, responses=responses(401, 403, 404, 429))
def get_transfer(
    request: Request, job_id: JobId, caller: Annotated[Caller, require("transfers:read")]
) -> Answer:
    """The transfer, its audit events (with their chain hashes), its
    per-file manifest, the MHL written for it and, while a worker holds it,
    its live progress."""
    with session(request) as s:
        detail = s.read.job_detail(job_id)
        if detail is None:
            raise Problem(404, f"no transfer with id {job_id}")
        authorize_route(request, caller, detail.job.route)
        progress = s.read.job_progress(job_id, time.time())
    mhl = None
    for event in detail.events:
        if event.event == "place" and isinstance(event.details.get("mhl"), dict):
            destination = event.details.get("destination") or detail.job.destination
            mhl = f"{destination}/ascmhl/{event.details['mhl'].get('generation')}"
    live = None
    if progress is not None:
        live = {
            "state": progress.state,
            "bytes_done": progress.bytes_done,
            "size": progress.size,
            "rate": progress.rate,
        }
    return Answer(
        {
            "transfer": detail.job.as_dict(),
            "events": [event_fields(e.as_dict()) for e in detail.events],
            "files": [f.as_dict() for f in detail.files],
            "mhl": mhl,
            "progress": live,
        }
    )


@router.post(
    "",
    response_model=SubmitResult,
    status_code=201,
    responses=responses(
        401,
        403,
        404,
        409,
        413,
        429,
        also={200: {"model": SubmitResult, "description": "already queued or delivered"}},
    ),
)
def submit_transfer(
    request: Request,
    response: Response,
    body: Submit,
    caller: Annotated[Caller, require("transfers:write")],
) -> SubmitResult:
    """Submit a file or folder by its path relative to the route's source.
    The same identity rules as ``ketter enqueue``: a version already queued
    or delivered is not queued again, and the answer names its job."""
    from ketter.errors import KetterError
    from ketter.jobs.relpath import BadPath, NoSuchPath, resolve_submitted
    from ketter.jobs.submit import submit_path

    node = request.app.state.node
    authorize_route(request, caller, body.route)
    try:
        route = node.config.route(body.route)
    except KeyError:
        known = ", ".join(r.name for r in node.config.routes if caller.visible(r.name))
        raise Problem(404, f"no route named {body.route!r} (routes: {known or 'none'})") from None
    now = time.time()
    with session(request) as s:
        try:
            path = resolve_submitted(route.source, body.path)
            results = submit_path(s.store, node.config, route, path, now=now)
        except BadPath as exc:
            record_call(s, caller, status=422, now=now, route=route.name, error=str(exc))
            raise Problem(422, f"path: {exc}") from None
        except NoSuchPath as exc:
            record_call(s, caller, status=404, now=now, route=route.name, error=str(exc))
            raise Problem(404, str(exc)) from None
        except KetterError as exc:
            record_call(s, caller, status=409, now=now, route=route.name, error=str(exc))
            raise Problem(409, str(exc)) from None
        created = [r.job_id for r in results if r.created]
        status = 201 if created else 200
        record_call(
            s,
            caller,
            status=status,
            now=now,
            route=route.name,
            action="submit",
            path=os.fsdecode(path),
            job_ids=[r.job_id for r in results],
        )
    for job_id in created:
        node.queue.ring(job_id)
    response.status_code = status
    return SubmitResult(
        jobs=[Submitted(job_id=r.job_id, created=r.created, message=r.message) for r in results]
    )


@router.post(
    "/{job_id}/requeue", response_model=Outcome, responses=responses(401, 403, 404, 409, 429)
)
def requeue_transfer(
    request: Request, job_id: JobId, caller: Annotated[Caller, require("transfers:requeue")]
) -> Outcome:
    """Re-queue a failed (or cancelled) transfer, or make a waiting retry due now."""
    from ketter.jobs.requeue import requeue_job

    node = request.app.state.node
    now = time.time()
    with session(request) as s:
        job = s.store.find_job(job_id)
        if job is None:
            raise Problem(404, f"no transfer with id {job_id}")
        authorize_route(request, caller, job.route)
        message = requeue_job(s.store, job_id, now=now, who=caller.principal.as_user())
        what = message.split(": ", 1)[1] if ": " in message else message
        done = what.startswith(("re-queued", "due now"))
        record_call(
            s,
            caller,
            status=200 if done else 409,
            now=now,
            route=job.route,
            action="requeue",
            job_id=job_id,
            result=message,
        )
        state = s.store.get_job(job_id).state
    if not done:
        raise Problem(409, message)
    node.queue.ring(job_id)
    return Outcome(job_id=job_id, outcome="requeued", state=state, message=message)


@router.post(
    "/{job_id}/cancel",
    response_model=Outcome,
    responses=responses(
        401,
        403,
        404,
        409,
        429,
        also={202: {"model": Outcome, "description": "a worker holds it: it rolls back"}},
    ),
)
def cancel_transfer(
    request: Request,
    response: Response,
    job_id: JobId,
    caller: Annotated[Caller, require("transfers:cancel")],
) -> Outcome:
    """Cancel a transfer before its placement: a waiting job ends
    ``cancelled`` now (200); a running one is rolled back by its worker
    within about a second and ends ``cancelled`` (202). Once the delivery is
    placed it only moves forward: refused with 409, and the answer says why."""
    from ketter.jobs.cancel import Outcome as Cancel
    from ketter.jobs.cancel import cancel_job

    now = time.time()
    with session(request) as s:
        job = s.store.find_job(job_id)
        if job is None:
            raise Problem(404, f"no transfer with id {job_id}")
        authorize_route(request, caller, job.route)
        result = cancel_job(s.store, job_id, now=now, actor=caller.principal)
        status = {Cancel.REQUESTED: 202, Cancel.CANCELLED: 200, Cancel.MISSING: 404}.get(
            result.outcome, 409
        )
        record_call(
            s,
            caller,
            status=status,
            now=now,
            route=job.route,
            action="cancel",
            job_id=job_id,
            result=str(result.outcome),
        )
    if status >= 400:
        raise Problem(status, result.message)
    response.status_code = status
    return Outcome(
        job_id=job_id, outcome=str(result.outcome), state=result.state, message=result.message
    )


def _epoch(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(422, f"{text!r} is not a date or date and time (ISO 8601)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
