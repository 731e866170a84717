"""A destination's error is the job's, never "state store not writable"
(review of issue #14 findings 8 and 17).

The engine raises ``classify_oserror(e) from e``; the store guard used to
follow that chain down to the OSError and call any EPERM/EACCES/EIO/ENOSPC
the job store's: a ``chattr +i`` destination paused the whole node with a
``store_unwritable`` alert and the job died as a crash ("gave up after 3
attempts"), and an ENOSPC during the copy never reached the DestinationFull
route pause (only the pre-copy space check did). Real node, real tmpfs,
real ``chattr +i``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.jobs.pausing import Node, mount, unmounted_at_exit

pytestmark = pytest.mark.root

MiB = 2**20


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP: state T in /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return fh.read().rsplit(b")", 1)[1].split()[0] == b"T"


def test_immutable_destination_fails_the_job_not_the_store(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    dst.mkdir()
    src.mkdir()
    if not _chattr("+i", dst):
        pytest.skip("chattr +i is not supported on this filesystem (needs root and ext4/xfs)")
    try:
        node = Node(tmp_path, src, dst)
        node.start("watcher")
        node.start("workers")
        try:
            (src / "reel.mov").write_bytes(os.urandom(100_000))
            node.wait_for(
                lambda: (node.job("reel.mov") or (None, ""))[1] == "failed",
                "the job to fail by the error policy",
            )
            error = node.job("reel.mov")[3]
            assert "EPERM" in error, error
            assert "worker died" not in error, error
            logs = node.logs()
            assert "state store not writable" not in logs, logs[-3000:]
            assert "store_unwritable" not in logs
            health = node.ketter("health")
            assert "state store" not in health.stdout, health.stdout
            assert "not writable" not in health.stdout, health.stdout
        finally:
            node.stop()
    finally:
        _chattr("-i", dst)


def test_destination_filled_during_the_copy_pauses_the_route(tmp_path: Path) -> None:
    dst, src = tmp_path / "dst", tmp_path / "src"
    dst.mkdir()
    src.mkdir()
    with unmounted_at_exit(dst):
        mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(dst))
        # min_free 0 and a 12 MiB file in 16 MiB: the pre-copy check passes.
        # resume_min_bytes 4 MiB makes the copy checkpoint every 1 MiB (after
        # each 4 MiB read), and the worker stops itself (SIGSTOP) at the
        # first one: the test fills the disk then, deterministically, while
        # the copy is under way.
        node = Node(tmp_path, src, dst, destination_mount=str(dst), min_free="0")
        with open(node.config, "a") as fh:
            fh.write("resume_min_bytes: 4MiB\n")
        node.start("watcher")
        workers = node.start("workers", KETTER_FAULT_STOP="mid-copy")
        filler = dst / "someone-else.bin"
        try:
            data = os.urandom(12 * MiB)
            (src / "reel.mov").write_bytes(data)
            deadline = time.monotonic() + 90
            while not _stopped(workers.pid):
                assert workers.poll() is None, node.logs()
                assert time.monotonic() < deadline, f"no mid-copy stop: {node.logs()}"
                time.sleep(0.05)
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                while fh.write(b"\0" * 65536):
                    pass
            os.kill(workers.pid, signal.SIGCONT)
            node.wait_for(node.paused, "the route to pause for the full destination")
            reason = node.route_status()[1]
            assert "ENOSPC" in reason and "resumes by itself" in reason, reason
            # The pause is committed first, then the job's undo ends it in
            # retry_wait (two transactions): wait for that, then watch it stay.
            node.wait_for(
                lambda: (node.job("reel.mov") or ())[1:2] == ("retry_wait",),
                "the job to wait for the route",
            )
            # Waits without using attempts (it used to be a crash: gave up
            # after 3 attempts with "the worker died").
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                _, state, attempt, _ = node.job("reel.mov")
                assert (state, attempt) == ("retry_wait", 0), (state, attempt)
                time.sleep(0.2)
            logs = node.logs()
            assert "state store not writable" not in logs, logs[-3000:]
            filler.unlink()
            node.wait_for(lambda: not node.paused(), "the route to resume by itself")
            node.wait_for(
                lambda: (node.job("reel.mov") or ())[1:2] == ("completed",),
                "the job to complete once space returned",
            )
            assert (dst / "reel.mov").read_bytes() == data
            assert node.events("fail") == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(workers.pid, signal.SIGCONT)
            node.stop()
