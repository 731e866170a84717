"""Fixtures of the share tests: real servers and FUSE mounts (harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Shares, shares_up


@pytest.fixture
def shares(tmp_path: Path) -> Iterator[Shares]:
    """smbd + sshd on free loopback ports, smbnetfs and sshfs mounts of their
    exports (smbnetfs as it comes: statfs reports 0 blocks); all stopped and
    unmounted at the end, also on failure."""
    with shares_up(tmp_path / "net") as up:
        yield up


@pytest.fixture(params=["smb", "ssh"])
def protocol(request: pytest.FixtureRequest) -> str:
    """Each scenario on both protocols."""
    return str(request.param)
