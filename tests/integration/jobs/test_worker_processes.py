"""``ketter workers --processes N``: one main process and N-1 children that
share the queue, stop together, and die with the main process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env

from .harness import KETTER, Node


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _children(pid: int) -> list[int]:
    """The extra workers processes of ``pid`` (``workers --processes 1``),
    not its audit shipper."""
    return [c for c in children_of(pid) if b" workers --processes 1 " in _cmdline(c)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _started(node: Node) -> set[int]:
    rows = node.query("SELECT details FROM events WHERE event = 'workers_started'")
    return {json.loads(r[0])["pid"] for r in rows}


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_two_processes_run_the_queue_and_stop_together(node: Node) -> None:
    for i in range(6):
        path = node.root / "src" / "copy" / f"take_{i}.wav"
        path.write_bytes(os.urandom(10_000 + i))
        node.ketter("enqueue", str(path), "--route", "copy", check=True)
    main = node.start_workers(extra=("--processes", "2", "-w", "1"))
    _wait(lambda: len(_started(node)) == 2, "both workers processes to start")
    (child,) = _children(main.pid)
    assert _started(node) == {main.pid, child}
    node.wait_for(node.all_done, what="every job to finish", proc=main)
    for i in range(6):
        name = f"take_{i}.wav"
        assert (node.root / "dst" / "copy" / name).read_bytes() == (
            node.root / "src" / "copy" / name
        ).read_bytes()
    main.send_signal(signal.SIGTERM)  # systemd's KillMode=mixed: the main process only
    assert main.wait(60) == 0
    _wait(lambda: not _alive(child), "the child to stop")
    stopped = node.query("SELECT details FROM events WHERE event = 'workers_stopped'")
    assert len(stopped) == 2  # each stopped gracefully, once


def test_the_children_die_with_the_main_process(node: Node) -> None:
    main = node.start_workers(extra=("--processes", "2", "-w", "1"))
    _wait(lambda: len(_started(node)) == 2, "both workers processes to start")
    (child,) = _children(main.pid)
    main.send_signal(signal.SIGKILL)
    main.wait(30)
    _wait(lambda: not _alive(child), "the child to die with its parent")


def test_a_child_that_dies_stops_the_main_process(node: Node) -> None:
    main = node.start_workers(extra=("--processes", "2", "-w", "1"))
    _wait(lambda: len(_started(node)) == 2, "both workers processes to start")
    (child,) = _children(main.pid)
    os.kill(child, signal.SIGKILL)
    assert main.wait(60) == 1  # systemd restarts the unit (Restart=on-failure)


def test_ketter_run_starts_the_other_workers_processes_too(node: Node) -> None:
    """``ketter run`` (the watcher and the workers in one process) honours
    ``--processes`` / ``worker_processes`` as ``ketter workers`` does."""
    log = open(node.root / "run.log", "wb")  # noqa: SIM115
    main = subprocess.Popen(
        [*KETTER, "--config", str(node.config), "run", "--processes", "2", "-w", "1"],
        stdout=log,
        stderr=log,
        env=cli_env(),
    )
    log.close()
    node.procs.append(main)
    _wait(lambda: len(_started(node)) == 2, "both workers processes to start")
    (child,) = _children(main.pid)
    assert _started(node) == {main.pid, child}
    names = [f"take_{i}.wav" for i in range(6)]
    for i, name in enumerate(names):
        (node.root / "src" / "copy" / name).write_bytes(os.urandom(10_000 + i))
    node.wait_for(
        lambda: len(node.states()) == len(names) and node.all_done(),
        what="the watcher to find every file and the workers to deliver it",
        proc=main,
    )
    assert set(node.states().values()) == {"completed"}
    for name in names:
        assert (node.root / "dst" / "copy" / name).read_bytes() == (
            node.root / "src" / "copy" / name
        ).read_bytes()
    main.send_signal(signal.SIGTERM)
    assert main.wait(60) == 0
    _wait(lambda: not _alive(child), "the child to stop")
    stopped = node.query("SELECT details FROM events WHERE event = 'workers_stopped'")
    assert len(stopped) == 2


def test_ketter_run_refuses_no_processes(node: Node) -> None:
    done = subprocess.run(
        [*KETTER, "--config", str(node.config), "run", "--processes", "0"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert done.returncode == 2
    assert "--processes must be at least 1" in done.stderr


def test_a_reload_right_after_the_start_does_not_kill_a_child(node: Node) -> None:
    """A child gets the stop and reload signals blocked until its handlers
    are in: a SIGHUP (``systemctl reload``, passed on by the main process)
    during its start-up is acted on, not its default action (which kills)."""
    main = node.start_workers(extra=("--processes", "2", "-w", "1"))
    _wait(lambda: _children(main.pid), "the child to be started", timeout=60)
    (child,) = _children(main.pid)
    os.kill(child, signal.SIGHUP)  # long before it has imported Ketter
    _wait(
        lambda: main.poll() is not None or len(_started(node)) == 2,
        "both workers processes to start",
    )
    assert main.poll() is None, "the main process stopped: its child died"
    assert _alive(child)
    assert _started(node) == {main.pid, child}
    main.send_signal(signal.SIGTERM)
    assert main.wait(60) == 0
