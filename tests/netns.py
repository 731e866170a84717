"""A throw-away PostgreSQL cluster whose network can be cut, as a dead
host's is (issue #18): the server runs in a network namespace of its own
(``ip netns``), reached from the tests over one or more veth links, each
its own /30 subnet. :meth:`Link.cut` takes a link down on the server's
side: the tests' packets on it are dropped without an answer, no FIN, no
RST — a host that lost power or its cable, for every connection on that
link, while the others go on.

Root only (CI runs as root); ``ip`` is iproute2's (``.ci/run`` installs
it). Everything is removed at the end, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.pg import Cluster, running_cluster


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Link:
    """One way to the server: its address on this link, and the cut."""

    ns: str
    far: str
    server: str

    def dsn(self, cluster: Cluster, dbname: str = "postgres") -> str:
        return f"postgresql://{cluster.user}@{self.server}:{cluster.port}/{dbname}"

    def cut(self) -> None:
        ip("netns", "exec", self.ns, "ip", "link", "set", self.far, "down")


#: How many namespaces (and subnets, 10.213.<2k>.0/30 and up) there are to
#: claim: two test runs at once, or one killed before it cleaned up, take
#: other ones.
SLOTS = 120


def _claim() -> tuple[int, str]:
    """A namespace of our own: ``ip netns add`` fails for a name in use, so
    creating it is the claim."""
    start = os.getpid() % SLOTS
    for k in range(SLOTS):
        slot = (start + k) % SLOTS
        ns = f"ketter-pg-{slot}"
        try:
            ip("netns", "add", ns)
        except subprocess.CalledProcessError:
            continue
        return slot, ns
    raise RuntimeError(f"no free network namespace among ketter-pg-0…{SLOTS - 1}")


@contextlib.contextmanager
def server_behind_links(links: int = 1) -> Iterator[tuple[Cluster, list[Link]]]:
    """A cluster in its own namespace, listening on every link's address."""
    slot, ns = _claim()
    made: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="ketter-pg-net-"))
    try:
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        found: list[Link] = []
        for i in range(links):
            near, far = f"kpn{slot}x{i}", f"kpf{slot}x{i}"
            net = f"10.213.{slot * 2 + i}"
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", near)  # left by a run that was killed
            ip("link", "add", near, "type", "veth", "peer", "name", far)
            made.append(near)
            ip("link", "set", far, "netns", ns)
            ip("addr", "add", f"{net}.1/30", "dev", near)
            ip("link", "set", near, "up")
            ip("netns", "exec", ns, "ip", "addr", "add", f"{net}.2/30", "dev", far)
            ip("netns", "exec", ns, "ip", "link", "set", far, "up")
            found.append(Link(ns, far, f"{net}.2"))
        with running_cluster(
            home / "cluster", host=found[0].server, netns=ns, listen="*"
        ) as cluster:
            yield cluster, found
    finally:
        for near in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", near)
        ip("netns", "del", ns)
        shutil.rmtree(home, ignore_errors=True)
