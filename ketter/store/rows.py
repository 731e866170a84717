"""The rows the job store hands out and takes: plain dataclasses, never a
database model, so the code outside :mod:`ketter.store` works the same on
every backend (SQLite today, the in-memory fake in unit tests, PostgreSQL
next) and cannot reach the database through a row.

The field names are the table's column names (``migrations/``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ketter.errors import KetterError


class NoSuchJob(KetterError):
    """The job store holds no job with this id."""


@dataclass(slots=True)
class JobRow:
    """One ``jobs`` row."""

    id: int
    route: str
    mode: str
    kind: str
    source_path: bytes
    source_display: str
    source_key: str
    state: str
    node: str
    created_at: float
    updated_at: float
    dest_path: bytes | None = None
    dest_display: str | None = None
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_inode: int | None = None
    source_dev: int | None = None
    source_owner: str | None = None
    dest_dev: int | None = None
    size: int = 0
    file_count: int = 1
    attempt: int = 0
    next_attempt_at: float | None = None
    priority: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    claim: str | None = None
    bytes_done: int = 0
    progress_at: float | None = None
    placed_at: float | None = None
    placed_inode: int | None = None
    sha256: str | None = None
    xxh128: str | None = None
    xxh64: str | None = None
    md5: str | None = None
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    rollback_to: str | None = None
    source_ctime_ns: int | None = None
    transfer_seconds: float | None = None
    transfer_bytes: int | None = None
    cancel_requested_at: float | None = None
    cancel_requested_by: str | None = None


@dataclass(slots=True)
class JobFileRow:
    """One ``job_files`` row: a file of a folder job's manifest."""

    id: int
    job_id: int
    relpath: bytes
    relpath_display: str
    size: int
    mtime_ns: int
    mode: int
    inode: int | None = None
    sha256: str | None = None
    xxh128: str | None = None
    xxh64: str | None = None
    ctime_ns: int | None = None


@dataclass(slots=True)
class RouteStatusRow:
    """One ``route_status`` row: whether a route is paused and why."""

    route: str
    updated_at: float
    paused: int = 0
    reason: str | None = None
    since: float | None = None
    room_needed: int | None = None
    room_pauses: int = 0
    room_paused_at: float | None = None
    resume_at: float | None = None
    #: An operator hold (0009): no new claims until released; nothing
    #: automatic lifts it (an outage pause and its resume leave it be).
    held: int = 0
    held_reason: str | None = None
    held_by: str | None = None
    held_since: float | None = None


@dataclass(slots=True)
class HeartbeatRow:
    """One ``heartbeats`` row (``details`` is JSON text)."""

    id: int
    component: str
    node: str
    pid: int
    ts: float
    details: str


@dataclass(slots=True)
class EventRow:
    """One ``events`` row: a link of the audit chain (``id`` is its sequence)."""

    id: int
    job_id: int | None
    ts: float
    event: str
    route: str | None
    from_state: str | None
    to_state: str | None
    attempt: int | None
    node: str
    pid: int
    user: str
    details: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class ApiTokenRow:
    """One ``api_tokens`` row: a token's SHA-256 (never its secret), its
    scopes and route globs, and its life."""

    id: int
    name: str
    secret_sha256: str
    scopes: tuple[str, ...]
    routes: tuple[str, ...]
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None
    last_used_at: float | None = None


JOB_COLUMNS = tuple(f.name for f in fields(JobRow))
JOB_FILE_COLUMNS = tuple(f.name for f in fields(JobFileRow))
ROUTE_STATUS_COLUMNS = tuple(f.name for f in fields(RouteStatusRow))
HEARTBEAT_COLUMNS = tuple(f.name for f in fields(HeartbeatRow))
EVENT_COLUMNS = tuple(f.name for f in fields(EventRow))
API_TOKEN_COLUMNS = tuple(f.name for f in fields(ApiTokenRow))
