"""One audit event as an Elastic Common Schema (ECS) line.

Field names are **flat dotted keys** (``"event.action": "copy"``), like the
operational logs (:mod:`ketter.runtime.logs`): Splunk's ``KV_MODE=json``
indexes them as they are, and Filebeat's ``ndjson`` parser with
``expand_keys: true`` turns them into ECS objects.

A line is a pure function of the chained record and of the *identity* of its
job (columns a job row never changes after it is created: source path, owner,
kind, mode), so ``ketter audit verify`` recomputes every line and any edited
field is noticed. ``ketter.record`` holds the exact canonical JSON text that
was hashed (``ketter.hash = SHA-256(ketter.prev + "\\n" + ketter.record)``):
the chain can be re-verified from the file alone.

Every key is an ECS 8.11 field with its ECS type, or under ``ketter.*``
(tests/unit/audit/test_ecs_fields.py checks each against the ECS flat field
list vendored in tests/data/ecs/). ``destination.*`` is the *network*
destination in ECS, so the delivery's path is ``ketter.destination.path``.

**Layouts.** A line's fields are a pure function of its record *and of the
layout it was written in*: lines written before layout 2 (#15) carry
``destination.path`` and no ``event.category``/``event.type``, ``file.type``,
``event.reason``, ``ketter.requeued_by``. They stay valid: a line without
``ketter.layout`` is layout 1 (:func:`layout_of`), and ``to_line(...,
layout=1)`` recomputes it as it was written.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from ketter.audit.chain import canonical_json

ECS_VERSION = "8.11.0"

#: Events whose outcome is a failure whatever their details say.
FAILURE_EVENTS = frozenset(
    {"fail", "stalled", "watch_lost", "route_paused", "api_denied", "api_auth_failed"}
)
#: Events that describe the service, not an operation that can succeed.
INFO_EVENTS = frozenset(
    {
        "workers_started",
        "workers_stopped",
        "watcher_started",
        "watcher_stopped",
        "api_started",
        "api_stopped",
        "config_loaded",
        "rotate",
        "warning",
        "audit_log_reopened",
    }
)

#: Keys taken from the job's identity when the event's details lack them;
#: checked against the job store by ``ketter audit verify`` (not from the file
#: alone).
ENRICHED_KEYS = frozenset(
    {"file.path", "file.owner", "file.type", "ketter.path_b64", "ketter.kind", "ketter.mode"}
)

#: The layout new lines are written in (module docstring, "Layouts").
LAYOUT = 2

#: ``event.category`` and ``event.type`` (ECS categorization, allowed values of
#: ECS 8.11) of each action of :data:`ketter.audit.vocabulary.EVENTS`.
#: A job's file or folder is ``file``: ``creation`` when the delivery
#: appears under its final name, ``deletion`` when a source, a marker, a
#: temporary or a rotated log file is removed, ``info`` for the other steps.
#: A route's share coming and going is ``host``/``change``; the services'
#: life cycle is ``process``/``start``/``end``; an API token created or
#: revoked is ``iam``/``creation``/``deletion``.
CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{
        action: (("file",), ("info",))
        for action in (
            "detect",
            "enqueue",
            "claim",
            "prepare",
            "package",
            "copy",
            "verify",
            "complete",
            "retry",
            "fail",
            "supersede",
            "cancel_requested",
            "cancel",
            "requeue",
            "skip",
            "resume",
            "recover",
            "stalled",
            "release",
        )
    },
    "place": (("file",), ("creation",)),
    "delete_source": (("file",), ("deletion",)),
    "delete_marker": (("file",), ("deletion",)),
    "rollback": (("file",), ("deletion",)),
    "rotate": (("file",), ("deletion",)),
    "audit_log_reopened": (("file",), ("creation",)),
    "route_paused": (("host",), ("change",)),
    "route_resumed": (("host",), ("change",)),
    # An operator's hold of a route (ketter pause/resume): a configuration
    # change made on purpose, not a share coming and going.
    "route_held": (("configuration",), ("change",)),
    "route_released": (("configuration",), ("change",)),
    "watch_lost": (("host",), ("change",)),
    "watch_restored": (("host",), ("change",)),
    "watcher_started": (("process",), ("start",)),
    "workers_started": (("process",), ("start",)),
    "watcher_stopped": (("process",), ("end",)),
    "workers_stopped": (("process",), ("end",)),
    "api_started": (("process",), ("start",)),
    "api_stopped": (("process",), ("end",)),
    "config_loaded": (("configuration",), ("access",)),
    "warning": (("process",), ("info",)),
    # An API token is a credential: identity and access management.
    "token_created": (("iam",), ("creation",)),
    "token_revoked": (("iam",), ("deletion",)),
    # The HTTP API's calls: web access; a failed authentication is an
    # authentication attempt, a refusal an access whose outcome is failure.
    "api_call": (("web",), ("access",)),
    "api_denied": (("web",), ("access",)),
    "api_auth_failed": (("authentication",), ("start",)),
}

#: Events about an API token: its name is ``user.target.name``.
TOKEN_EVENTS = frozenset({"token_created", "token_revoked"})

#: ECS ``file.type`` of a job's kind.
FILE_TYPES = {"file": "file", "folder": "dir"}


@dataclass(frozen=True)
class JobIdentity:
    """The columns of a job row that never change after it is created."""

    source_path: bytes
    source_display: str
    source_owner: str | None
    kind: str
    mode: str

    @classmethod
    def from_row(cls, row: Any) -> JobIdentity:
        return cls(bytes(row.source_path), row.source_display, row.source_owner, row.kind, row.mode)


_second: tuple[int, str] = (-1, "")


def iso_ms(ts: float) -> str:
    """``@timestamp``: UTC, RFC 3339, milliseconds."""
    global _second
    ms = round(ts * 1000)
    secs, ms = divmod(ms, 1000)
    cached_secs, text = _second  # events come in time order: one strftime per second
    if secs != cached_secs:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second = (secs, text)
    return f"{text}.{ms:03d}Z"


def outcome(record: dict[str, Any]) -> str:
    event, details = record["event"], record["details"]
    if event in FAILURE_EVENTS or record.get("to_state") == "failed":
        return "failure"
    if event in ("retry", "rollback", "rolling_back") and details.get("error"):
        return "failure"
    if event in INFO_EVENTS:
        return "unknown"
    if event == "api_call":
        status = details.get("status")
        return "failure" if isinstance(status, int) and status >= 400 else "success"
    return "success"


def _message(record: dict[str, Any], path: str | None) -> str:
    parts = [record["event"]]
    if record.get("job_id") is not None:
        parts.append(f"job {record['job_id']}")
    if record.get("route"):
        parts.append(f"route {record['route']}")
    if record.get("from_state") and record.get("to_state") != record.get("from_state"):
        parts.append(f"{record['from_state']} → {record['to_state']}")
    text = " ".join(parts)
    if path:
        text += f": {path}"
    error = record["details"].get("error")
    if error:
        text += f" ({error})"
    return text


def layout_of(fields: dict[str, Any]) -> int:
    """The layout a shipped line was written in (1: before ``ketter.layout``)."""
    layout = fields.get("ketter.layout")
    return layout if isinstance(layout, int) and not isinstance(layout, bool) else 1


def to_line(
    record_text: str,
    prev: str,
    digest: str,
    job: JobIdentity | None = None,
    record: dict[str, Any] | None = None,
    *,
    layout: int = LAYOUT,
) -> dict[str, Any]:
    """The ECS line of one event (see module docstring for the contract).

    ``record``: ``record_text`` already parsed, when the caller has it (the
    shipper built the text from it), so it is not parsed again. ``layout``:
    the layout to write (``ketter audit verify`` passes :func:`layout_of` of
    the line it checks).
    """
    if record is None:
        record = json.loads(record_text)
    d = record["details"]
    line: dict[str, Any] = {
        "@timestamp": iso_ms(record["ts"]),
        "ecs.version": ECS_VERSION,
        "event.kind": "event",
        "event.dataset": "ketter.audit",
        "event.action": record["event"],
        "event.outcome": outcome(record),
        "event.sequence": record["seq"],
        "host.name": record["node"],
        "process.pid": record["pid"],
        "user.name": record["user"],
    }
    if layout >= 2:
        category, kind = CATEGORIZATION.get(record["event"], (("file",), ("info",)))
        line["event.category"] = list(category)
        line["event.type"] = list(kind)
    seconds = d.get("seconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        line["event.duration"] = round(seconds * 1e9)
    path = d.get("source") if isinstance(d.get("source"), str) else None
    if path is None and job is not None:
        path = job.source_display
    if path is not None:
        line["file.path"] = path
    if job is not None:
        if job.source_owner is not None:
            line["file.owner"] = job.source_owner
        line["ketter.kind"] = job.kind
        line["ketter.mode"] = job.mode
        if layout >= 2 and job.kind in FILE_TYPES:
            line["file.type"] = FILE_TYPES[job.kind]
        try:
            job.source_path.decode("utf-8")
        except UnicodeDecodeError:
            line["ketter.path_b64"] = base64.b64encode(job.source_path).decode("ascii")
    strings = _STRINGS if layout >= 2 else _STRINGS_1
    for key, target in strings:
        value = d.get(key)
        if isinstance(value, str) and value:
            line[target] = value
    size = d.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        line["file.size"] = size
    nbytes = d.get("bytes")
    if isinstance(nbytes, int) and not isinstance(nbytes, bool):
        line["ketter.bytes"] = nbytes
    for key, target in (
        ("job_id", "ketter.job_id"),
        ("route", "ketter.route"),
        ("attempt", "ketter.attempt"),
        ("to_state", "ketter.state"),
        ("from_state", "ketter.from_state"),
    ):
        if record.get(key) is not None:
            line[target] = record[key]
    if layout >= 2:
        by = d.get("by")
        if record["event"] == "requeue" and isinstance(by, str) and by:
            line["ketter.requeued_by"] = by
        token = d.get("token")
        if record["event"] in TOKEN_EVENTS and isinstance(token, str) and token:
            # The credential the IAM event is about (``user.name`` is who acted).
            line["user.target.name"] = token
        line["ketter.layout"] = layout
    # From the record alone, so the line can be checked without the job store.
    shown = next(
        (d[k] for k in ("source", "destination", "found") if isinstance(d.get(k), str)), None
    )
    line["message"] = _message(record, shown)
    line["ketter.prev"] = prev
    line["ketter.hash"] = digest
    line["ketter.record"] = record_text
    return line


#: Detail strings copied to top-level fields (layout 2): the delivery's path,
#: checksums, the error, why a route paused or a file was skipped
#: (``event.reason``) and what a resumed route had been paused for. Who
#: re-queued a job is ``ketter.requeued_by`` (``user.name`` is the account of
#: the writing process; ``by`` the operator behind it, e.g. ``sudo``'s user).
_STRINGS = (
    ("destination", "ketter.destination.path"),
    ("sha256", "file.hash.sha256"),
    ("xxh128", "ketter.xxh128"),
    ("xxh64", "ketter.xxh64"),
    ("error", "error.message"),
    ("reason", "event.reason"),
    ("reason_was", "ketter.paused_reason"),
    # The HTTP API's calls (api_*): who called from where, what.
    ("client_ip", "source.ip"),
    ("http_method", "http.request.method"),
    ("url_path", "url.path"),
)
#: Layout 1 (before #15).
_STRINGS_1 = (
    ("destination", "destination.path"),
    ("sha256", "file.hash.sha256"),
    ("xxh128", "ketter.xxh128"),
    ("xxh64", "ketter.xxh64"),
    ("error", "error.message"),
)


def record_text_of(row: dict[str, Any]) -> str:
    """The canonical text of the hashed part of an ``events`` row."""
    from ketter.audit.chain import hashed_fields

    return canonical_json(hashed_fields(row))
