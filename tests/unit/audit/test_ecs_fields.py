"""Every field of an audit line is an ECS 8.11 field with its ECS type (and an
allowed value where ECS lists them), or under ``ketter.*``.

Checked against the ECS flat field list of the version the lines declare,
vendored (trimmed) in tests/data/ecs/ (README there says how it was made).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ketter.audit.chain import GENESIS, canonical_json, record_hash
from ketter.audit.ecs import CATEGORIZATION, ECS_VERSION, JobIdentity, layout_of, to_line
from ketter.audit.vocabulary import EVENTS

FLAT = Path(__file__).resolve().parents[2] / "data" / "ecs" / f"ecs_flat-{ECS_VERSION}.yml"
STRINGS = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text", "date"}
NUMBERS = {"long": int, "integer": int, "short": int, "byte": int, "unsigned_long": int}

#: Every detail key an event may carry that reaches a top-level field.
DETAILS: dict[str, Any] = {
    "source": "/mnt/ingest/A001",
    "destination": "/mnt/dub/A001",
    "size": 4310,
    "bytes": 4310,
    "seconds": 1.5,
    "sha256": "ab" * 32,
    "xxh128": "cd" * 16,
    "xxh64": "ef" * 8,
    "error": "disk full",
    "reason": "share gone",
    "reason_was": "share gone",
    "by": "alice",
    "found": "/mnt/ingest/A001",
    "token": "mam",
}
JOBS = [
    JobIdentity(b"/mnt/ingest/a.mov", "/mnt/ingest/a.mov", "alice", "file", "copy"),
    JobIdentity(b"/mnt/ingest/A001", "/mnt/ingest/A001", "bob", "folder", "move"),
    JobIdentity(b"/mnt/ingest/caf\xe9", "/mnt/ingest/caf\\xe9", None, "folder", "copy"),
    None,
]


@pytest.fixture(scope="module")
def ecs() -> dict[str, dict[str, Any]]:
    if not FLAT.exists():
        pytest.fail(f"{FLAT} is missing: the ECS field list of the declared version")
    data: dict[str, dict[str, Any]] = yaml.safe_load(FLAT.read_text(encoding="utf-8"))
    return data


def line_of(event: str, job: JobIdentity | None, layout: int = 2) -> dict[str, Any]:
    rec = {
        "seq": 9,
        "job_id": 3 if job else None,
        "ts": 1_700_000_000.5,
        "event": event,
        "route": "ingest",
        "from_state": "transferring",
        "to_state": "failed",
        "attempt": 2,
        "node": "ketter-01",
        "pid": 42,
        "user": "ketter",
        "details": DETAILS,
    }
    return to_line(canonical_json(rec), GENESIS, record_hash(GENESIS, rec), job, layout=layout)


def check(name: str, value: Any, ecs: dict[str, dict[str, Any]]) -> None:
    if name.startswith("ketter."):
        return
    assert name in ecs, f"{name} is not an ECS {ECS_VERSION} field: put it under ketter.*"
    field = ecs[name]
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        assert "array" in field.get("normalize", []), f"{name} is not an array in ECS"
    for v in values:
        kind = field["type"]
        if kind in STRINGS:
            assert isinstance(v, str), f"{name}: ECS {kind}, got {v!r}"
        elif kind in NUMBERS:
            assert isinstance(v, int) and not isinstance(v, bool), f"{name}: ECS {kind}, {v!r}"
        else:
            pytest.fail(f"{name}: ECS type {kind} not expected in an audit line")
        allowed = field.get("allowed_values")
        if allowed is not None:
            assert v in allowed, f"{name}: {v!r} is not an allowed value ({sorted(allowed)})"


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_field_is_ecs_or_ketter(event: str, ecs: dict[str, dict[str, Any]]) -> None:
    for job in JOBS:
        for name, value in line_of(event, job).items():
            check(name, value, ecs)


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_each_action_has_its_categorization(event: str, ecs: dict[str, dict[str, Any]]) -> None:
    """``event.category`` of each action is allowed, and each ``event.type`` is
    one ECS expects with that category."""
    line = line_of(event, JOBS[0])
    assert event in CATEGORIZATION
    allowed = ecs["event.category"]["allowed_values"]
    for category in line["event.category"]:
        expected = allowed[category]["expected_event_types"]
        assert set(line["event.type"]) <= set(expected), (event, category, expected)


def test_destination_is_under_ketter(ecs: dict[str, dict[str, Any]]) -> None:
    """``destination.*`` is the network destination in ECS: never used."""
    line = line_of("complete", JOBS[0])
    assert line["ketter.destination.path"] == "/mnt/dub/A001"
    assert not [k for k in line if k.startswith("destination.")]


def test_folders_reasons_and_actor_are_top_level() -> None:
    assert line_of("complete", JOBS[1])["file.type"] == "dir"
    assert line_of("complete", JOBS[0])["file.type"] == "file"
    assert line_of("route_paused", None)["event.reason"] == "share gone"
    assert line_of("skip", JOBS[0])["event.reason"] == "share gone"
    assert line_of("route_resumed", None)["ketter.paused_reason"] == "share gone"
    assert line_of("requeue", JOBS[0])["ketter.requeued_by"] == "alice"
    assert "ketter.requeued_by" not in line_of("detect", JOBS[0])  # "by": the command there


def test_lines_written_before_layout_2_still_recompute() -> None:
    """A line shipped before #15 (no ``ketter.layout``) is recomputed as it was
    written, so ``audit verify`` does not call old logs edited."""
    old = line_of("complete", JOBS[1], layout=1)
    assert layout_of(old) == 1 and old["destination.path"] == "/mnt/dub/A001"
    assert not {"event.category", "event.type", "file.type", "event.reason"} & set(old)
    assert layout_of(line_of("complete", JOBS[1])) == 2
