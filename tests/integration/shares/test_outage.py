"""A share outage pauses the route; it never uses the job's attempts (#15 §1, item 6).

The destination server is stopped while a copy is being written to it,
and started again after a while: the job's error (EIO, ENOTCONN, …) on a
network mount pauses the route, the job keeps its attempts, and once the
share is back the file is delivered once, with no temporary left.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from .harness import Shares, wait_for
from .node import Node, route_yaml

SIZE = 256 * 1024 * 1024


@pytest.mark.slow
def test_server_stopped_mid_copy_pauses_the_route(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    a, b = shares.share("ssh" if protocol == "smb" else "smb", "A"), shares.share(protocol, "B")
    node = Node(
        tmp_path / "node",
        [route_yaml("r", a, b)],
        retry="{max_attempts: 2, base_delay: 1s, max_delay: 5s}",
    )
    (b.root / "in-r").mkdir()
    (a.root / "out-r").mkdir()
    big = a.export / "out-r" / "reel.mov"
    with open(big, "wb") as fh:  # written on the server's disk: the NAS side
        for _ in range(SIZE // (1 << 20)):
            fh.write(os.urandom(1 << 20))
    node.start()
    try:
        wait_for(
            lambda: any(p.name.startswith(".ketter-") for p in (b.export / "in-r").iterdir()),
            120,
            "the copy to start writing its temporary",
            interval=0.02,
        )
        shares.server(protocol).stop()
        paused = wait_for(lambda: _paused(node), 120, "the route to pause")
        time.sleep(8)  # the outage lasts: several sweeps, no attempt used meanwhile
        jobs = node.jobs()
        assert [j["state"] for j in jobs] != ["failed"], jobs
        shares.server(protocol).start()
        node.wait_states({"completed": 1}, timeout=300)
        jobs = node.jobs()
        status = json.loads(node.cli("status", "--json").stdout)
    finally:
        node.stop()
    assert "r" in paused
    assert len(jobs) == 1 and jobs[0]["attempt"] <= 1, jobs
    assert (b.root / "in-r" / "reel.mov").stat().st_size == SIZE
    # The temporary of the interrupted attempt could not be removed while
    # the share was down; the orphan sweep (at the workers' start, then
    # every orphan interval) removes it once the job is finished.
    node.start()
    try:
        wait_for(
            lambda: (
                node.alive() and [p.name for p in (b.export / "in-r").iterdir()] == ["reel.mov"]
            ),
            60,
            "the orphan sweep to remove the leftover temporary",
        )
    finally:
        node.stop()
    assert not status.get("paused"), status


def _paused(node: Node) -> str | None:
    done = node.cli("status", "--json")
    data = json.loads(done.stdout)
    routes = data.get("paused") or []
    return json.dumps(routes) if routes else None


@pytest.mark.slow
def test_server_restarted_mid_unit_delivers_the_500_files_once(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    """An ``as_unit`` folder of 500 files; the destination server stopped
    while they are being written and started again 15 s later: the unit is
    delivered once, whole, the route paused then resumed, nothing left."""
    from .node import write_files

    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(
        tmp_path / "node",
        [route_yaml("r", a, b, folders="as_unit")],
        retry="{max_attempts: 2, base_delay: 1s, max_delay: 5s}",
    )
    files = write_files(a.export / "out-r" / "REEL_01", 500, size=16 * 1024)
    (b.export / "in-r").mkdir()

    def writing() -> bool:
        temps = [p for p in (b.export / "in-r").iterdir() if p.name.startswith(".ketter-")]
        return any(sum(1 for _ in t.rglob("*")) > 50 for t in temps if t.is_dir())

    node.start()
    try:
        wait_for(writing, 180, "the unit's temporary folder to fill", interval=0.05)
        shares.server(protocol).stop()
        wait_for(lambda: _paused(node), 120, "the route to pause")
        time.sleep(15)
        shares.server(protocol).start()
        node.wait_states({"completed": 1}, timeout=600)
        states = node.states()
    finally:
        node.stop()
    assert states == {"completed": 1}, states
    delivered = sorted(p.name for p in (b.export / "in-r" / "REEL_01").iterdir())
    assert delivered == sorted(["ascmhl", *(p.name for p in files)])
    node.start()  # the orphan sweep at the workers' start
    try:
        wait_for(
            lambda: node.alive() and [p.name for p in (b.export / "in-r").iterdir()] == ["REEL_01"],
            60,
            "no temporary left",
        )
    finally:
        node.stop()


@pytest.mark.slow
def test_source_server_stopped_mid_deletion_of_a_move(
    shares: Shares, protocol: str, tmp_path: Path
) -> None:
    """A move of an ``as_unit`` folder of 300 files; the source server is
    stopped while its files are being deleted, and started again 10 s later:
    the job never completes with sources left behind, and none is lost."""
    from .node import write_files

    a, b = shares.share(protocol, "A"), shares.share(protocol, "B")
    node = Node(
        tmp_path / "node",
        [route_yaml("r", a, b, mode="move", folders="as_unit")],
        retry="{max_attempts: 2, base_delay: 1s, max_delay: 5s}",
    )
    files = write_files(a.export / "out-r" / "REEL_01", 300, size=4096)
    (b.export / "in-r").mkdir()
    reel = a.export / "out-r" / "REEL_01"

    def deleting() -> bool:
        return reel.is_dir() and sum(1 for _ in reel.iterdir()) < 290

    node.start()
    try:
        wait_for(deleting, 180, "the move to delete its sources", interval=0.01)
        shares.server(protocol).stop()
        time.sleep(10)
        mid = node.states()
        shares.server(protocol).start()
        node.wait_states({"completed": 1}, timeout=600)
        states = node.states()
    finally:
        node.stop()
    assert "failed" not in mid, mid
    assert states == {"completed": 1}, states
    assert not reel.exists(), sorted(p.name for p in reel.iterdir())[:5]
    delivered = sorted(p.name for p in (b.export / "in-r" / "REEL_01").iterdir())
    assert delivered == sorted(["ascmhl", *(p.name for p in files)])
