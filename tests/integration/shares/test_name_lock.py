"""The per-name placement lock on smbnetfs under contention (#15 §1).

An unlink on smbnetfs fails with ``EBUSY`` when another client holds the
file open at that instant, as the ``stat`` of a process waiting for the
lock briefly does (about one unlink in a thousand with three processes
contending). The holder ignored the failure and left its lock behind: the
next placement of that name waited :data:`LOCK_STALE_SECONDS` (60 s) for
it to go stale, and the lock file stayed in the delivery folder. The
unlink is now tried again while the share says busy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ketter.engine.placement import LOCK_STALE_SECONDS
from tests.conftest import cli_env

from .harness import Shares

SECONDS = 15
CHILD = """
import json, os, sys, time
from ketter.engine.placement import _name_lock
folder = sys.argv[1]
dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
final = os.path.join(os.fsencode(folder), b"take.mov")
end = time.monotonic() + float(sys.argv[2])
count, longest = 0, 0.0
while time.monotonic() < end:
    started = time.monotonic()
    with _name_lock(dfd, b"take.mov", final):
        longest = max(longest, time.monotonic() - started)
        count += 1
print(json.dumps({"count": count, "longest": longest}))
"""


def test_contending_processes_never_leave_the_lock_behind(shares: Shares) -> None:
    share = shares.share("smb", "B")
    folder = share.root / "contended"
    folder.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(folder), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=SECONDS + 3 * LOCK_STALE_SECONDS) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    results = [json.loads(out) for out, _ in outs]
    assert all(r["count"] > 0 for r in results), results
    # A lock left behind makes the next taker wait for it to go stale.
    assert max(r["longest"] for r in results) < LOCK_STALE_SECONDS / 2, results
    assert "could not remove the name lock" not in "".join(err for _, err in outs)
    assert os.listdir(share.export / "contended") == []
