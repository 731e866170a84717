"""File identity on FUSE shares that renumber inodes (#15 §1, item 1).

sshfs and smbnetfs hand out FUSE node ids, not the server's inode numbers,
and number files anew on every mount. A key with the inode in it named
every delivered file as a new version after a remount (re-delivered, or
failed on the conflict policy), and a job detected before the remount
ended "changed since detected".
"""

from __future__ import annotations

import os
from pathlib import Path

from .harness import Shares
from .node import Node, route_yaml, write_files


def _renumber(shares: Shares, protocol: str, files: list[Path]) -> None:
    """Remount and look the files up in reverse order, so FUSE hands them
    other node ids; fail if the filesystem kept them (the test would then
    prove nothing)."""
    before = {p.name: os.stat(p).st_ino for p in files}
    shares.remount(protocol)
    after = {p.name: os.stat(p).st_ino for p in reversed(files)}
    assert before != after, "the remount kept every inode number: the test proves nothing"


def test_delivered_files_are_not_delivered_again_after_a_remount(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b)])
    # Written by another host into the share.
    write_files(a.other / "out-r", 12)
    (b.root / "in-r").mkdir()
    node.start()
    try:
        node.wait_states({"completed": 12})
    finally:
        node.stop()
    _renumber(shares, protocol, sorted((a.root / "out-r").iterdir()))
    node.start()
    try:
        node.settle(10)  # three rescans and twenty polls
        states = node.states()
    finally:
        node.stop()
    assert states == {"completed": 12}, states
    assert sorted(p.name for p in (b.root / "in-r").iterdir()) == [
        f"clip{i:04d}.bin" for i in range(12)
    ]


def test_jobs_detected_before_a_remount_are_delivered_after_it(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b, mode="move")])
    files = write_files(a.other / "out-r", 8)
    (b.root / "in-r").mkdir()
    node.start("watcher")  # detected, no worker yet
    try:
        node.wait_states({"detected": 8})
    finally:
        node.stop()
    _renumber(shares, protocol, [a.root / "out-r" / p.name for p in files])
    node.start()
    try:
        node.wait_states({"completed": 8})
        states = node.states()
    finally:
        node.stop()
    # The very jobs detected before the remount delivered: none ended
    # "superseded" (changed since detected) and was detected again.
    assert states == {"completed": 8}, states
    assert sorted(p.name for p in (b.root / "in-r").iterdir()) == sorted(p.name for p in files)
    assert list((a.root / "out-r").iterdir()) == []  # every source moved, none kept


def test_a_move_killed_mid_deletion_finishes_after_a_remount(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    """Killed between two source deletes of an ``as_unit`` move, then both
    shares remounted (new inode numbers, new devices) and the whole node
    started again, watcher included: the resumed job deletes the rest of
    the sources, none is kept as "changed", no second job is made of the
    half-deleted folder, and it completes with nothing left behind."""
    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b, mode="move", folders="as_unit")])
    files = write_files(a.other / "out-r" / "REEL_01", 40)
    (b.root / "in-r").mkdir()
    node.start(KETTER_FAULT="between-source-deletes")
    try:
        assert node.wait_exit() != 0  # SIGKILLed itself after the first delete
    finally:
        node.stop()
    left = sorted((a.root / "out-r" / "REEL_01").iterdir())
    assert 0 < len(left) < 40
    _renumber(shares, protocol, left)
    # The watcher runs too: the half-deleted folder is a new listing, yet
    # no job of its own while the move that is deleting it is active (it
    # used to be one, which failed on the conflict with the delivery). The
    # job resumes once the dead process's lease runs out.
    node.start()
    try:
        node.wait_states({"completed": 1})
        node.settle(8)  # polls and rescans after the folder is gone
        states = node.states()
    finally:
        node.stop()
    assert states == {"completed": 1}, states
    assert not (a.root / "out-r" / "REEL_01").exists()
    delivered = sorted(p.name for p in (b.root / "in-r" / "REEL_01").iterdir())
    assert delivered == sorted(["ascmhl", *(p.name for p in files)])
