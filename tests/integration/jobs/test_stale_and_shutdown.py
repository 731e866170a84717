"""A worker that hangs past its lease, and a graceful stop mid-transfer."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node, temporaries, tree

BIG = os.urandom(24 * 2**20 + 777)


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[0].decode()


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("route", ["copy", "move"])
def test_stale_worker_neither_places_nor_deletes(node: Node, route: str) -> None:
    src = node.root / "src" / route / "reel.mxf"
    src.write_bytes(BIG)
    node.ketter("enqueue", str(src), "--route", route, check=True)
    stale = node.start_workers(env={"KETTER_FAULT_STOP": "mid-copy"})
    _wait(lambda: _proc_state(stale.pid) == "T", "the first worker to hang mid-copy")
    # Its lease (2 s) expires; the sweep of a second worker hands the job over.
    fresh = node.start_workers()
    node.wait_for(node.all_done, what="the second worker to deliver", proc=fresh)
    stale.send_signal(signal.SIGCONT)
    # The stale worker wakes up, finds its claim gone and stops its copy.
    node.wait_for(lambda: "lost" in (node.root / "workers-0.log").read_text()
                  or "taken over" in (node.root / "workers-0.log").read_text(),
                  what="the stale worker to notice", idle_timeout=30)
    assert node.stop(stale) == 0
    assert node.stop(fresh) == 0
    (job_id,) = node.states()
    assert node.states() == {job_id: "completed"}
    assert tree(node.root / "dst" / route) == {"reel.mxf": BIG}
    assert node.events(job_id).count("place") == 1
    assert node.events(job_id).count("delete_source") == (1 if route == "move" else 0)
    assert temporaries(node.root) == []
    if route == "copy":
        assert src.read_bytes() == BIG


def test_sigterm_releases_the_job_without_using_an_attempt(node: Node) -> None:
    # Big enough that the copy left after the stop point takes far longer
    # (about a second) than the main thread needs to run the signal handler.
    big = os.urandom(8 * 2**20) * 24
    src = node.root / "src" / "copy" / "reel.mxf"
    src.write_bytes(big)
    node.ketter("enqueue", str(src), "--route", "copy", check=True)
    worker = node.start_workers(env={"KETTER_FAULT_STOP": "mid-copy"})
    _wait(lambda: _proc_state(worker.pid) == "T", "the worker to reach mid-copy")
    # Deliver SIGTERM while it is stopped, then let it run: it sees the stop
    # flag at its next progress call, checkpoints and releases the job.
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGCONT)
    assert worker.wait(30) == 0
    ((state, attempt, owner),) = node.query("SELECT state, attempt, lease_owner FROM jobs")
    assert state == "transferring" and owner is None
    assert "release" in node.events(1)
    restarted = node.start_workers()
    node.wait_for(node.all_done, what="the job to resume", proc=restarted)
    assert node.stop(restarted) == 0
    ((state, attempt),) = node.query("SELECT state, attempt FROM jobs")
    assert (state, attempt) == ("completed", 1)  # the release did not cost an attempt
    assert (node.root / "dst" / "copy" / "reel.mxf").read_bytes() == big
    assert "resume" in node.events(1)
    assert temporaries(node.root) == []
