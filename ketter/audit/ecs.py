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
FAILURE_EVENTS = frozenset({"fail", "stalled", "watch_lost", "route_paused"})
#: Events that describe the service, not an operation that can succeed.
INFO_EVENTS = frozenset(
    {
        "workers_started",
        "workers_stopped",
        "watcher_started",
        "watcher_stopped",
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
    {"file.path", "file.owner", "ketter.path_b64", "ketter.kind", "ketter.mode"}
)


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


def to_line(
    record_text: str,
    prev: str,
    digest: str,
    job: JobIdentity | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ECS line of one event (see module docstring for the contract).

    ``record``: ``record_text`` already parsed, when the caller has it (the
    shipper built the text from it), so it is not parsed again.
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
        try:
            job.source_path.decode("utf-8")
        except UnicodeDecodeError:
            line["ketter.path_b64"] = base64.b64encode(job.source_path).decode("ascii")
    for key, target in (
        ("destination", "destination.path"),
        ("sha256", "file.hash.sha256"),
        ("xxh128", "ketter.xxh128"),
        ("xxh64", "ketter.xxh64"),
        ("error", "error.message"),
    ):
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
    # From the record alone, so the line can be checked without the job store.
    shown = next(
        (d[k] for k in ("source", "destination", "found") if isinstance(d.get(k), str)), None
    )
    line["message"] = _message(record, shown)
    line["ketter.prev"] = prev
    line["ketter.hash"] = digest
    line["ketter.record"] = record_text
    return line


def record_text_of(row: dict[str, Any]) -> str:
    """The canonical text of the hashed part of an ``events`` row."""
    from ketter.audit.chain import hashed_fields

    return canonical_json(hashed_fields(row))
