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


def test_transfer_onto_a_full_destination_does_not_promise_a_retry(tmp_path: Path) -> None:
    """``ketter transfer`` never retries: its message said "the route
    resumes by itself" and "does not retry" at once (a real 8 MiB tmpfs)."""
    import subprocess

    from tests.conftest import KETTER, cli_env

    dest = tmp_path / "full"
    dest.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"this test mounts a tmpfs (root): {mounted.stderr}"
    try:
        (dest / "filler").write_bytes(b"\0" * (6 * 2**20 + 2**19))
        (tmp_path / "clip.mov").write_bytes(os.urandom(2 * 2**20))
        done = subprocess.run(
            [
                *KETTER,
                "transfer",
                "--state-dir",
                str(tmp_path / "state"),
                str(tmp_path / "clip.mov"),
                str(dest),
                "--json",
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(["umount", "-l", str(dest)], check=False)
    assert done.returncode != 0
    error = json.loads(done.stdout)["jobs"][0]["error"]
    assert "does not retry" in error, error
    assert "resumes by itself" not in error and "retried later" not in error, error
