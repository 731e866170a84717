"""Several nodes on one PostgreSQL job store (issue #18 items 3, 4, 8):
node names unique among live nodes, one watcher per route with failover,
and a database outage mid-flow. Real ``ketter`` processes on a throw-away
cluster (tests/pg.py), real shares under ``tmp_path``; conditions are polled
with generous deadlines, never slept on."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ketter.config import load_config
from ketter.errors import NodeNameInUse
from ketter.node import Node
from ketter.runtime import identity
from ketter.runtime.identity import origin
from tests.integration.pgnode import NodeProcesses

TTL, STABLE, POLL = 4.0, 0.3, 0.2

CONFIG = """\
state_dir: {state}
node: {node}
workers: 2
shutdown_timeout: 10s
lease: {{ttl: {ttl}s, heartbeat: 0.5s, sweep_interval: 0.3s, stall_timeout: 120s}}
retry: {{max_attempts: 20, base_delay: 0.2s, max_delay: 1s}}
health: {{min_free: 0}}
store: {{backend: postgresql, dsn: '{dsn}'}}
routes:
  - {{name: copies, source: {root}/in-copy, destination: {root}/out-copy, mode: copy,
     stable_seconds: {stable}, poll_interval: {poll}s}}
  - {{name: moves, source: {root}/in-move, destination: {root}/out-move, mode: move,
     stable_seconds: {stable}, poll_interval: {poll}s}}
