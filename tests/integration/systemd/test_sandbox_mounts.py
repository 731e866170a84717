"""Under the units every route folder is a mount point of its own, and a
route on a share must still be "on the share" (issue #15, section 2).

``ProtectSystem=strict`` with ``ReadWritePaths=/mnt/dub/inbox`` bind-mounts
the folder onto itself, read-write, inside the service's mount namespace.
The first boot under a real systemd found every delivery of a route with
``destination_mount: /mnt/dub`` refused: "destination /mnt/dub/inbox is not
on the share mounted at /mnt/dub (it is on /mnt/dub/inbox)", the route
paused for good. Here a real process builds the same mount shape in a
private mount namespace (``unshare``, as systemd does) and asks the one
mount check: a bind of the share's own folder is on the share; another
filesystem mounted inside the share is not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env

pytestmark = pytest.mark.root

PROGRAM = r"""
import json, os, subprocess, sys
from ketter.mounts import mount_problem

share = sys.argv[1]
def mount(*args):
    subprocess.run(["mount", *args], check=True)
mount("-t", "tmpfs", "tmpfs", share)
for name in ("inbox", "outbox", "other"):
    os.mkdir(os.path.join(share, name))
# ReadWritePaths=SHARE/inbox SHARE/outbox under ProtectSystem=strict:
for name in ("inbox", "outbox"):
    path = os.path.join(share, name)
    mount("--bind", path, path)
    mount("-o", "remount,bind,rw", path)
# Another filesystem mounted inside the share is not the share.
mount("-t", "tmpfs", "tmpfs", os.path.join(share, "other"))
print(json.dumps({
    name: mount_problem("destination", os.path.join(share, name), share)
    for name in ("inbox", "outbox", "other")
}))
"""


def test_a_route_folder_bound_by_the_sandbox_is_on_its_share(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: install the Debian package util-linux"
    share = tmp_path / "share"
    share.mkdir()
    done = subprocess.run(
        [unshare, "--mount", "--propagation", "private", sys.executable, "-c", PROGRAM, str(share)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers["inbox"] is None, answers
    assert answers["outbox"] is None, answers
    assert "is not on the share mounted at" in (answers["other"] or ""), answers
