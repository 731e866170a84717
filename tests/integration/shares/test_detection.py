"""Polling finds a file written by another host without waiting for the
rescan (#15 §1, item 3).

sshfs answers ``stat`` and ``readdir`` from a 20 s client cache, and an
smbnetfs share root has a constant mtime (1970): new files waited for the
10-minute rescan (590–600 s measured). Now a changed folder is listed again
past the cache horizon, and a folder with no mtime at every poll.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .harness import Shares
from .node import Node, route_yaml

POLL, STABLE = 1.0, 1.0
#: sshfs's default attribute and listing cache (dcache_timeout / cache_timeout).
SSHFS_CACHE = 20.0


def test_a_file_from_another_host_is_found_by_polling(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    a, b = shares.share(protocol, "A"), shares.share("ssh" if protocol == "smb" else "smb", "B")
    (b.root / "in-r").mkdir()
    # The route's source is the share's root (smbnetfs: mtime 0, constant).
    node = Node(
        tmp_path / "node",
        [
            route_yaml(
                "r",
                a,
                b,
                source=f"'{a.root}'",
                poll_interval=f"{POLL}s",
                stable_seconds=f"{STABLE}s",
                rescan_interval="10m",
            )
        ],
    )
    (a.other / "first.bin").write_bytes(os.urandom(1000))
    node.start()
    try:
        node.wait_states({"completed": 1})  # the watcher is polling now
        time.sleep(2 * POLL)
        (a.other / "second.bin").write_bytes(os.urandom(1000))
        written = time.monotonic()
        node.wait_states({"completed": 2}, timeout=120)
        took = time.monotonic() - written
    finally:
        node.stop()
    horizon = STABLE + 3 * POLL + (SSHFS_CACHE if protocol == "ssh" else 0.0)
    # Detected within the horizon (the delivery of 1 kB and the CLI's polling
    # of the job list add a few seconds); the rescan would take 600 s.
    assert took < horizon + 15, (took, horizon)
    assert (b.root / "in-r" / "second.bin").exists()
