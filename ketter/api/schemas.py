"""The API's request and answer bodies (the OpenAPI schema is generated from
these models and the operations that use them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Transfer(BaseModel):
    """One transfer job, as ``ketter jobs`` shows it (times in ISO 8601 UTC)."""

    job_id: int
    route: str
    mode: str
    kind: str
    state: str
    attempt: int
    source: str
    destination: str | None
    bytes: int | None
    files: int | None
    sha256: str | None
    xxh128: str | None
    created: str | None
    started: str | None
    placed: str | None
    completed: str | None
    updated: str | None
    seconds: float | None
    mb_per_s: float | None
    next_attempt: str | None
    error: str | None
    node: str | None


class TransferPage(BaseModel):
    """Transfers newest first; pass ``next_cursor`` as ``cursor`` for the
    next page (``null``: this was the last)."""

    items: list[Transfer]
    next_cursor: int | None


class Event(BaseModel):
    """One audit event, with its place in the hash chain."""

    seq: int
    time: str | None
    event: str
    job_id: int | None
    route: str | None
    from_state: str | None
    to_state: str | None
    attempt: int | None
    node: str | None
    pid: int | None
    user: str | None
    details: dict[str, Any]
    hash: str | None
    prev_hash: str | None


def event_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's fields as :class:`Event` has them (``details`` always an
    object: a non-object value of an old row under ``value``)."""
    details = event["details"]
    return {**event, "details": details if isinstance(details, dict) else {"value": details}}


class EventPage(BaseModel):
    """Events in chain order; ask again with ``after=last_seq``."""

    items: list[Event]
    last_seq: int


class ManifestFile(BaseModel):
    path: str
    size: int
    sha256: str | None


class Progress(BaseModel):
    """Live progress of a job a worker holds now."""

    state: str
    bytes_done: int | None
    size: int | None
    rate: float | None = Field(description="bytes per second since the claim")


class TransferDetail(BaseModel):
    transfer: Transfer
    events: list[Event]
    files: list[ManifestFile]
    mhl: str | None = Field(description="the ASC MHL manifest written for the delivery")
    progress: Progress | None


class Submit(BaseModel):
    """A file or folder to transfer, by its path relative to the route's source."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(min_length=1, max_length=255)
    path: str = Field(min_length=1, max_length=4096)


class Submitted(BaseModel):
    job_id: int
    created: bool = Field(description="false: an existing job already covers this version")
    message: str


class SubmitResult(BaseModel):
    jobs: list[Submitted]


class Outcome(BaseModel):
    """What a requeue or cancel did."""

    job_id: int
    outcome: str
    state: str | None
    message: str


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class Route(BaseModel):
    name: str
    mode: str
    source: str
    destination: str
    paused: bool
    pause_reason: str | None
    paused_since: str | None
    held: bool
    hold_reason: str | None
    held_by: str | None
    held_since: str | None
    jobs: dict[str, int]
    last_success: str | None
    free_bytes: int | None


class RouteList(BaseModel):
    items: list[Route]


class RouteChange(BaseModel):
    route: str
    changed: bool
    message: str