"""

DEADLINE = 180.0
ROUTES = ("copies", "moves")


class Shares:
    """The shares every node mounts, and the database they share."""

    def __init__(self, root: Path, dsn: str) -> None:
        self.root, self.dsn = root, dsn
        for name in ("in-copy", "out-copy", "in-move", "out-move"):
            (root / name).mkdir()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def states(self) -> dict[str, str]:
        rows = self.query("SELECT source_display, state FROM jobs ORDER BY id")
        return {os.path.basename(name): state for name, state in rows}

    def all_completed(self, names: set[str]) -> bool:
        states = self.states()
        return set(states) >= names and all(states[n] == "completed" for n in names)


class NodeProcs(NodeProcesses):
    """One node (its own name and state_dir) on the shared shares."""

    def __init__(self, shares: Shares, node: str, *, config_text: str = CONFIG) -> None:
        super().__init__()
        self.shares, self.node = shares, node
        root = shares.root
        self.state = root / f"state-{node}"
        self.config = root / f"{node}.yaml"
        self.config.write_text(
            config_text.format(
                state=self.state,
                node=node,
                dsn=shares.dsn,
                root=root,
                ttl=TTL,
                stable=STABLE,
                poll=POLL,
            )
        )

    def log_path(self, command: str) -> Path:
        return self.shares.root / f"{self.node}-{command}.log"

    def status(self) -> dict[str, Any]:
        done = self.ketter("status", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        view = json.loads(done.stdout)
        assert isinstance(view, dict)
        return view

    def beat_pid(self, component: str) -> int | None:
        rows = self.shares.query(
            "SELECT pid FROM heartbeats WHERE node = %s AND component = %s",
            (self.node, component),
        )
        return rows[0][0] if rows else None


def logs(root: Path) -> str:
    return "".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in root.glob("*.log"))


def wait_for(
    predicate: Callable[[], object],
    what: str,
    *,
    root: Path,
    alive: list[subprocess.Popen[bytes]] = (),  # type: ignore[assignment]
    deadline: float = DEADLINE,
) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        for proc in alive:
            assert proc.poll() is None, f"{proc.args} exited waiting for {what}:\n{logs(root)}"
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}\n{logs(root)[-8000:]}")
        time.sleep(0.1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- node identity -------------------------------------------------------------


def test_postgresql_needs_an_explicit_node_name(tmp_path: Path, pg_dsn: str) -> None:
    shares = Shares(tmp_path, pg_dsn)
    text = CONFIG.replace("node: {node}\n", "")
    node = NodeProcs(shares, "unnamed", config_text=text)
    for command in (("workers",), ("status",)):
        done = node.ketter(*command)
        assert done.returncode == 2, done.stdout + done.stderr
        line = next(
            i for i, row in enumerate(node.config.read_text().splitlines(), 1) if "store:" in row
        )
        assert f"{node.config}:{line}: store.backend: backend: postgresql needs node:" in (
            done.stderr
        ), done.stderr


def test_a_node_name_is_refused_while_another_live_node_uses_it(
    tmp_path: Path, pg_dsn: str
) -> None:
    shares = Shares(tmp_path, pg_dsn)
    a = NodeProcs(shares, "node-a")
    try:
        workers = a.start("workers")
        wait_for(lambda: a.beat_pid("workers") == workers.pid, "A's workers", root=tmp_path)
        # 1. A second `ketter workers` of node A on this host while the
        # first runs: refused, exit 75 (EX_TEMPFAIL), saying which pid runs it.
        again = a.ketter("workers")
        assert again.returncode == 75, again.stdout + again.stderr
        assert f"already runs its workers on this host (pid {workers.pid}" in again.stderr
        # ... while A's watcher (another process of the same node) starts.
        watcher = a.start("watcher")
        wait_for(
            lambda: a.beat_pid("watcher") == watcher.pid,
            "A's watcher",
            root=tmp_path,
            alive=[workers, watcher],
        )
        # 2. Killed with SIGKILL (no clean stop recorded, its heartbeat still
        # fresh): the same node restarting is accepted at once.
        a.kill("workers")
        (age,) = shares.query(
            "SELECT EXTRACT(EPOCH FROM now())::float8 - ts FROM heartbeats "
            "WHERE node = 'node-a' AND component = 'workers'"
        )[0]
        restarted = a.start("workers")
        wait_for(
            lambda: a.beat_pid("workers") == restarted.pid,
            "A's workers after the kill -9",
            root=tmp_path,
            alive=[restarted, watcher],
        )
        assert age < TTL  # it was live when the restart was accepted
        # 3. Another machine's node B (its heartbeat written from host
        # other-host, now on the database's clock): B's name is refused here...
        b = NodeProcs(shares, "node-b")
        other = json.dumps({"workers": 2, "origin": {"host": "other-host", "boot": "b00t"}})
        shares.query(
            "INSERT INTO heartbeats (component, node, pid, ts, details) VALUES "
            "('workers', 'node-b', 4242, EXTRACT(EPOCH FROM now()), %s) RETURNING id",
            (other,),
        )
        for command in ("watcher", "workers"):
            refused = b.ketter(command)
            # EX_TEMPFAIL: the units restart it (exit 2 would stop them).
            assert refused.returncode == 75, refused.stdout + refused.stderr
            assert "node name 'node-b' is in use" in refused.stderr, refused.stderr
            assert "pid 4242 on host other-host" in refused.stderr, refused.stderr
        # ... until that heartbeat is older than lease.ttl on the database's clock.
        wait_for(
            lambda: (
                shares.query(
                    "SELECT EXTRACT(EPOCH FROM now())::float8 - ts FROM heartbeats "
                    "WHERE node = 'node-b' AND component = 'workers'"
                )[0][0]
                > TTL
            ),
            "B's heartbeat to go stale",
            root=tmp_path,
        )
        b_watcher = b.start("watcher")
        wait_for(
            lambda: b.beat_pid("watcher") == b_watcher.pid,
            "B's watcher once the name is free",
            root=tmp_path,
            alive=[b_watcher],
        )
        # status shows every node with its processes and their hosts.
        view = a.status()
        nodes = {n["node"]: n for n in view["nodes"]}
        assert set(nodes) == {"node-a", "node-b"}, view["nodes"]
        assert {p["component"] for p in nodes["node-a"]["processes"]} == {"workers", "watcher"}
        assert nodes["node-a"]["host"] == os.uname().nodename
        b.stop()
    finally:
        a.stop()


def test_a_starting_process_holds_its_name_before_its_first_beat(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name check and the process's first heartbeat rows are one write
    transaction: a second machine starting the same name before the first
    process's first real beat (a watcher's first scan of a large share can
    take minutes) is refused; this machine after a reboot is not."""
    shares = Shares(tmp_path, pg_dsn)
    config = load_config(NodeProcs(shares, "node-c").config)
    here = origin()
    node = Node.from_config(config, "watcher")
    try:
        assert node.store is not None
        ((text,),) = shares.query(
            "SELECT details FROM heartbeats WHERE node = 'node-c' AND component = 'watcher'"
        )
        details = json.loads(text)
        assert details["starting"] is True and details["origin"] == here, details
        # Another machine (its own host name and machine id), at once: refused.
        monkeypatch.setitem(identity._ORIGIN, "host", "other-host.example")
        monkeypatch.setitem(identity._ORIGIN, "machine", "another-machine")
        with pytest.raises(NodeNameInUse, match="node name 'node-c' is in use") as refused:
            Node.from_config(config, "workers")
        assert f"watcher heartbeat (pid {os.getpid()} on host {here['host']})" in str(refused.value)
        # This machine after a reboot within lease.ttl: accepted at once.
        monkeypatch.setitem(identity._ORIGIN, "host", here["host"])
        monkeypatch.setitem(identity._ORIGIN, "machine", here["machine"])
        monkeypatch.setitem(identity._ORIGIN, "boot", "the-next-boot")
        rebooted = Node.from_config(config, "workers")
        assert rebooted.store is not None
        rebooted.store.close()
    finally:
        node.store.close()


