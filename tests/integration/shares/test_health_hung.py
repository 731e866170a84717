"""``ketter health`` on a hung share answers within its deadline (#15 §1, item 5).

A SIGSTOPped server leaves every ``statfs`` on its FUSE mount waiting in the
kernel (110 s seen, past any monitoring time-out). ``health`` asks the
filesystems from a child with a deadline and reports ``FAIL … timed out``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ketter.health import PROBE_SECONDS

from .harness import Shares
from .node import Node, route_yaml


def test_health_answers_on_a_hung_share(shares: Shares, protocol: str, tmp_path: Path) -> None:
    a, b = shares.share("ssh" if protocol == "smb" else "smb", "A"), shares.share(protocol, "B")
    (a.root / "out-r").mkdir()
    (b.root / "in-r").mkdir()
    node = Node(tmp_path / "node", [route_yaml("r", a, b)])
    server = shares.server(protocol)
    server.pause()
    try:
        started = time.monotonic()
        done = node.cli("health", timeout=PROBE_SECONDS + 50)
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        raise AssertionError("ketter health hung on the stopped share") from None
    finally:
        server.resume()
    assert took < PROBE_SECONDS + 20, took
    assert done.returncode != 0
    # Mostly the probe's deadline; the FUSE client sometimes gives up on the
    # stopped server first (EIO): either way a FAIL, in time.
    failed = f"FAIL  free space {b.root / 'in-r'}: "
    assert (
        f"{failed}timed out" in done.stdout
        or f"{failed}cannot stat: Input/output error" in done.stdout
    ), done.stdout
