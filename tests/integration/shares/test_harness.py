"""The harness itself: both servers up on their own ports, the mounts are
the FUSE filesystems a studio has, another host's writes are seen, and
nothing is left behind."""

from __future__ import annotations

import os

from .harness import Shares, listening, mounted


def test_shares_are_real_fuse_mounts_seen_by_another_host(shares: Shares, protocol: str) -> None:
    share = shares.share(protocol)
    assert mounted(share.mount) == share.fs_type
    assert shares.server(protocol).port not in (445, 22)
    (share.other / "from-other-host.bin").write_bytes(b"other" * 100)
    assert (share.root / "from-other-host.bin").read_bytes() == b"other" * 100
    assert (share.export / "from-other-host.bin").read_bytes() == b"other" * 100
    (share.export / "on-the-nas.bin").write_bytes(b"nas")
    assert (share.root / "on-the-nas.bin").read_bytes() == b"nas"
    # Another mount of the same export is another filesystem (its own st_dev).
    assert os.stat(share.root).st_dev != os.stat(share.other).st_dev


def test_restart_and_remount_keep_the_data(shares: Shares, protocol: str) -> None:
    share = shares.share(protocol)
    (share.root / "kept.bin").write_bytes(b"k" * 4096)
    shares.restart_server(protocol)
    shares.remount(protocol)
    assert (share.root / "kept.bin").read_bytes() == b"k" * 4096


def test_teardown_leaves_no_mount_and_no_server(tmp_path) -> None:
    from .harness import shares_up

    with shares_up(tmp_path / "net") as up:
        points = [m.point for s in (up.smbd, up.sshd) for m in s.mounts]
        ports = [up.smbd.port, up.sshd.port]
        pids = [
            p.pid
            for s in (up.smbd, up.sshd)
            for p in [s.proc, *(m.proc for m in s.mounts)]
            if p is not None
        ]
    assert not any(mounted(p) for p in points)
    assert not any(listening(p) for p in ports)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_a_missing_tool_fails_the_test_naming_its_package(monkeypatch) -> None:
    import pytest

    from .harness import TOOLS, require_tools

    monkeypatch.setitem(TOOLS, "/nonexistent/ketter-test-tool", "ketter-test-package")
    with pytest.raises(pytest.fail.Exception, match="apt-get install ketter-test-package"):
        require_tools()
