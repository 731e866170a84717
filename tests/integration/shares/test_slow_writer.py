"""A slow writer on another host, through its own mount (#15 §1).

The file grows in steps, each pause shorter than ``stable_seconds``: Ketter
delivers it once, whole, never a partial copy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .harness import Shares
from .node import Node, route_yaml

CHUNKS, PAUSE, STABLE = 8, 1.0, 4.0


@pytest.mark.slow
def test_a_slow_writer_is_delivered_once_whole(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    a, b = shares.share(protocol, "A"), shares.share("smb" if protocol == "ssh" else "ssh", "B")
    (a.root / "out-r").mkdir()
    (b.root / "in-r").mkdir()
    node = Node(
        tmp_path / "node",
        [route_yaml("r", a, b, stable_seconds=f"{STABLE}s", poll_interval="0.5s")],
    )
    body = os.urandom(CHUNKS * 256 * 1024)
    node.start()
    try:
        with open(a.other / "out-r" / "growing.mov", "wb") as fh:
            for i in range(CHUNKS):
                fh.write(body[i * 256 * 1024 : (i + 1) * 256 * 1024])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(PAUSE)
        node.wait_states({"completed": 1}, timeout=180)
        node.settle(2 * STABLE)
        states = node.states()
    finally:
        node.stop()
    assert states == {"completed": 1}, states
    assert (b.root / "in-r" / "growing.mov").read_bytes() == body
