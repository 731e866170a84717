"""A full destination pauses its route and waits without using attempts
(R-J7; issue #14 finding 17): on a real tmpfs mounted as the destination,
filled by someone else, while the watcher and workers run. It used to fail
the job for good after three quick attempts while `health` said healthy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.jobs.pausing import Node, mount, unmounted_at_exit

pytestmark = pytest.mark.root

MiB = 2**20


def fill(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(b"\0" * size)


def test_job_that_does_not_fit_waits_and_completes_when_space_returns(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    dst.mkdir()
    src.mkdir()
    with unmounted_at_exit(dst):
        mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(dst))
        node = Node(tmp_path, src, dst, destination_mount=str(dst))
        fill(dst / "someone-else.bin", 3 * MiB + MiB // 2)  # ~0.5 MiB left
        node.start("watcher")
        node.start("workers")
        try:
            data = os.urandom(MiB)
            (src / "reel.mov").write_bytes(data)
            node.wait_for(node.paused, "the route to pause for the full destination")
            reason = node.route_status()[1]
            assert "bytes free" in reason and "resumes by itself" in reason, reason
            # Three attempts with a backoff of at most 1 s used to fail it in
            # about 3 s: wait well past that; it must keep waiting, unused.
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                _, state, attempt, _ = node.job("reel.mov")
                assert (state, attempt) == ("retry_wait", 0), (state, attempt)
                time.sleep(0.2)
            assert node.paused()
            assert node.events("fail") == []
            health = node.ketter("health")
            assert health.returncode == 1, health.stdout
            assert "route r" in health.stdout and "paused" in health.stdout
            assert "bytes free" in health.stdout, health.stdout
            status = node.ketter("status")
            assert status.returncode == 0, status.stderr
            paused_part = status.stdout.split("paused routes:")[1]
            assert "r" in paused_part and "bytes free" in paused_part, status.stdout
            assert not [n for n in os.listdir(dst) if n.startswith(".ketter-")]

            (dst / "someone-else.bin").unlink()
            node.wait_for(lambda: not node.paused(), "the route to resume by itself")
            node.wait_for(lambda: (node.job("reel.mov") or ())[1:2] == ("completed",),
                          "the job to complete once space returned")
            assert (dst / "reel.mov").read_bytes() == data
            assert len(node.events("route_paused")) == 1
            assert len(node.events("route_resumed")) == 1
            assert node.ketter("health").stdout.count("paused") == 0
        finally:
            node.stop()

