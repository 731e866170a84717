"""Recovery between the rename and its record on FUSE shares (#15 §1).

A worker killed right after it renamed its delivery into place, before the
placement was recorded, finds that delivery again when it comes back. It
used to look for the temporary's inode, which sshfs and smbnetfs number
anew after a remount: the job copied again and failed on its own delivery
(``conflict: fail``) or delivered it a second time (``conflict: rename``).
On these filesystems the delivery is recognised by its size and the
verified checksum (a folder: each file of its manifest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .harness import Shares
from .node import Node, route_yaml, write_files


def _renumbered(shares: Shares, protocol: str, delivered: Path) -> None:
    """Remount, and look other files up first: FUSE numbers nodes in lookup
    order: after as many other lookups as its number, the delivery gets a
    higher one."""
    share = shares.share(protocol, "B")
    before = os.stat(delivered).st_ino
    for i in range(before + 1):
        (share.export / f"looked-up-first-{i}").write_bytes(b"x")
    shares.remount(protocol)
    for i in range(before + 1):
        os.stat(share.root / f"looked-up-first-{i}")
    assert os.stat(delivered).st_ino != before, "the remount kept the inode: proves nothing"


def _events(node: Node, job_id: int) -> list[str]:
    done = node.cli("job", "--json", str(job_id))
    assert done.returncode == 0, done.stderr
    return [e["event"] for e in json.loads(done.stdout)["events"]]


@pytest.mark.parametrize("conflict", ["fail", "rename"])
def test_a_file_placed_before_a_kill_and_a_remount_is_recovered_not_copied_again(
    shares: Shares, protocol: str, conflict: str, tmp_path: Path
) -> None:
    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b, mode="move", conflict=conflict)])
    (b.export / "in-r").mkdir()
    if conflict == "rename":  # an older delivery under the name: ours is "take (1).mov"
        (b.export / "in-r" / "take.mov").write_bytes(b"an older delivery")
    (a.export / "out-r").mkdir()
    data = os.urandom(3 << 20)
    (a.export / "out-r" / "take.mov").write_bytes(data)
    ours = "take.mov" if conflict == "fail" else "take (1).mov"
    node.start(KETTER_FAULT="after-place")
    try:
        assert node.wait_exit() != 0  # SIGKILLed itself after the rename
    finally:
        node.stop()
    assert (b.export / "in-r" / ours).read_bytes() == data
    _renumbered(shares, protocol, b.root / "in-r" / ours)
    node.start("workers")
    try:
        node.wait_states({"completed": 1})
    finally:
        node.stop()
    (job,) = node.jobs()
    assert "recover" in _events(node, int(job["job_id"]))
    delivered = {p.name: p.read_bytes() for p in (b.export / "in-r").iterdir()}
    want = {ours: data} | ({"take.mov": b"an older delivery"} if conflict == "rename" else {})
    assert delivered == want  # once, under the name it was placed at
    assert list((a.export / "out-r").iterdir()) == []


def test_a_folder_placed_before_a_kill_and_a_remount_is_recovered_by_its_manifest(
    shares: Shares, tmp_path: Path
) -> None:
    a, b = shares.share("smb", "A"), shares.share("smb", "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b, mode="move", folders="as_unit")])
    (b.export / "in-r").mkdir()
    files = write_files(a.export / "out-r" / "REEL_01", 6, size=100_000)
    node.start(KETTER_FAULT="after-place")
    try:
        assert node.wait_exit() != 0
    finally:
        node.stop()
    _renumbered(shares, "smb", b.root / "in-r" / "REEL_01")
    node.start("workers")
    try:
        node.wait_states({"completed": 1})
    finally:
        node.stop()
    (job,) = node.jobs()
    assert "recover" in _events(node, int(job["job_id"]))
    assert [p.name for p in (b.export / "in-r").iterdir()] == ["REEL_01"]
    delivered = sorted(p.name for p in (b.export / "in-r" / "REEL_01").iterdir())
    assert delivered == sorted(["ascmhl", *(p.name for p in files)])
    assert not (a.export / "out-r" / "REEL_01").exists()
