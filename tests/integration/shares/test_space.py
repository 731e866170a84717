"""smbnetfs reports no size (statfs: 0 blocks in all, 0 free) (#15 §1, item 2).

Every delivery onto it was refused as "can never fit … 0 bytes in all". Zero
blocks in all means "free space unknown": the room check is skipped and a
warning is logged once per filesystem; ``health`` says "unknown".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .harness import Shares
from .node import Node, route_yaml, write_files


def test_a_share_without_a_size_takes_deliveries_and_warns_once(
    shares: Shares, tmp_path: Path
) -> None:
    a, b = shares.share("ssh", "A"), shares.share("smb", "B")
    assert os.statvfs(b.root).f_blocks == 0  # smbnetfs as it comes
    node = Node(tmp_path / "node", [route_yaml("r", a, b)])
    write_files(a.other / "out-r", 6)
    (b.root / "in-r").mkdir()
    node.start()
    try:
        node.wait_states({"completed": 6})
        health = node.cli("health", "--json")
    finally:
        node.stop()
    log = node.log.read_text()
    assert log.count("free space unknown on") == 1, log[-3000:]
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    space = checks[f"free space {b.root / 'in-r'}"]
    assert space["ok"] and "unknown" in space["detail"], space
