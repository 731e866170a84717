"""The audit shipper of ``ketter workers`` runs as a child process
(:mod:`ketter.audit.ship_process`): it ships while the workers run, ships
their last event before it stops, dies with them on a kill -9 and is
started again if it exits on its own."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node
from tests.integration.jobs.test_worker_processes import _alive, _cmdline, children_of


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _shipper_of(pid: int) -> int | None:
    found = [c for c in children_of(pid) if b"audit ship --follow" in _cmdline(c)]
    assert len(found) <= 1, found
    return found[0] if found else None


def _wait(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _logged(node: Node) -> list[dict]:
    path = node.root / "state" / "logs" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _shipped(node: Node, action: str) -> int:
    return sum(1 for record in _logged(node) if record["event.action"] == action)


def _drop(node: Node, name: str) -> bytes:
    data = os.urandom(20_000)
    path = node.root / "src" / "copy" / name
    path.write_bytes(data)
    node.ketter("enqueue", str(path), "--route", "copy", check=True)
    return data


def test_the_shipper_is_a_child_that_ships_the_last_event_before_it_stops(node: Node) -> None:
    main = node.start_workers()
    node.wait_ready(main)
    shipper = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    assert shipper != main.pid
    _drop(node, "a.wav")
    node.wait_for(node.all_done, what="the job", proc=main)
    # Shipped while the workers run, by the child (the thread is gone).
    _wait(lambda: _shipped(node, "complete") == 1, "the complete event in the log")
    # Its heartbeat: its own pid, and the workers' it ships for (health).
    beat = _wait(
        lambda: node.query("SELECT pid, details FROM heartbeats WHERE component = 'audit'"),
        "the shipper's heartbeat",
    )
    assert beat[0][0] == shipper
    assert json.loads(beat[0][1])["workers_pid"] == main.pid
    main.send_signal(signal.SIGTERM)
    assert main.wait(60) == 0
    assert not _alive(shipper)
    # The workers' own last event came after the job's: shipped before the
    # shipper stopped, with every event the store holds, in order.
    assert _shipped(node, "workers_stopped") == 1
    seqs = [int(r["event.sequence"]) for r in _logged(node)]
    assert seqs == [r[0] for r in node.query("SELECT id FROM events ORDER BY id")]


def test_the_shipper_dies_with_the_workers(node: Node) -> None:
    main = node.start_workers()
    node.wait_ready(main)
    shipper = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    main.send_signal(signal.SIGKILL)
    main.wait(30)
    _wait(lambda: not _alive(shipper), "the shipper to die with the workers")


def _everything_shipped(node: Node) -> None:
    seqs = [int(r["event.sequence"]) for r in _logged(node)]
    assert seqs == [r[0] for r in node.query("SELECT id FROM events ORDER BY id")]
    assert _shipped(node, "workers_stopped") == 1


def test_a_shipper_gone_at_the_stop_leaves_the_last_pass_to_the_workers(node: Node) -> None:
    main = node.start_workers()
    node.wait_ready(main)
    shipper = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    os.kill(shipper, signal.SIGKILL)
    _wait(lambda: not _alive(shipper), "the shipper to die")
    # Stopped before it is started again (5 s): the workers ship their last
    # event themselves.
    assert node.stop(main) == 0
    _everything_shipped(node)


def test_a_stop_right_after_a_restart_still_ships_the_last_event(node: Node) -> None:
    main = node.start_workers()
    node.wait_ready(main)
    first = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    os.kill(first, signal.SIGKILL)
    _wait(
        lambda: (s := _shipper_of(main.pid)) is not None and s != first,
        "a new shipper process",
    )
    # At once: the new one may not have installed its handlers yet (it was
    # started with the stop signals blocked, so it acts on it when it can).
    assert node.stop(main) == 0
    _everything_shipped(node)


def _audit_check(node: Node) -> dict:
    """The ``audit log`` check of ``ketter health --json`` (the others fail
    here: no watcher runs)."""
    report = json.loads(node.ketter("health", "--json").stdout)
    (check,) = [c for c in report["checks"] if c["name"] == "audit log"]
    return check


def test_health_sees_a_shipper_that_stopped_beating(node: Node) -> None:
    with node.config.open("a") as f:
        f.write("health: {heartbeat_stale: 3s}\n")
    main = node.start_workers()
    node.wait_ready(main)
    shipper = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    _wait(
        lambda: node.query("SELECT pid FROM heartbeats WHERE component = 'audit'"),
        "the shipper's heartbeat",
    )
    assert _audit_check(node)["ok"]
    os.kill(shipper, signal.SIGSTOP)  # hung: alive, silent
    try:
        check = _wait(
            lambda: None if (c := _audit_check(node))["ok"] else c,
            "health to report the silent shipper",
        )
        assert "shipping stopped" in check["detail"], check
    finally:
        os.kill(shipper, signal.SIGCONT)
    assert node.stop(main) == 0


def test_a_shipper_that_dies_is_started_again_and_catches_up(node: Node) -> None:
    main = node.start_workers()
    node.wait_ready(main)
    first = _wait(lambda: _shipper_of(main.pid), "the shipper process to start")
    os.kill(first, signal.SIGKILL)
    _drop(node, "b.wav")
    node.wait_for(node.all_done, what="the job", proc=main)
    second = _wait(
        lambda: (s := _shipper_of(main.pid)) is not None and s != first and s,
        "a new shipper process",
    )
    _wait(lambda: _shipped(node, "complete") == 1, "the complete event shipped by the new one")
    assert main.poll() is None  # the workers never stopped for it
    assert node.stop(main) == 0
    assert not _alive(second)


def test_health_sees_a_silent_shipper_of_two_workers_processes(node: Node) -> None:
    """``worker_processes: 2``: both processes beat the one ``workers`` row,
    each naming the service's main process, and so does the shipper that
    holds the log (either process's child): a silent one is reported
    whichever process beat last."""
    with node.config.open("a") as f:
        f.write("health: {heartbeat_stale: 3s}\n")
    main = node.start_workers(extra=("--processes", "2", "-w", "1"))
    node.wait_ready(main)
    (child,) = _wait(
        lambda: [c for c in children_of(main.pid) if b" workers --processes 1 " in _cmdline(c)],
        "the second workers process",
    )
    seen: set[int] = set()

    def both_beat_naming_main() -> bool:
        for pid, details in node.query(
            "SELECT pid, details FROM heartbeats WHERE component = 'workers'"
        ):
            assert json.loads(details)["service"] == main.pid, (pid, details)
            seen.add(pid)
        return seen == {main.pid, child}

    _wait(both_beat_naming_main, "a beat of each workers process")
    ((shipper, details),) = _wait(
        lambda: node.query("SELECT pid, details FROM heartbeats WHERE component = 'audit'"),
        "the shipper's heartbeat",
    )
    assert json.loads(details)["service"] == main.pid
    assert shipper in {_shipper_of(main.pid), _shipper_of(child)}
    os.kill(shipper, signal.SIGSTOP)  # hung while it holds the log: the other cannot take over
    try:
        _wait(lambda: not _audit_check(node)["ok"], "health to report the silent shipper")
        # Whichever process beats the row from now on, it stays reported.
        for _ in range(6):
            check = _audit_check(node)
            assert not check["ok"] and "shipping stopped" in check["detail"], check
            time.sleep(0.3)
    finally:
        os.kill(shipper, signal.SIGCONT)
    assert node.stop(main) == 0