# -- one watcher per route, failover -------------------------------------------------


def test_the_watcher_fails_over_to_another_node_within_the_lease(
    tmp_path: Path, pg_dsn: str
) -> None:
    shares = Shares(tmp_path, pg_dsn)
    a, b = NodeProcs(shares, "node-a"), NodeProcs(shares, "node-b")
    try:
        workers = a.start("workers")
        watchers = {"node-a": a.start("watcher"), "node-b": b.start("watcher")}
        procs = [workers, *watchers.values()]

        def beats_live() -> list[str]:
            return [
                n
                for (n,) in shares.query(
                    "SELECT node FROM heartbeats WHERE component = 'watcher' "
                    "AND EXTRACT(EPOCH FROM now()) - ts < %s",
                    (TTL,),
                )
            ]

        def leaders() -> dict[str, str]:
            return dict(a.status()["route_watchers"])

        wait_for(
            lambda: set(leaders()) == set(ROUTES) and len(set(beats_live())) == 2,
            "a watcher on every route",
            root=tmp_path,
            alive=procs,
        )

        before = leaders()
        # The first watcher to ask took a route; the other one follows it.
        holders = set(before.values())
        # Files before the kill: delivered once, by the leader's detection.
        first = {"before-c.bin": os.urandom(50_001)}
        (tmp_path / "in-copy" / "before-c.bin").write_bytes(first["before-c.bin"])
        wait_for(
            lambda: shares.all_completed(set(first)),
            "the first file",
            root=tmp_path,
            alive=procs,
        )
        # The followers' route rows say they do not lead.
        for route in ROUTES:
            rows = shares.query(
                "SELECT node, details FROM heartbeats WHERE component = %s", (f"route:{route}",)
            )
            leading = [node for node, text in rows if json.loads(text).get("leader")]
            assert leading == [before[route]], rows
        # Kill -9 the leader's watcher (the routes' holder), then drop files.
        leader = sorted(holders)[0]
        a_or_b = {"node-a": a, "node-b": b}
        a_or_b[leader].kill("watcher")
        killed = time.monotonic()
        survivor = "node-b" if leader == "node-a" else "node-a"
        later = {f"after-{i}.bin": os.urandom(80_000 + i) for i in range(3)}
        for name, data in later.items():
            folder = "in-copy" if name != "after-2.bin" else "in-move"
            (tmp_path / folder / name).write_bytes(data)
        delivered: dict[str, float] = {}

        def all_delivered() -> bool:
            states = shares.states()
            for name in later:
                if states.get(name) == "completed" and name not in delivered:
                    delivered[name] = time.monotonic() - killed
            return len(delivered) == len(later)

        wait_for(
            all_delivered,
            "the files dropped after the kill",
            root=tmp_path,
            alive=[workers, watchers[survivor]],
        )
        failover = max(delivered.values())
        bound = TTL + STABLE + 2 * POLL
        allowance = 10.0  # the copy, verify and placement of an 80 kB file on 2 loaded cores
        print(
            f"\nwatcher failover: routes {before} before; {leader}'s watcher killed; "
            f"last file delivered {failover:.2f}s after the kill -9 "
            f"(per file {sorted(round(v, 2) for v in delivered.values())}); bound "
            f"lease.ttl + stable_seconds + 2 x poll_interval = {bound:.1f}s + {allowance:.0f}s "
            "for the delivery"
        )
        assert failover <= bound + allowance, (failover, delivered)
        assert leaders() == {route: survivor for route in ROUTES}
        # Every file once, byte-identical; the move's source released.
        for name, data in {**first, **later}.items():
            folder = "out-move" if name == "after-2.bin" else "out-copy"
            assert (tmp_path / folder / name).read_bytes() == data, name
        assert not (tmp_path / "in-move" / "after-2.bin").exists()
        per_source = shares.query("SELECT source_display, count(*) FROM jobs GROUP BY 1")
        assert all(count == 1 for _, count in per_source), per_source
    finally:
        a.stop()
        b.stop()


