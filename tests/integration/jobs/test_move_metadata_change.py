"""A move whose source only had its metadata changed after the copy (a
``chmod``/``chgrp`` before a re-queue) deletes it once its bytes hash to
the verified checksum; new bytes behind a restored mtime are still kept
(#15 §1). Before, any ctime change kept the source, and the move reported
``completed`` with a ``source_kept_changed`` warning.

Real ``ketter transfer --mode move`` processes, stopped by the fault point
between the placement and the source deletion while the test changes the
source.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env


def _move_with_a_change(tmp_path: Path, src: Path, change: Callable[[], None]) -> dict:
    """Move ``src`` into ``tmp_path/out``; ``change`` runs while the process
    is stopped after placing. Returns the ``delete_source`` event's details."""
    (tmp_path / "out").mkdir()
    proc = subprocess.Popen(
        [*KETTER, "transfer", "--state-dir", str(tmp_path / "state"), "--mode", "move",
         str(src), str(tmp_path / "out")],
        env=cli_env(KETTER_FAULT_STOP="after-place-before-delete"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"T":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the transfer never reached the fault point"
        time.sleep(0.05)
    change()
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    con = sqlite3.connect(tmp_path / "state" / "ketter.db")
    try:
        (details,) = con.execute(
            "SELECT details FROM events WHERE event = 'delete_source'"
        ).fetchone()
    finally:
        con.close()
    return dict(json.loads(details))


def test_a_chmod_and_chgrp_after_the_copy_do_not_keep_the_source(tmp_path: Path) -> None:
    src = tmp_path / "take.mov"
    data = os.urandom(3 << 20)
    src.write_bytes(data)

    def chmod_chgrp() -> None:
        before = src.stat()
        src.chmod(0o640)
        os.chown(src, -1, 1 if before.st_gid != 1 else 2)
        assert src.stat().st_ctime_ns != before.st_ctime_ns

    details = _move_with_a_change(tmp_path, src, chmod_chgrp)
    assert details["deleted"] == 1 and details["kept_changed"] == []
    assert not src.exists()
    assert (tmp_path / "out" / "take.mov").read_bytes() == data


def test_a_chmod_inside_a_moved_folder_does_not_keep_that_file(tmp_path: Path) -> None:
    reel = tmp_path / "reel"
    (reel / "a").mkdir(parents=True)
    files = {f"a/clip{i}.bin": os.urandom(200_000) for i in range(3)}
    for rel, data in files.items():
        (reel / rel).write_bytes(data)
    details = _move_with_a_change(tmp_path, reel, lambda: (reel / "a/clip1.bin").chmod(0o600))
    assert details["deleted"] == 3 and details["kept_changed"] == []
    assert not reel.exists()
    for rel, data in files.items():
        assert (tmp_path / "out" / "reel" / rel).read_bytes() == data


@pytest.mark.parametrize("size", [4096, 3 << 20])
def test_new_bytes_behind_a_restored_mtime_are_still_kept(tmp_path: Path, size: int) -> None:
    src = tmp_path / "take.mov"
    old, new = os.urandom(size), os.urandom(size)
    src.write_bytes(old)

    def rewrite() -> None:
        before = src.stat()
        src.write_bytes(new)  # the same size, other bytes, the old mtime back
        os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))

    details = _move_with_a_change(tmp_path, src, rewrite)
    assert details["deleted"] == 0 and len(details["kept_changed"]) == 1
    assert src.read_bytes() == new
    assert (tmp_path / "out" / "take.mov").read_bytes() == old
