"""Two deliveries racing for one name on smbnetfs (#15 §1, item 4).

smbnetfs has neither ``renameat2`` NOREPLACE nor hard links: placement is
check-then-rename, and two deliveries to one name both reported success
while one verified delivery was silently replaced. Ketter's own processes
now hold a lock file per name around the check and the rename. Both
``ketter transfer`` processes are stopped right before their rename
(``KETTER_FAULT_STOP=before-rename``), the widest the race can be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import KETTER, cli_env

from .harness import Shares, wait_for

ROUNDS = 5
SIZE = 1 << 20


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return "gone"
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3].decode()


def test_two_deliveries_to_one_name_never_both_succeed(shares: Shares, tmp_path: Path) -> None:
    share = shares.share("smb", "B")
    for n in range(ROUNDS):
        dest = share.root / f"round{n}"
        dest.mkdir()
        procs = []
        bodies = []
        for side in ("x", "y"):
            src = tmp_path / f"{side}{n}" / "take.mov"
            src.parent.mkdir()
            bodies.append(os.urandom(SIZE))
            src.write_bytes(bodies[-1])
            procs.append(
                subprocess.Popen(
                    [
                        *KETTER,
                        "transfer",
                        "--state-dir",
                        str(tmp_path / f"state-{side}{n}"),
                        str(src),
                        str(dest),
                        "--json",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=cli_env(KETTER_FAULT_STOP="before-rename"),
                )
            )
        try:
            wait_for(
                lambda procs=procs: any(_state(p.pid) == "T" for p in procs),
                120,
                "a transfer to stop before its rename",
            )
            # Give the other one time to reach its rename too (it does at
            # once without the lock; with it, it waits for the lock).
            time.sleep(3)
            for p in procs:
                if _state(p.pid) == "T":
                    os.kill(p.pid, signal.SIGCONT)
            wait_for(
                lambda procs=procs: (
                    any(_state(p.pid) == "T" for p in procs)
                    or all(p.poll() is not None for p in procs)
                ),
                120,
                "the next step",
            )
            for p in procs:
                if _state(p.pid) == "T":
                    os.kill(p.pid, signal.SIGCONT)
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                    p.wait()
        ok = [json.loads(out)["ok"] for out, _ in outs]
        assert sorted(ok) == [False, True], (n, outs)
        winner = bodies[ok.index(True)]
        assert (share.export / f"round{n}" / "take.mov").read_bytes() == winner, n
        # The name lock is gone too: its holder's unlink, refused as busy
        # now and then on smbnetfs (another process's stat holds the file
        # open for an instant), is tried again.
        names = [p.name for p in (share.export / f"round{n}").iterdir()]
        assert names == ["take.mov"], names
        loser = outs[ok.index(False)][0]
        assert "already exists" in loser, loser


def test_config_check_shows_the_placement_mode_of_each_route(
    shares: Shares, tmp_path: Path
) -> None:
    from .node import Node, route_yaml

    smb, ssh = shares.share("smb", "B"), shares.share("ssh", "B")
    (smb.root / "in-onto_smb").mkdir()
    (ssh.root / "in-onto_ssh").mkdir()
    (shares.share("ssh", "A").root / "out-onto_smb").mkdir()
    (shares.share("ssh", "A").root / "out-onto_ssh").mkdir()
    node = Node(
        tmp_path / "node",
        [
            route_yaml("onto_smb", shares.share("ssh", "A"), smb),
            route_yaml("onto_ssh", shares.share("ssh", "A"), ssh),
        ],
    )
    done = node.cli("config", "check")
    assert done.returncode == 0, done.stderr
    assert "warning: route onto_smb: placement rename, check-then-rename" in done.stderr
    assert "route onto_ssh: placement link, atomic" in done.stdout, done.stdout