#: One route, its source under a per-node "mount" (``view``): two nodes that
#: see the same route through different mounts, so one can lose its own.
ONE_ROUTE = """\
state_dir: {state}
node: {node}
lease: {{ttl: {ttl}s, heartbeat: 0.5s, sweep_interval: 0.3s}}
store: {{backend: postgresql, dsn: '{dsn}'}}
routes:
  - {{name: copies, source: {root}/view-{node}/in-copy, destination: {root}/out-copy,
     mode: copy, stable_seconds: {stable}, poll_interval: {poll}s}}
"""


def test_a_watcher_that_loses_its_share_gives_the_route_to_another_node(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The route's lock holder whose source root disappears (its mount gone)
    gives the lock back: the other node, which still sees the share, takes
    the route and detects what arrives there. Before, the holder kept the
    lock and nothing was watched for as long as its mount was away."""
    shares = Shares(tmp_path, pg_dsn)
    for node in ("node-a", "node-b"):
        (tmp_path / f"view-{node}" / "in-copy").mkdir(parents=True)
    a = NodeProcs(shares, "node-a", config_text=ONE_ROUTE)
    b = NodeProcs(shares, "node-b", config_text=ONE_ROUTE)
    try:
        procs = [a.start("watcher")]
        wait_for(
            lambda: a.status()["route_watchers"] == {"copies": "node-a"},
            "node-a to watch the route",
            root=tmp_path,
            alive=procs,
        )
        procs.append(b.start("watcher"))
        wait_for(
            lambda: b.beat_pid("watcher") == procs[1].pid,
            "node-b's watcher to run",
            root=tmp_path,
            alive=procs,
        )
        assert a.status()["route_watchers"] == {"copies": "node-a"}  # b follows
        # A follower that could watch the route is healthy for it (its row
        # said "lost" from its start, and `health` failed the route).
        wait_for(
            lambda: "route copies: available" in b.ketter("health").stdout,
            "node-b's health to find the route available",
            root=tmp_path,
            alive=procs,
        )
        # node-a's mount goes away: its route root is missing.
        (tmp_path / "view-node-a").rename(tmp_path / "unmounted-a")
        wait_for(
            lambda: a.status()["route_watchers"] == {"copies": "node-b"},
            "node-b to take the route over",
            root=tmp_path,
            alive=procs,
            deadline=TTL * 4 + 30,
        )
        (tmp_path / "view-node-b" / "in-copy" / "late.bin").write_bytes(os.urandom(10_000))
        wait_for(
            lambda: "late.bin" in shares.states(),
            "node-b to enqueue the file",
            root=tmp_path,
            alive=procs,
        )
        log = (tmp_path / "node-a-watcher.log").read_text(errors="replace")
        assert "route lock given back" in log, log
    finally:
        a.stop()
        b.stop()


ONE_MOVE = """\
state_dir: {state}
node: {node}
workers: 1
lease: {{ttl: {ttl}s, heartbeat: 0.5s, sweep_interval: 0.3s}}
store: {{backend: postgresql, dsn: '{dsn}'}}
routes:
  - {{name: moves, source: {root}/view-{node}/in-move, destination: {root}/out-move,
     mode: move, stable_seconds: {stable}, poll_interval: {poll}s}}
"""


def test_a_watcher_without_the_share_does_not_lead_a_move_route(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A node whose move route's source is not the share the nodes recorded
    (an empty local folder where the share should be mounted, no
    source_mount set) does not take the route when the node that sees the
    share stops watching: it would watch an empty folder and the route would
    go silent. It leads once the share is there."""
    shares = Shares(tmp_path, pg_dsn)
    for node in ("node-a", "node-b"):
        (tmp_path / f"view-{node}" / "in-move").mkdir(parents=True)
    (tmp_path / "out-move").mkdir(exist_ok=True)
    a = NodeProcs(shares, "node-a", config_text=ONE_MOVE)
    b = NodeProcs(shares, "node-b", config_text=ONE_MOVE)
    try:
        procs = [a.start("watcher"), a.start("workers")]
        (tmp_path / "view-node-a" / "in-move" / "first.bin").write_bytes(os.urandom(5_000))
        wait_for(
            lambda: shares.all_completed({"first.bin"}),
            "node-a to move the first file (its workers record the share's marker)",
            root=tmp_path,
            alive=procs,
        )
        procs.append(b.start("watcher"))
        wait_for(
            lambda: b.beat_pid("watcher") == procs[2].pid,
            "node-b's watcher to run",
            root=tmp_path,
            alive=procs[1:],
        )
        procs[0].send_signal(signal.SIGTERM)  # a clean stop: the route's lock is free
        assert procs[0].wait(60) == 0
        log = tmp_path / "node-b-watcher.log"
        wait_for(
            lambda: "is not the share the other nodes use" in log.read_text(errors="replace"),
            "node-b to find it is not on the share",
            root=tmp_path,
            alive=procs[1:],
        )
        assert a.status()["route_watchers"] == {}, "node-b took a route it cannot watch"
        # The share mounted at node-b's root (its marker there): node-b leads
        # and moves what arrives.
        marker = next((tmp_path / "view-node-a" / "in-move").glob(".ketter-share-*"))
        (tmp_path / "view-node-b" / "in-move" / marker.name).write_bytes(marker.read_bytes())
        wait_for(
            lambda: a.status()["route_watchers"] == {"moves": "node-b"},
            "node-b to lead once the share is there",
            root=tmp_path,
            alive=procs[1:],
        )
        # (node-a's workers see the share at another path in this test: not
        # theirs to run; node-b's watcher detecting it is what is shown.)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(60) == 0
        (tmp_path / "view-node-b" / "in-move" / "second.bin").write_bytes(os.urandom(5_000))
        wait_for(
            lambda: shares.states().get("second.bin") == "detected",
            "node-b to detect the second file",
            root=tmp_path,
            alive=procs[2:],
        )
    finally:
        a.stop()
        b.stop()


# -- a database outage mid-flow ------------------------------------------------


def _pg_ctl(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``pg_ctl`` on ``cluster`` as the server's account (tests/pg.py)."""
    import pwd

    from tests.pg import ACCOUNT, _as_account, server_bin

    if os.geteuid() == 0:
        account = pwd.getpwnam(ACCOUNT)
        prefix = _as_account(account.pw_uid, account.pw_gid)
    else:
        prefix = []
    return subprocess.run(
        [*prefix, str(server_bin() / "pg_ctl"), "-D", str(cluster.datadir), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        cwd=cluster.datadir.parent,
        timeout=DEADLINE,
        check=False,
    )


def _start_server(cluster: Any) -> None:
    options = (  # the options tests/pg.py started it with
        f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
        f"-c unix_socket_directories={cluster.socket_dir} -c fsync=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    log = cluster.datadir.parent / "server.log"
    started = _pg_ctl(cluster, "-o", options, "-l", str(log), "-w", "-t", "120", "start")
    assert started.returncode == 0, started.stdout + started.stderr


OUTAGE = 30.0


@pytest.mark.slow
def test_a_database_outage_mid_flow_pauses_and_loses_nothing(tmp_path: Path) -> None:
    import shutil
    import tempfile

    from tests.pg import running_cluster

    home = Path(tempfile.mkdtemp(prefix="ketter-pg-outage-"))
    try:
        with running_cluster(home / "cluster") as cluster:
            try:
                _outage_flow(tmp_path, cluster)
            finally:
                if (cluster.datadir / "postmaster.pid").exists():  # the restarted server
                    _pg_ctl(cluster, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _outage_flow(tmp_path: Path, cluster: Any) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ketter")
    shares = Shares(tmp_path, cluster.dsn("ketter"))
    text = CONFIG.replace("workers: 2\n", "workers: 2\nresume_min_bytes: 4MiB\n")
    node = NodeProcs(shares, "node-a", config_text=text)
    upgraded = node.ketter("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    copies = {f"c{i}.bin": os.urandom(12 * 2**20 + i) for i in range(4)}
    moves = {f"m{i}.bin": os.urandom(12 * 2**20 + 7 * i) for i in range(4)}
    names = set(copies) | set(moves)
    try:
        watcher = node.start("watcher")
        # Each 1 MiB checkpoint of a copy waits 0.3 s: copies are under way
        # when the server stops, and still some after it is back.
        workers = node.start("workers", KETTER_FAULT_DELAY="copy-progress=0.3")
        procs = [watcher, workers]
        for name, data in copies.items():
            (tmp_path / "in-copy" / name).write_bytes(data)
        for name, data in moves.items():
            (tmp_path / "in-move" / name).write_bytes(data)
        wait_for(
            lambda: "transferring" in shares.states().values(),
            "a copy under way",
            root=tmp_path,
            alive=procs,
        )
        # Stop the server mid-flow (fast: every session ended).
        stopped = _pg_ctl(cluster, "-m", "fast", "-w", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        down = time.monotonic()
        # The routes pause, and health says so (the services' status files).
        wait_for(
            lambda: "paused" in node.ketter("health").stdout,
            "health to show the outage",
            root=tmp_path,
            alive=procs,
            deadline=OUTAGE - 5,
        )
        health = node.ketter("health")
        assert health.returncode != 0, health.stdout
        paused = [ln for ln in health.stdout.splitlines() if "paused" in ln]
        print(f"\nhealth during the outage:\n{health.stdout}")
        assert any("route copies" in ln for ln in paused), health.stdout
        assert any("route moves" in ln for ln in paused), health.stdout
        # Both services stay up through the whole outage.
        wait_for(
            lambda: time.monotonic() - down >= OUTAGE,
            f"{OUTAGE:g}s of outage",
            root=tmp_path,
            alive=procs,
            deadline=OUTAGE + 10,
        )
        _start_server(cluster)
        back = time.monotonic()
        wait_for(
            lambda: shares.all_completed(names),
            "every job to complete after the outage",
            root=tmp_path,
            alive=procs,
        )
        finished = time.monotonic() - back
        print(f"every job completed {finished:.1f}s after the server came back")
        # The watcher lost its route locks with the server and took them back
        # (status shows it from the route heartbeats, written every
        # lease.heartbeat: possibly after the last job completed).
        wait_for(
            lambda: node.status()["route_watchers"] == {route: "node-a" for route in ROUTES},
            "status to show node-a watching every route again",
            root=tmp_path,
            alive=procs,
        )
        watcher_log = (tmp_path / "node-a-watcher.log").read_text(errors="replace")
        assert "route locks lost with their connection" in watcher_log
        # The same processes all along.
        assert watcher.poll() is None and workers.poll() is None
        assert node.beat_pid("watcher") == watcher.pid
        assert node.beat_pid("workers") == workers.pid
        # Every file delivered once, byte-identical; move sources released.
        for name, data in copies.items():
            assert (tmp_path / "out-copy" / name).read_bytes() == data, name
            assert (tmp_path / "in-copy" / name).read_bytes() == data, name
        for name, data in moves.items():
            assert _sha(tmp_path / "out-move" / name) == hashlib.sha256(data).hexdigest(), name
            assert not (tmp_path / "in-move" / name).exists(), name
        for folder, files in (("out-copy", copies), ("out-move", moves)):
            # The route root's share marker (ketter.jobs.shares) is there on purpose.
            found = (tmp_path / folder).iterdir()
            assert sorted(p.name for p in found if not p.name.startswith(".ketter-share-")) == (
                sorted(files)
            )
        per_source = shares.query("SELECT source_display, count(*) FROM jobs GROUP BY 1")
        assert all(count == 1 for _, count in per_source), per_source
        # Nothing failed on the way.
        failed = shares.query("SELECT job_id, event FROM events WHERE to_state = 'failed'")
        assert failed == [], failed
        # A move's source is deleted only after its copy is verified and placed.
        for job_id, route in shares.query("SELECT id, route FROM jobs"):
            events = [
                e
                for (e,) in shares.query(
                    "SELECT event FROM events WHERE job_id = %s ORDER BY id", (job_id,)
                )
            ]
            if route == "moves":
                assert "delete_source" in events, events
                last_place = max(i for i, e in enumerate(events) if e in ("place", "placed"))
                assert events.index("delete_source") > last_place, events
            else:
                assert "delete_source" not in events, events
    finally:
        node.stop()
    verify = node.ketter("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
