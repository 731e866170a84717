"""The pre-delete guard of a move compares content where inodes are not
kept (#15 §1, item 1).

On sshfs a file's identity without its inode is size + mtime + ctime, and
sshfs's ctime is its mtime: a writer that rewrites a source in place after
its copy and restores size and mtime would have its new bytes deleted.
Before deleting, the source's bytes are compared with the delivery's. (On
smbnetfs the ctime is the server's change time, which the identity already
sees; the test is the sshfs case.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .harness import Shares, wait_for
from .node import Node, route_yaml


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"T"


def test_a_source_rewritten_with_its_mtime_restored_is_not_deleted(
    shares: Shares, tmp_path: Path
) -> None:
    a, b = shares.share("ssh", "A"), shares.share("ssh", "B")
    node = Node(tmp_path / "node", [route_yaml("r", a, b, mode="move", conflict="rename")])
    old, new = os.urandom(1 << 20), os.urandom(1 << 20)
    (a.export / "out-r").mkdir()
    (b.export / "in-r").mkdir()
    source = a.export / "out-r" / "take.bin"  # on the server's disk
    source.write_bytes(old)
    node.start(KETTER_FAULT_STOP="after-place-before-delete")
    try:
        assert node.proc is not None
        pid = node.proc.pid
        wait_for(lambda: _stopped(pid), 120, "the node to stop before the delete")
        before = os.stat(source)
        source.write_bytes(new)  # the same size, other bytes
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.kill(pid, signal.SIGCONT)
        node.wait_states({"completed": 1})
    finally:
        node.stop()
    delivered = {p.name: p.read_bytes() for p in (b.export / "in-r").iterdir()}
    assert old in delivered.values()
    assert new in delivered.values() or (source.exists() and source.read_bytes() == new), (
        "the rewritten source was deleted: its new bytes are lost"
    )
