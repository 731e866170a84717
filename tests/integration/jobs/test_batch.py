"""Small files in batches (ketter.jobs.batch): one worker thread walks several
fresh small files side by side and shares their flushes. Real `ketter
workers` processes, real files, kill -9 in the middle of a batch."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node, temporaries, tree

FILES = 8


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _drop(node: Node, route: str, files: int = FILES) -> dict[str, bytes]:
    content = {}
    for i in range(files):
        data = os.urandom(20_000 + i)
        (node.root / "src" / route / f"take_{i}.wav").write_bytes(data)
        content[f"take_{i}.wav"] = data
        node.ketter("enqueue", str(node.root / "src" / route / f"take_{i}.wav"),
                    "--route", route, check=True)
    return content


def _run_to_the_end(node: Node) -> None:
    workers = node.start_workers(extra=("-w", "1"))
    node.wait_for(node.all_done, what="every job to finish", proc=workers)
    assert node.stop(workers) == 0


@pytest.mark.parametrize("route", ["copy", "move"])
def test_one_thread_walks_small_files_side_by_side(node: Node, route: str) -> None:
    expected = _drop(node, route)
    _run_to_the_end(node)
    assert set(node.states().values()) == {"completed"}
    assert tree(node.root / "dst" / route) == expected
    assert tree(node.root / "src" / route) == (expected if route == "copy" else {})
    assert temporaries(node.root) == []
    # Side by side: every job of the batch is verified before the first is
    # placed (a job at a time would alternate verify, place, verify, …).
    trail = [e for e in node.events() if e in ("verify", "place")]
    assert trail == ["verify"] * FILES + ["place"] * FILES, trail
    # Each job keeps its own full trail.
    for job_id in node.states():
        events = node.events(job_id)
        assert events[0] == "detect" and events[-1] == "complete", events
        for step in ("claim", "prepare", "copy", "verify", "place"):
            assert events.count(step) == 1, (step, events)


def test_a_batch_takes_64_small_files_or_16_larger_ones(node: Node) -> None:
    """70 files of 20 KB and three of 2 MiB, submitted at once to one worker
    thread: a batch of 64 small files, one of the 6 left (the larger files
    are no small file's mates), then the three larger files in one batch
    (up to 16 of them: mates_limits)."""
    src = node.root / "src" / "copy"
    expected = {}
    for i in range(70):
        expected[f"a_{i:02}.wav"] = os.urandom(20_000 + i)
    for i in range(3):
        expected[f"z_{i}.mov"] = os.urandom(2 * 1024 * 1024 + i)
    for name, data in expected.items():
        (src / name).write_bytes(data)
    node.ketter("enqueue", str(src), "--route", "copy", check=True)
    _run_to_the_end(node)
    assert set(node.states().values()) == {"completed"}
    assert tree(node.root / "dst" / "copy") == expected
    assert temporaries(node.root) == []
    # Side by side: a batch verifies every job before it places the first.
    trail = [e for e in node.events() if e in ("verify", "place")]
    batches = [64, 6, 3]
    assert trail == [step for n in batches for step in ["verify"] * n + ["place"] * n], trail


@pytest.mark.parametrize("route", ["copy", "move"])
def test_kill_in_the_middle_of_a_batch_delivers_every_file_once(node: Node, route: str) -> None:
    """Killed right after the first rename of the batch: that job is placed
    but not recorded, the others are verified and not placed. A new worker
    recovers each one on its own."""
    expected = _drop(node, route)
    first = node.start_workers(fault="after-place", extra=("-w", "1"))
    assert first.wait(60) == -signal.SIGKILL, "the fault point was not reached"
    assert "verifying" in node.states().values()
    _run_to_the_end(node)
    assert set(node.states().values()) == {"completed"}
    assert tree(node.root / "dst" / route) == expected  # byte-identical, once each
    assert tree(node.root / "src" / route) == (expected if route == "copy" else {})
    assert temporaries(node.root) == []
    assert "recover" in node.events()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_each_complete_event_carries_its_jobs_recorded_figures(node: Node, workers: str) -> None:
    """The ``complete`` event's figures (size, checksums, files, seconds) are
    the job row's as its steps wrote them: a copy placed just now takes them
    from its attempt, not from a read of the store (batch and single path)."""
    expected = _drop(node, "copy")
    one = node.root / "src" / "copy" / "big.wav"  # past the batch's size: alone
    one.write_bytes(os.urandom(3 << 20))
    node.ketter("enqueue", str(one), "--route", "copy", check=True)
    expected["big.wav"] = one.read_bytes()
    workers_proc = node.start_workers(extra=("-w", workers))
    node.wait_for(node.all_done, what="every job to finish", proc=workers_proc)
    assert node.stop(workers_proc) == 0
    assert tree(node.root / "dst" / "copy") == expected
    rows = node.query(
        "SELECT j.size, j.sha256, j.xxh128, j.file_count, j.transfer_seconds, e.details "
        "FROM jobs j JOIN events e ON e.job_id = j.id AND e.event = 'complete'"
    )
    assert len(rows) == FILES + 1
    for size, sha256, xxh128, files, seconds, details in rows:
        shown = json.loads(details)
        assert sha256 and len(sha256) == 64
        assert (shown["size"], shown["sha256"], shown["xxh128"], shown["files"]) == (
            size,
            sha256,
            xxh128,
            files,
        )
        assert shown["seconds"] == pytest.approx(seconds)


def test_a_failing_job_leaves_the_batch_and_the_others_complete(node: Node) -> None:
    """conflict: fail on one file; the rest of the batch is delivered."""
    (node.root / "dst" / "copy" / "take_3.wav").write_bytes(b"someone else's file")
    expected = _drop(node, "copy")
    _run_to_the_end(node)
    states = node.states()
    failed = [j for j, s in states.items() if s == "failed"]
    assert len(failed) == 1 and sorted(states.values()).count("completed") == FILES - 1
    got = tree(node.root / "dst" / "copy")
    assert got.pop("take_3.wav") == b"someone else's file"  # never overwritten
    del expected["take_3.wav"]
    assert got == expected
    assert temporaries(node.root) == []
    (error,) = node.query("SELECT error FROM jobs WHERE id = ?", (failed[0],))[0]
    assert "already exists" in error


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[0] == b"T"


def test_a_batch_frozen_after_its_claim_check_past_its_lease_places_nothing(node: Node) -> None:
    """The batch reads its claims once before its placements and trusts
    that read for a while (ketter.jobs.fence). Frozen right after it
    (SIGSTOP) past the lease (2 s), while a second worker takes every job
    over and delivers it, the batch wakes up to find its trust run out:
    each placement checks its claim again, finds it taken over and renames
    nothing, whichever notices first: the placement or the lease keeper.
    (The trust's arithmetic is pinned, clock by clock, in
    tests/contract/test_claim_fence.py.)"""
    expected = _drop(node, "renames")
    stale = node.start_workers(env={"KETTER_FAULT_STOP": "batch-fenced"}, extra=("-w", "1"))
    deadline = time.monotonic() + 60
    while not _stopped(stale.pid):
        assert stale.poll() is None, "the stale worker exited"
        assert time.monotonic() < deadline, "the batch never reached its claim check"
        time.sleep(0.05)
    assert set(node.states().values()) == {"verifying"}  # verified, none placed
    fresh = node.start_workers(extra=("-w", "1"))
    node.wait_for(node.all_done, what="the second worker to deliver", proc=fresh)
    stale.send_signal(signal.SIGCONT)
    log = node.root / "workers-0.log"
    dst = node.root / "dst" / "renames"
    node.wait_for(
        lambda: log.read_text().count("taken over") >= FILES or len(os.listdir(dst)) > FILES,
        what="the stale batch to find every claim taken over (or to place)",
        idle_timeout=30,
    )
    assert node.stop(stale) == 0
    assert node.stop(fresh) == 0
    assert set(node.states().values()) == {"completed"}
    assert tree(dst) == expected  # once each, no second copy
    assert tree(node.root / "src" / "renames") == {}
    for job_id in node.states():
        assert node.events(job_id).count("place") == 1
    assert temporaries(node.root) == []
