"""``same_fs_move: rename`` killed at each of its steps (issue #16 item 4).

A real workers process SIGKILLs itself at a named point (KETTER_FAULT), a
fresh one starts, and then: the job completed, the delivery is the source's
own inode (moved, never copied nor delivered twice), nothing is left at the
source nor any temporary anywhere, and the trail tells what happened.

The points, in the order the job reaches them:

* ``mid-hash`` — the source half hashed (state ``transferring``);
* ``after-hash-before-record`` — hashed, nothing recorded yet;
* ``after-record-before-rename`` — the hashes and the source's inode
  recorded durably (``verifying``), no rename yet;
* ``before-rename`` — writers looked for, right before the rename syscall;
* ``after-place`` — renamed into place and flushed, ``place`` not recorded:
  the next claim finds the source's inode under the final name (``recover``);
* ``after-place-before-delete`` — ``place`` recorded, the deletion (which
  finds the source gone) and ``completed`` not yet.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.jobs.harness import CONFIG, Node, temporaries, tree

DATA = os.urandom(6 * 2**20 + 321)  # several reads: mid-hash lands mid-file

ROUTES = """\
  - {{name: rmove, source: src/rmove, destination: dst/rmove, mode: move,
     same_fs_move: rename, stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: rrenames, source: src/rrenames, destination: dst/rrenames, mode: move,
     conflict: rename, same_fs_move: rename, stable_seconds: 0.5, poll_interval: 0.2s}}
  - {{name: runits, source: src/runits, destination: dst/runits, mode: move,
     folders: as_unit, mhl: false, same_fs_move: rename, stable_seconds: 0.5,
     poll_interval: 0.2s}}
"""


class RenameNode(Node):
    """The harness's node with three ``same_fs_move: rename`` routes more."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        for route in ("rmove", "rrenames", "runits"):
            (root / "src" / route).mkdir(parents=True, exist_ok=True)
            (root / "dst" / route).mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG.format(max_attempts=6) + ROUTES.format())


@pytest.fixture
def node(tmp_path: Path):
    n = RenameNode(tmp_path)
    yield n
    n.cleanup()


def _placements(node: RenameNode, job_id: int) -> list[tuple[str, dict]]:
    """The events that record a placement: ``place``, or the ``recover`` of a
    delivery found under the final name (the claim of a job in flight writes
    a ``recover`` event too, without ``found``)."""
    rows = node.query("SELECT event, details FROM events WHERE job_id=? ORDER BY id", (job_id,))
    out = [(event, json.loads(details)) for event, details in rows]
    return [(e, d) for e, d in out if e == "place" or (e == "recover" and "found" in d)]


def _run_killed_then_recover(node: RenameNode, point: str) -> None:
    first = node.start_workers(fault=point)
    assert first.wait(60) == -signal.SIGKILL, "the fault point was not reached"
    second = node.start_workers()
    node.wait_for(node.all_done, what="the job to finish", proc=second)
    assert node.stop(second) == 0


FILE_CASES = [
    # (fault point, expected trail after the kill)
    ("mid-hash", "rollback"),
    ("after-hash-before-record", "rollback"),
    ("after-record-before-rename", "rollback"),
    ("before-rename", "rollback"),
    ("after-place", "found"),
    ("after-place-before-delete", "recover"),
]


