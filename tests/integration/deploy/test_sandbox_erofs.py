"""A route folder the sandbox makes read-only pauses the route, with the fix
in its reason (issue #15, section 2).

Under the units every folder outside ``ReadWritePaths=`` is a read-only bind
mount of a writable filesystem (``ProtectSystem=strict``); a destination
folder created after the service started is one of them, and every write
there fails with EROFS. That used to fail the job for good while ``health``
stayed healthy. Here a real process sets up the same mount shape in a
private mount namespace (``unshare``, as systemd does for a service) and
hits EROFS for real; a filesystem mounted read-only is the other cause,
told apart by the mount table. The decision (a route pause for
``retry.max_delay``, attempt given back) is in tests/unit/jobs/test_policy.py
("route-not-writable-*"); a paused route fails ``health``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[3]

PROGRAM = r"""
import json, os, subprocess, sys
from ketter.engine.oserrors import classify_oserror, read_only_reason

base = sys.argv[1]
sandboxed, ro_fs = os.path.join(base, "mnt", "qc"), os.path.join(base, "ro")
# ProtectSystem=strict: a read-only bind mount over a writable filesystem.
subprocess.run(["mount", "--bind", sandboxed, sandboxed], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", sandboxed], check=True)
# A filesystem mounted read-only.
subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro_fs], check=True)
out = {}
for name, folder in (("sandbox", sandboxed), ("mount", ro_fs)):
    path = os.path.join(folder, "inbox late").encode()
    try:
        os.mkdir(path)  # what the workers do first on a new destination folder
    except OSError as exc:
        error = classify_oserror(exc, path, "create the destination folder")
        out[name] = [type(error).__name__, error.message]
# What the sweep's look at the paused route can ask, without writing.
out["looks"] = [read_only_reason(p.encode()) for p in (sandboxed, ro_fs, base)]
print(json.dumps(out))
"""


def test_erofs_under_the_sandbox_says_re_render_the_units(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: install the Debian package util-linux"
    assert os.geteuid() == 0, "needs root (a private mount namespace)"
    (tmp_path / "mnt" / "qc").mkdir(parents=True)
    (tmp_path / "ro").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", sys.executable, "-c", PROGRAM,
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    kind, message = out["sandbox"]
    assert kind == "RouteNotWritable"
    assert "inbox late" in message
    assert "not writable under the unit's sandbox: re-render the units" in message
    kind, message = out["mount"]
    assert kind == "RouteNotWritable"
    assert "read-only filesystem (EROFS): remount it read-write" in message
    assert "unit's sandbox" not in message
    sandbox_look, mount_look, writable_look = out["looks"]
    assert sandbox_look.startswith("not writable under the unit's sandbox")
    assert mount_look.startswith("read-only filesystem")
    assert writable_look is None
    # Nothing leaked out of the private namespace.
    assert not os.path.ismount(tmp_path / "ro")


MOUNTINFO = (
    "22 1 8:1 / / ro,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 8:1 /srv/in\\040box /mnt/qc/in\\040box rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "31 22 0:40 / /mnt/cd ro,relatime shared:2 - iso9660 /dev/sr0 ro\n"
)


def test_read_only_reason_from_the_mount_table(tmp_path: Path) -> None:
    from ketter.engine.oserrors import MOUNT_REASON, SANDBOX_REASON, read_only_reason

    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO, encoding="utf-8")
    look = lambda p: read_only_reason(p, str(table))  # noqa: E731
    assert look(b"/mnt/qc/late") == SANDBOX_REASON  # under "/": ro bind of an rw ext4
    assert look(b"/mnt/qc/in box/ep1") is None  # in ReadWritePaths= (escaped space)
    assert look(b"/mnt/qc/in boxer") == SANDBOX_REASON  # a sibling, not inside it
    assert look(b"/mnt/cd/x") == MOUNT_REASON
    assert read_only_reason(b"/x", str(tmp_path / "missing")) is None
