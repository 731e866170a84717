"""Real error paths: disk full, permission denied, changing sources, mounts.

Each transfer runs through the workers' path (:mod:`.workers_bench`; the
permission test through ``ketter transfer``'s service in a process of its
own): what an error does is read from the job's row (its state and
recorded error) and the route's pause, as the workers leave them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable

import pytest

from ketter.jobs.routes import is_paused
from tests.conftest import cli_env

from .helpers import ketter_names, read, tmpfs, write
from .workers_bench import Once, Workers

MiB = 1024 * 1024


def fill(folder: bytes) -> None:
    """Take every free byte of ``folder``'s filesystem (a file ``filler``)."""
    with open(folder + b"/filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (256 * 1024))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_disk_full_is_route_unavailable_and_leaves_nothing(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """The destination fills up while the copy runs (ENOSPC): the route is
    paused (a DestinationFull, a RouteUnavailable), the job waits without
    using its attempt, and its temporary is gone."""
    write(bt + b"/src/big", os.urandom(24 * MiB))
    with tmpfs(bt + b"/small", "32m") as dst:
        w = workers(destination="small")
        filled = Once("copy", lambda: fill(dst))
        w.hooks.append(filled)
        (job,) = w.transfer("r", bt + b"/src/big")
        assert filled.fired
        assert job.state == "retry_wait", (job.state, job.error)
        assert "no space left" in (job.error or ""), job.error
        assert job.attempt == 0  # given back: waiting for room uses none
        assert is_paused(w.store, "r")
        assert w.alerts.kinds() == ["route_paused"]
        assert os.listdir(dst) == [b"filler"]
    assert os.path.getsize(bt + b"/src/big") == 24 * MiB


def test_a_file_larger_than_the_destination_fails_before_writing(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    """A file that cannot fit even in the empty destination is never
    started: the job fails for good at validation (the test-only driver
    used to start it and stop at ENOSPC, pausing nothing)."""
    write(bt + b"/src/big", os.urandom(3 * MiB))
    with tmpfs(bt + b"/small", "1m") as dst:
        (job,) = workers(destination="small").transfer("r", bt + b"/src/big")
        assert job.state == "failed", (job.state, job.error)
        assert "can never fit" in (job.error or ""), job.error
        assert os.listdir(dst) == []
    assert os.path.getsize(bt + b"/src/big") == 3 * MiB


def test_disk_full_in_a_folder_leaves_nothing(bt: bytes, workers: Callable[..., Workers]) -> None:
    for i in range(5):
        write(bt + b"/src/d/f%d" % i, os.urandom(MiB // 3))
    with tmpfs(bt + b"/small", "4m") as dst:
        w = workers(destination="small", folders="as_unit", package_min_files=0)
        filled = Once("copy", lambda: fill(dst))
        w.hooks.append(filled)
        (job,) = w.transfer("r", bt + b"/src/d")
        assert filled.fired
        assert job.state == "retry_wait", (job.state, job.error)
        assert "no space left" in (job.error or ""), job.error
        assert is_paused(w.store, "r")
        assert os.listdir(dst) == [b"filler"]
    assert len(os.listdir(bt + b"/src/d")) == 5


#: ``ketter transfer``'s service (:func:`ketter.jobs.oneshot.run_oneshot`) run
#: as nobody. One transfer runs as root first: every module of the path is
#: loaded before the drop (the interpreter's own files may not be readable
#: by nobody), and the job store is handed to nobody.
AS_NOBODY = """
import json, os, sys
from ketter.config import parse_config
from ketter.jobs.oneshot import OneshotOptions, run_oneshot
from ketter.node import Node
base = sys.argv[1]
node = Node.from_config(parse_config(f"state_dir: {base}/state\\nnode: n1\\n"), "transfer")
assert run_oneshot(node, os.fsencode(base + "/warm/w"), os.fsencode(base + "/warm/w.copy"),
                   OneshotOptions()).ok
for dirpath, dirs, files in os.walk(base + "/state"):
    for name in [".", *dirs, *files]:
        os.chown(os.path.join(dirpath, name), 65534, 65534)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
result = run_oneshot(node, os.fsencode(base + "/src/a"), os.fsencode(base + "/dst"),
                     OneshotOptions())
print(json.dumps([[job.state, job.error] for job in result.jobs]))
"""


def test_permission_denied_as_an_unprivileged_user() -> None:
    """A transfer run by nobody into a folder only root may write: the job
    fails at once (EACCES is permanent), naming the folder."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    # pytest's own temp root is 0700: use a world-traversable folder instead.
    bt = os.fsencode(tempfile.mkdtemp(prefix="ketter-eacces-"))
    try:
        os.chmod(bt, 0o755)
        write(bt + b"/src/a", b"secret")
        write(bt + b"/warm/w", b"warm-up")
        os.makedirs(bt + b"/dst", mode=0o755)  # owned by root: nobody cannot write here
        os.chmod(bt + b"/src", 0o755)
        r = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, bt],
            capture_output=True, text=True, env=cli_env(), timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        ((state, error),) = json.loads(r.stdout)
        assert state == "failed", (state, error)
        assert "EACCES" in error and "/dst/" in error, error
        assert os.listdir(bt + b"/dst") == []
        assert read(bt + b"/src/a") == b"secret"
    finally:
        shutil.rmtree(bt)