@pytest.mark.parametrize(("point", "trail"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_rename_killed_at_point(node: RenameNode, point: str, trail: str) -> None:
    src = node.root / "src" / "rmove" / "clip.mov"
    src.write_bytes(DATA)
    ino = src.stat().st_ino
    node.ketter("enqueue", str(src), "--route", "rmove", check=True)
    _run_killed_then_recover(node, point)

    ((job_id, state),) = node.query("SELECT id, state FROM jobs")
    assert state == "completed"
    assert tree(node.root / "dst" / "rmove") == {"clip.mov": DATA}  # one delivery
    assert (node.root / "dst" / "rmove" / "clip.mov").stat().st_ino == ino  # moved
    assert tree(node.root / "src" / "rmove") == {}
    assert temporaries(node.root) == []
    _check_trail(node, job_id, trail)
    assert node.events(job_id).count("delete_source") == 1


def _check_trail(node: RenameNode, job_id: int, trail: str) -> None:
    """``trail``: ``rollback`` (started again after the kill), ``found`` (the
    delivery found under the final name) or ``recover`` (a placed job
    claimed again); exactly one placement, the job completed."""
    events = node.events(job_id)
    assert events[-1] == "complete"
    ((event, details),) = _placements(node, job_id)  # exactly one placement
    if trail == "found":
        assert event == "recover" and details["inode"], details
    else:
        assert event == "place" and details["mode"].startswith("moved:"), details
        assert trail in events, events


def test_killed_after_rename_under_rename_policy_delivers_once(node: RenameNode) -> None:
    """The rename policy picked ``clip (1).mov``: the next claim finds the
    source's inode there instead of renaming anything to ``clip (2).mov``."""
    (node.root / "dst" / "rrenames" / "clip.mov").write_bytes(b"an older delivery")
    src = node.root / "src" / "rrenames" / "clip.mov"
    src.write_bytes(DATA)
    node.ketter("enqueue", str(src), "--route", "rrenames", check=True)
    _run_killed_then_recover(node, "after-place")
    assert node.states() == {1: "completed"}
    assert tree(node.root / "dst" / "rrenames") == {
        "clip.mov": b"an older delivery",
        "clip (1).mov": DATA,
    }
    assert tree(node.root / "src" / "rrenames") == {}
    ((event, details),) = _placements(node, 1)
    assert event == "recover" and details["found"].endswith("clip (1).mov")


def test_a_new_file_at_the_source_path_after_the_rename_is_kept(node: RenameNode) -> None:
    """Killed after the rename was recorded; a new file then appears under the
    source's name. The deletion that follows must not take it: its identity
    is not the version moved (it is a new version, for a job of its own)."""
    src = node.root / "src" / "rmove" / "clip.mov"
    src.write_bytes(DATA)
    node.ketter("enqueue", str(src), "--route", "rmove", check=True)
    first = node.start_workers(fault="after-place-before-delete")
    assert first.wait(60) == -signal.SIGKILL
    assert not src.exists()
    src.write_bytes(b"a new take under the same name")
    second = node.start_workers()
    node.wait_for(node.all_done, what="the job to finish", proc=second)
    assert node.stop(second) == 0
    assert node.states() == {1: "completed"}
    assert tree(node.root / "dst" / "rmove") == {"clip.mov": DATA}
    assert src.read_bytes() == b"a new take under the same name"
    (details,) = node.query("SELECT details FROM events WHERE job_id=1 AND event='delete_source'")[
        0
    ]
    deleted = json.loads(details)
    assert deleted["deleted"] == 0 and deleted["kept_changed"] == [str(src)]


UNIT_CASES = [
    ("mid-hash", "rollback"),
    ("after-record-before-rename", "rollback"),
    ("after-place", "found"),
    ("after-place-before-delete", "recover"),
]


@pytest.mark.parametrize(("point", "trail"), UNIT_CASES, ids=[c[0] for c in UNIT_CASES])
def test_unit_rename_killed_at_point(node: RenameNode, point: str, trail: str) -> None:
    """An ``as_unit`` folder (``mhl: false``) is renamed as a whole."""
    unit = node.root / "src" / "runits" / "reel"
    expected = {}
    for i in range(12):
        rel = f"sub{i % 3}/take_{i:03d}.wav"
        data = os.urandom(2000 + i) if i else DATA
        (unit / rel).parent.mkdir(parents=True, exist_ok=True)
        (unit / rel).write_bytes(data)
        expected[f"reel/{rel}"] = data
    ino = unit.stat().st_ino
    node.ketter("enqueue", str(unit), "--route", "runits", check=True)
    _run_killed_then_recover(node, point)

    ((job_id, state),) = node.query("SELECT id, state FROM jobs")
    assert state == "completed"
    assert tree(node.root / "dst" / "runits") == expected
    assert (node.root / "dst" / "runits" / "reel").stat().st_ino == ino  # the folder moved
    assert os.listdir(node.root / "src" / "runits") == []
    assert temporaries(node.root) == []
    _check_trail(node, job_id, trail)
    (count,) = node.query(
        "SELECT COUNT(*) FROM job_files WHERE job_id=? AND sha256 IS NOT NULL", (job_id,)
    )[0]
    assert count == 12
