"""When a node name is free to start on a shared store (issue #18 item 3):
:func:`ketter.runtime.identity.conflict` as a table, and the nodes view of
``status``/``health``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from ketter.runtime.identity import conflict, nodes_view

HERE = {"host": "n1.example", "machine": "m-1", "boot": "boot-1"}
TTL = 30.0
NOW = 1000.0


@dataclass
class Row:
    component: str
    node: str
    pid: int
    ts: float
    details: object


def row(component: str, *, age: float, pid: int = 1, **details: object) -> Row:
    return Row(component, "ingest-1", pid, NOW - age, json.dumps(details))


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """A pid that ran on this machine and is gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("case", "refused"),
    [
        # another host, live: refused
        ("other-host-live", "in use"),
        # another host, older than lease.ttl: free
        ("other-host-stale", None),
        # another host, stopped cleanly: free
        ("other-host-stopped", None),
        # this machine before a reboot (another boot id), live: free (that
        # boot's processes are gone; a reboot within lease.ttl must not lock
        # the node out)
        ("other-boot-live", None),
        # the same host name on another machine (another machine id): refused
        ("same-host-other-machine", "another machine"),
        # another host name with this machine id (a clone of one image):
        # another machine, refused
        ("other-host-same-machine-id", "in use"),
        # a row without a machine id (written before them) from this host
        # name and another boot: maybe another machine named alike, refused
        ("old-row-same-host-other-boot", "before its last reboot"),
        # a row without a machine id from another host name: refused
        ("old-row-other-host", "in use"),
        # this host and boot, the same service, its pid still runs: refused
        ("same-service-running", "already runs its workers"),
        # this host and boot, the same service, its pid is gone (kill -9): free
        ("same-service-dead", None),
        # this host and boot, another service of the node (the watcher): free
        ("other-service-running", None),
        # a row without origin (written before origins): not judged
        ("no-origin", None),
        # a route's row from another host whose watcher stopped cleanly
        # (its routes' rows stay young): not judged, the process rows are
        ("route-row-other-host", None),
        # the shipper's row of another host: not judged either
        ("audit-row-other-host", None),
        # a row another process of this service wrote (its extra processes)
        ("same-service-other-process", None),
    ],
)
def test_who_may_start(case: str, refused: str | None, dead_pid: int) -> None:
    other = {"host": "n2.example", "machine": "m-2", "boot": "boot-9"}
    rows = {
        "other-host-live": [row("workers", age=5, origin=other)],
        "other-host-stale": [row("workers", age=TTL + 0.1, origin=other)],
        "other-host-stopped": [row("workers", age=1, origin=other, stopped=True)],
        "other-boot-live": [row("watcher", age=3, origin={**HERE, "boot": "boot-0"})],
        "same-service-running": [row("workers", age=1, pid=os.getppid(), origin=HERE)],
        "same-service-dead": [row("workers", age=1, pid=dead_pid, origin=HERE)],
        "other-service-running": [row("watcher", age=1, pid=os.getppid(), origin=HERE)],
        "no-origin": [row("workers", age=1)],
        "same-host-other-machine": [row("workers", age=1, origin={**other, "host": HERE["host"]})],
        "other-host-same-machine-id": [
            row("workers", age=1, origin={**other, "machine": HERE["machine"]})
        ],
        "old-row-same-host-other-boot": [
            row("workers", age=1, origin={"host": HERE["host"], "boot": "boot-0"})
        ],
        "old-row-other-host": [row("workers", age=1, origin={"host": "n2.example", "boot": "b"})],
        "route-row-other-host": [
            row("watcher", age=1, origin=other, stopped=True),
            row("route:a", age=1, origin=other),
        ],
        "audit-row-other-host": [row("audit", age=1, origin=other)],
        "same-service-other-process": [
            row("workers", age=1, pid=os.getppid(), origin=HERE, service=4321)
        ],
    }[case]
    problem = conflict(
        rows, role="workers", now=NOW, ttl=TTL, mine=HERE, pid=os.getpid(), service=4321
    )
    if refused is None:
        assert problem is None, problem
    else:
        assert problem is not None and refused in problem, problem


def test_run_checks_both_of_its_services(dead_pid: int) -> None:
    rows = [row("watcher", age=1, pid=os.getppid(), origin=HERE)]
    problem = conflict(rows, role="run", now=NOW, ttl=TTL, mine=HERE, pid=os.getpid())
    assert problem is not None and "already runs its watcher" in problem


def test_the_nodes_view_lists_processes_and_route_watchers() -> None:
    beats = [
        Row("workers", "a", 10, NOW - 1, {"origin": {"host": "ha"}}),
        Row("watcher", "a", 11, NOW - 50, {"origin": {"host": "ha"}}),
        Row("watcher", "b", 20, NOW - 2, {"stopped": True, "origin": {"host": "hb"}}),
        Row("route:r1", "a", 11, NOW - 50, {"leader": True}),  # stale: not watching
        Row("route:r1", "c", 30, NOW - 1, {"leader": True}),
        Row("route:r2", "c", 30, NOW - 1, {"leader": False}),
        Row("route:r2", "d", 40, NOW - 2, {"leader": True, "lost": True}),  # root lost
        Row("audit", "a", 10, NOW - 1, {}),  # not a process row
    ]
    view = nodes_view(beats, now=NOW, live_for=TTL)
    assert view["route_watchers"] == {"r1": "c"}
    by_node = {n["node"]: n for n in view["nodes"]}
    assert set(by_node) == {"a", "b"}
    assert by_node["a"]["host"] == "ha"
    assert [(p["component"], p["state"]) for p in by_node["a"]["processes"]] == [
        ("workers", "live"),
        ("watcher", "stale"),
    ]
    assert by_node["b"]["processes"][0]["state"] == "stopped"


def test_a_process_started_by_the_running_service_is_its_own() -> None:
    # The API's extra processes (api.processes) start while the main one runs.
    rows = [row("api", age=1, pid=os.getppid(), origin=HERE)]
    assert (
        conflict(
            rows, role="api", now=NOW, ttl=TTL, mine=HERE, pid=os.getpid(), parent=os.getppid()
        )
        is None
    )
    refused = conflict(rows, role="api", now=NOW, ttl=TTL, mine=HERE, pid=os.getpid())
    assert refused is not None and "already runs its api" in refused
