"""Contract: heartbeats — one row per (component, node), replaced in place."""

from __future__ import annotations

import json

import pytest

from ketter.runtime.identity import origin
from ketter.store.port import JobStore


def _stamped(details: dict) -> str:
    """What the store keeps: the details with the writer's origin."""
    return json.dumps({**details, "origin": origin()})


def test_beat_upserts_one_row_per_component_and_node(job_store: JobStore) -> None:
    assert job_store.get_heartbeat("watcher", "n1") is None
    job_store.beat("n1", {"watcher": '{"a": 1}', "route:r": "{}"}, pid=10, now=1.0)
    job_store.beat("n2", {"watcher": "{}"}, pid=20, now=2.0)
    first = job_store.get_heartbeat("watcher", "n1")
    assert first is not None
    assert (first.pid, first.ts, first.details) == (10, 1.0, _stamped({"a": 1}))
    job_store.beat("n1", {"watcher": '{"a": 2}'}, pid=11, now=3.0)
    again = job_store.get_heartbeat("watcher", "n1")
    assert again is not None
    assert (again.id, again.pid, again.ts, again.details) == (first.id, 11, 3.0, _stamped({"a": 2}))
    assert [(h.component, h.node) for h in job_store.list_heartbeats()] == [
        ("route:r", "n1"),
        ("watcher", "n1"),
        ("watcher", "n2"),
    ]
    assert [h.component for h in job_store.list_heartbeats("n1")] == ["route:r", "watcher"]
    other = job_store.get_heartbeat("watcher", "n2")
    assert other is not None and other.ts == 2.0  # the other node's row untouched


def test_a_beat_is_all_or_nothing_in_a_failed_transaction(job_store: JobStore) -> None:
    job_store.beat("n1", {"watcher": "{}"}, pid=1, now=1.0)
    with pytest.raises(ZeroDivisionError), job_store.transaction():
        job_store.beat("n1", {"watcher": '{"x": 1}', "workers": "{}"}, pid=2, now=2.0)
        1 / 0  # noqa: B018
    row = job_store.get_heartbeat("watcher", "n1")
    assert row is not None and (row.pid, row.ts, row.details) == (1, 1.0, _stamped({}))
    assert job_store.get_heartbeat("workers", "n1") is None
