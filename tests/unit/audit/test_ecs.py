"""The audit line's ECS keys are pinned: SIEM dashboards and parsers depend on them."""

from __future__ import annotations

import json

from ketter.audit.chain import GENESIS, canonical_json, record_hash
from ketter.audit.ecs import JobIdentity, iso_ms, to_line
from ketter.audit.logfile import format_line


def record(**over: object) -> dict:
    base = {"seq": 7, "job_id": 3, "ts": 1_700_000_000.1234, "event": "verify",
            "route": "ingest", "from_state": "transferring", "to_state": "verifying",
            "attempt": 1, "node": "ketter-01", "pid": 42, "user": "ketter",
            "details": {"source": "/mnt/ingest/a.mov", "destination": "/mnt/dub/a.mov",
                        "size": 10, "bytes": 10, "seconds": 1.5, "sha256": "ab" * 32,
                        "xxh128": "cd" * 16, "xxh64": "ef" * 8}}
    base.update(over)
    return base


JOB = JobIdentity(b"/mnt/ingest/a.mov", "/mnt/ingest/a.mov", "alice", "file", "copy")


def test_keys_are_pinned() -> None:
    rec = record()
    text = canonical_json(rec)
    line = to_line(text, GENESIS, record_hash(GENESIS, rec), JOB)
    assert sorted(line) == sorted([
        "@timestamp", "ecs.version", "event.kind", "event.dataset", "event.action",
        "event.outcome", "event.duration", "event.sequence", "file.path", "file.size",
        "event.category", "event.type", "file.type",
        "file.hash.sha256", "file.owner", "ketter.destination.path", "host.name", "process.pid",
        "user.name", "message", "ketter.job_id", "ketter.route", "ketter.attempt",
        "ketter.state", "ketter.from_state", "ketter.xxh128", "ketter.xxh64", "ketter.bytes",
        "ketter.kind", "ketter.mode", "ketter.layout", "ketter.prev", "ketter.hash",
        "ketter.record"])
    assert line["event.category"] == ["file"] and line["event.type"] == ["info"]
    assert line["file.type"] == "file" and line["ketter.layout"] == 2
    assert line["@timestamp"] == "2023-11-14T22:13:20.123Z"
    assert line["event.duration"] == 1_500_000_000
    assert line["event.outcome"] == "success"
    assert line["file.owner"] == "alice"


def test_error_fields_and_outcome() -> None:
    rec = record(event="fail", to_state="failed", details={"error": "disk full"})
    line = to_line(canonical_json(rec), GENESIS, "x", None)
    assert line["event.outcome"] == "failure"
    assert line["error.message"] == "disk full"
    assert "file.path" not in line


def test_line_is_one_json_object_with_the_exact_record() -> None:
    rec = record(details={"source": "/mnt/a\nb ü.mov"})
    text = canonical_json(rec)
    out = format_line(to_line(text, GENESIS, "h", JOB))
    assert "\n" not in out
    parsed = json.loads(out)
    assert parsed["ketter.record"] == text
    assert parsed["file.path"] == "/mnt/a\nb ü.mov"


def test_iso_ms_rounds_to_milliseconds() -> None:
    assert iso_ms(0.9996) == "1970-01-01T00:00:01.000Z"


def test_token_events_are_iam_about_the_token() -> None:
    details = {"token": "mam", "scopes": ["audit:read"], "routes": [], "expires_at": None}
    rec = record(event="token_created", details=details, job_id=None, route=None,
                 from_state=None, to_state=None, attempt=None)
    line = to_line(canonical_json(rec), GENESIS, "x", None)
    assert (line["event.category"], line["event.type"]) == (["iam"], ["creation"])
    assert line["user.target.name"] == "mam" and line["event.outcome"] == "success"
    rec = record(event="token_revoked", details=details, job_id=None, route=None,
                 from_state=None, to_state=None, attempt=None)
    line = to_line(canonical_json(rec), GENESIS, "x", None)
    assert (line["event.category"], line["event.type"]) == (["iam"], ["deletion"])
    # another event's "token" detail is not a target
    rec = record(event="warning", details={"token": "x"}, job_id=None)
    assert "user.target.name" not in to_line(canonical_json(rec), GENESIS, "x", None)
