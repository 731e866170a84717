"""A file rewritten in place after it was delivered, with its size and mtime
restored (issue #14 finding 2, review): the watcher sees the new ctime, and
the new version must be delivered once — not suppressed because the old
version's job (same source key: size, mtime, inode) is completed, and not
delivered again and again either.

Real `ketter watcher` and `ketter workers` processes on a copy route with
``conflict: overwrite``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.watcher.test_open_writers import Node

CONFIG = """\
state_dir: {root}/state
node: test-node
workers: 2
lease: {{ttl: 4s, heartbeat: 0.5s, sweep_interval: 0.3s, stall_timeout: 60s}}
retry: {{max_attempts: 3, base_delay: 0.2s, max_delay: 1s}}
routes:
  - {{name: copy, source: {root}/src/copy, destination: {root}/dst/copy, mode: copy,
     conflict: overwrite, stable_seconds: 0.5, poll_interval: 0.2s, rescan_interval: 1s}}
"""

#: Other bytes of the same size, then the mtime set back: only the ctime
#: shows the change.
REWRITE = """
import os, sys
path = sys.argv[1]
with open(sys.argv[2], "rb") as g:
    data = g.read()
st = os.stat(path)
assert len(data) == st.st_size
with open(path, "r+b") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
"""


class CopyNode(Node):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.config.write_text(CONFIG.format(root=root))

    def rows(self, name: str) -> list[tuple[str, int | None]]:
        db = self.root / "state" / "ketter.db"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            try:
                return con.execute(
                    "SELECT state, source_ctime_ns FROM jobs WHERE source_display LIKE ? "
                    "ORDER BY id",
                    (f"%/{name}",),
                ).fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            return []


@pytest.fixture
def node(tmp_path: Path) -> Iterator[CopyNode]:
    n = CopyNode(tmp_path)
    yield n
    n.cleanup()


def test_rewrite_in_place_after_delivery_is_delivered_once(node: CopyNode) -> None:
    node.start("watcher")
    node.start("workers")
    src = node.root / "src" / "copy" / "take.wav"
    dst = node.root / "dst" / "copy" / "take.wav"
    first, second = os.urandom(256 * 1024), os.urandom(256 * 1024)
    src.write_bytes(first)
    node.wait(lambda: [s for s, _ in node.rows("take.wav")] == ["completed"], "the first version")
    assert dst.read_bytes() == first
    before = src.stat()

    (node.root / "second").write_bytes(second)  # outside the route
    subprocess.run(
        [sys.executable, "-c", REWRITE, str(src), str(node.root / "second")], check=True, timeout=60
    )
    after = src.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )  # the same source key: only the ctime tells
    assert after.st_ctime_ns != before.st_ctime_ns

    node.wait(
        lambda: [s for s, _ in node.rows("take.wav")] == ["completed", "completed"],
        "the rewritten version",
        timeout=60,
    )
    assert dst.read_bytes() == second
    rows = node.rows("take.wav")
    assert rows[1][1] == after.st_ctime_ns  # the new job holds the new ctime

    # Idempotent for the same version: several rescans later (and after a
    # control file went through the whole pipeline) still exactly two jobs.
    (node.root / "src" / "copy" / "control.txt").write_bytes(b"done")
    node.wait(lambda: [s for s, _ in node.rows("control.txt")] == ["completed"], "the control")
    deadline = time.monotonic() + 3.5  # three and a half rescan intervals
    node.wait(lambda: time.monotonic() > deadline, "a few rescans")
    assert [s for s, _ in node.rows("take.wav")] == ["completed", "completed"]
    assert dst.read_bytes() == second


def test_metadata_change_after_delivery_is_not_delivered_again(node: CopyNode) -> None:
    """chmod moves the ctime but not the bytes: the delivered version stays
    settled (hashed once, compared with the job's SHA-256), so a permission
    fixer sweeping a copy route's zone does not re-deliver every file."""
    node.start("watcher")
    node.start("workers")
    src = node.root / "src" / "copy" / "take.wav"
    src.write_bytes(os.urandom(256 * 1024))
    node.wait(lambda: [s for s, _ in node.rows("take.wav")] == ["completed"], "the delivery")
    before = src.stat()
    os.chmod(src, 0o600)
    assert src.stat().st_ctime_ns != before.st_ctime_ns

    (node.root / "src" / "copy" / "control.txt").write_bytes(b"done")
    node.wait(lambda: [s for s, _ in node.rows("control.txt")] == ["completed"], "the control")
    deadline = time.monotonic() + 3.5  # three and a half rescan intervals
    node.wait(lambda: time.monotonic() > deadline, "a few rescans")
    assert [s for s, _ in node.rows("take.wav")] == ["completed"]