@pytest.mark.parametrize("change", ["grow", "modify", "vanish", "replace"])
def test_source_changing_during_copy(
    bt: bytes, change: str, workers: Callable[..., Workers]
) -> None:
    """The copy is thrown away and the job retries later (SourceChanged is
    transient); nothing is left at the destination."""
    src = bt + b"/src/live.mov"
    write(src, os.urandom(6 * MiB))

    def writer() -> None:
        # Deterministic "other writer": acts at the first checkpoint.
        if change == "grow":
            with open(src, "ab") as f:
                f.write(b"more")
        elif change == "modify":
            with open(src, "r+b") as f:
                f.write(b"X")
            os.utime(src, ns=(1, 1))
        elif change == "vanish":
            os.unlink(src)
        else:
            os.rename(src, src + b".old")
            write(src, os.urandom(6 * MiB))

    w = workers()
    changed = Once("copy", writer)
    w.hooks.append(changed)
    (job,) = w.transfer("r", src)
    assert changed.fired
    assert job.state == "retry_wait", (job.state, job.error)
    assert re.search(r"grew|shrank|changed|modified|replaced", job.error or ""), job.error
    assert job.attempt == 1 and not is_paused(w.store, "r") and w.alerts.sent == []
    assert os.listdir(bt + b"/dst") == []


def test_folder_changed_after_manifest_fails_before_placement(
    bt: bytes, workers: Callable[..., Workers]
) -> None:
    write(bt + b"/src/d/a", b"a")
    write(bt + b"/src/d/b", b"b")
    w = workers(folders="as_unit")
    # Right after the first file is copied (where the mid-copy fault point is).
    added = Once("copy", lambda: write(bt + b"/src/d/late", b"late"))
    w.hooks.append(added)
    (job,) = w.transfer("r", bt + b"/src/d")
    assert added.fired
    assert job.state == "retry_wait", (job.state, job.error)
    assert "manifest" in (job.error or ""), job.error
    assert os.listdir(bt + b"/dst") == []


def test_mount_guard_destination_that_stops_being_a_mount(bt: bytes) -> None:
    mnt = bt + b"/mnt"
    write(bt + b"/src/m/a", b"first")
    write(bt + b"/src/m/b", b"second")
    write(bt + b"/src/p/c", os.urandom(6 * MiB))
    with tmpfs(mnt, "16m"):
        os.mkdir(mnt + b"/share")
        w = Workers(
            bt,
            {
                "mounted": {
                    "source": "src/m", "destination": "mnt/share",
                    "destination_mount": "mnt", "mode": "move",
                },
                "plain": {"source": "src/p", "destination": "mnt/share", "mode": "move"},
            },
        )  # fmt: skip
    try:
        with tmpfs(mnt, "16m"):
            os.mkdir(mnt + b"/share")
            (job,) = w.transfer("mounted", bt + b"/src/m/a")
            assert job.state == "completed", job.error
            assert os.listdir(mnt + b"/share") == [b"a"]
        # Unmounted: the share is now an empty local folder on the root disk.
        os.makedirs(mnt + b"/share", exist_ok=True)
        (job,) = w.transfer("mounted", bt + b"/src/m/b")
        assert job.state == "retry_wait", (job.state, job.error)
        assert "not mounted" in (job.error or ""), job.error
        assert is_paused(w.store, "mounted") and w.alerts.kinds() == ["route_paused"]
        assert os.listdir(mnt + b"/share") == []
        assert read(bt + b"/src/m/b") == b"second"  # source not deleted
        # Without a *_mount, the device recorded at the job's validation
        # still catches a share unmounted during the copy: not placed.
        with tmpfs(mnt, "16m"):
            os.mkdir(mnt + b"/share")

            def unmount() -> None:
                subprocess.run(["umount", "-l", mnt], check=True)
                os.makedirs(mnt + b"/share", exist_ok=True)

            unmounted = Once("copy", unmount)
            w.hooks.append(unmounted)
            (job,) = w.transfer("plain", bt + b"/src/p/c")
        assert unmounted.fired
        assert job.state == "retry_wait", (job.state, job.error)
        assert "another filesystem" in (job.error or ""), job.error
        # The route looks fine from outside (a folder, room to spare): the
        # workers take it for the job's own transient error, not an outage.
        assert not is_paused(w.store, "plain")
        assert os.listdir(mnt + b"/share") == []
    finally:
        w.close()
    assert ketter_names(bt) == [] and os.path.exists(bt + b"/src/p/c")
