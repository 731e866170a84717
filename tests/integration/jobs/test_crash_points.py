"""Kill -9 at every named point, restart, and check Ketter's promises.

Each case: a worker (or `ketter enqueue`) SIGKILLs itself at a fault point
(KETTER_FAULT), a fresh worker starts, and then: the job completed, the
destination is byte-identical, no temporary is left anywhere, the source is
intact (copy) or gone only after the verified placement (move), exactly one
delivery, and the event trail tells what happened.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.jobs.harness import Node, temporaries, tree

SMALL = os.urandom(300_000)
BIG = os.urandom(6 * 2**20 + 12345)  # > resume_min_bytes (1 MiB): resumes


@pytest.fixture
def node(tmp_path: Path):
    n = Node(tmp_path)
    yield n
    n.cleanup()


def _folder(root: Path, files: int) -> dict[str, bytes]:
    content = {}
    for i in range(files):
        rel = f"reel/sub{i % 3}/take_{i:03d}.wav"
        data = os.urandom(1000 + i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        content[rel] = data
    return content


CASES = [
    # (fault point, route, payload, expected trail after the kill)
    ("after-dequeue", "copy", "small", "claim"),
    ("after-claim", "copy", "small", "recover"),
    ("mid-copy", "copy", "small", "rollback"),  # partial below resume_min_bytes
    ("mid-copy", "move", "big", "resume"),  # partial above it: resumed, not restarted
    ("after-fsync-before-place", "move", "small", "recover"),
    ("before-rename", "copy", "small", "recover"),
    ("after-place", "move", "small", "recover"),  # our inode is under the final name
    ("between-source-deletes", "units", "folder", "recover"),
]


@pytest.mark.parametrize(("point", "route", "payload", "trail"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_kill_at_point_then_recover(node: Node, point: str, route: str, payload: str,
                                    trail: str) -> None:
    src_root = node.root / "src" / route
    if payload == "folder":
        expected = {f"pkg/{k}": v for k, v in _folder(src_root / "pkg", 25).items()}
        node.ketter("enqueue", str(src_root / "pkg"), "--route", route, check=True)
    else:
        data = SMALL if payload == "small" else BIG
        (src_root / "clip.mov").write_bytes(data)
        expected = {"clip.mov": data}
        node.ketter("enqueue", str(src_root / "clip.mov"), "--route", route, check=True)

    first = node.start_workers(fault=point)
    assert first.wait(60) == -signal.SIGKILL, "the fault point was not reached"

    second = node.start_workers()
    node.wait_for(node.all_done, what="the job to finish", proc=second)
    assert node.stop(second) == 0

    ((job_id, state),) = node.query("SELECT id, state FROM jobs")
    assert state == "completed"
    assert tree(node.root / "dst" / route) == expected  # byte-identical, one delivery
    assert temporaries(node.root) == []
    if route == "copy":
        assert tree(src_root) == expected
    else:
        assert tree(src_root) == {}
    events = node.events(job_id)
    assert trail in events, events
    assert events[-1] == "complete"
    assert events.count("place") + events.count("recover") >= 1
    if trail == "resume":
        resumed = node.query("SELECT details FROM events WHERE job_id=? AND event='verify'",
                             (job_id,))
        assert '"resumed_from": 0' not in resumed[-1][0]


def test_enqueue_killed_after_commit_is_swept(node: Node) -> None:
    (node.root / "src" / "copy" / "a.mov").write_bytes(SMALL)
    killed = node.ketter("enqueue", str(node.root / "src/copy/a.mov"), "--route", "copy",
                         fault="after-commit-before-enqueue")
    assert killed.returncode == -signal.SIGKILL
    assert node.states() == {1: "detected"}  # the row is committed, no message
    workers = node.start_workers()
    node.wait_for(node.all_done, what="the sweep to find the job", proc=workers)
    assert node.stop(workers) == 0
    assert tree(node.root / "dst" / "copy") == {"a.mov": SMALL}


def test_kill_during_rollback_finishes_it(node: Node) -> None:
    (node.root / "src" / "copy" / "a.mov").write_bytes(SMALL)
    node.ketter("enqueue", str(node.root / "src/copy/a.mov"), "--route", "copy", check=True)
    assert node.start_workers(fault="mid-copy").wait(60) == -signal.SIGKILL
    # Recovery rolls the small partial back; die in the middle of that.
    assert node.start_workers(fault="mid-rollback").wait(60) == -signal.SIGKILL
    assert node.states() == {1: "rolling_back"}
    workers = node.start_workers()
    node.wait_for(node.all_done, what="the rollback and the retry", proc=workers)
    assert node.stop(workers) == 0
    assert node.states() == {1: "completed"}
    assert tree(node.root / "dst" / "copy") == {"a.mov": SMALL}
    assert temporaries(node.root) == []
    events = node.events(1)
    assert events.count("rollback") == 1 and "retry" in events


def test_kill_after_rename_under_rename_policy_delivers_once(node: Node) -> None:
    """The rename policy picked ``clip (1).mov``; recovery must find our inode
    there instead of copying again to ``clip (2).mov``."""
    (node.root / "dst" / "renames" / "clip.mov").write_bytes(b"an older delivery")
    (node.root / "src" / "renames" / "clip.mov").write_bytes(SMALL)
    node.ketter("enqueue", str(node.root / "src/renames/clip.mov"), "--route", "renames",
                check=True)
    assert node.start_workers(fault="after-place").wait(60) == -signal.SIGKILL
    workers = node.start_workers()
    node.wait_for(node.all_done, what="the job to finish", proc=workers)
    assert node.stop(workers) == 0
    assert node.states() == {1: "completed"}
    assert tree(node.root / "dst" / "renames") == {"clip.mov": b"an older delivery",
                                                   "clip (1).mov": SMALL}
    assert tree(node.root / "src" / "renames") == {}
    assert "recover" in node.events(1)
