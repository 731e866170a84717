"""A node's name is its own: one live process set per name on a shared job
store (issue #18 item 3).

Every heartbeat row carries the writer's origin (``details.origin``: host
name, machine id and boot id, :func:`origin`), stamped by the store
(:class:`ketter.store.composite.heartbeats.CompositeHeartbeats`). A service
process (``ketter workers``, ``watcher``, ``api``, ``run``) on PostgreSQL
refuses to start (:func:`ensure_name_free`, exit 75) when a process row
(:data:`PROCESSES`) of its node name is *live* (younger than ``lease.ttl``
on the database's clock, not a clean stop) and was written

* from another machine (another host name; under this host name, another
  machine id, or another boot id where either side has no machine id: a
  reboot and another machine named alike then look the same): another
  node uses the name;
* from this host and boot, by the same service, whose pid is still running
  (and is neither this process's parent nor its service's main process:
  the extra processes of ``api.processes`` and ``worker_processes``): the
  service already runs here.

A row of this machine (the same machine id) from an earlier boot is
accepted at once: the machine rebooted, and every process of that boot is
gone (a node rebooted within ``lease.ttl`` is not refused until its units
give up restarting). The same node
restarting after a kill -9 is accepted at once: same host and boot, and
the old pid is gone (a zombie counts as gone). A row from another machine
is accepted once it is older than ``lease.ttl``. The routes' rows
(``route:*``) and the shipper's (``audit``) are not judged: a live node's
watcher or workers row is, and a cleanly stopped watcher leaves its routes'
rows young.

The check and this process's first heartbeat (``starting``) are one write
transaction (PostgreSQL: under the store's write turn): of two processes
started with one name at once on two machines, the second sees the first's
row and refuses, even when the first's own first beat comes minutes later
(a watcher's first full scan of a large share).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from ketter.errors import NodeNameInUse

if TYPE_CHECKING:
    from ketter.config.schema import Config
    from ketter.store.port import JobStore

BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: Where systemd and D-Bus keep the machine's id, one per installation
#: (machine-id(5)); the first that holds one is used.
MACHINE_IDS = ("/etc/machine-id", "/var/lib/dbus/machine-id")

#: The heartbeat rows each service role writes for its own process.
ROLE_COMPONENTS: dict[str, frozenset[str]] = {
    "workers": frozenset({"workers"}),
    "watcher": frozenset({"watcher"}),
    "api": frozenset({"api"}),
    "run": frozenset({"workers", "watcher"}),
}


def boot_id() -> str:
    """This machine's boot id (a new one at every boot), "" where there is none."""
    try:
        with open(BOOT_ID, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This machine's id (machine-id(5)), "" where there is none."""
    for path in MACHINE_IDS:
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                found = fh.read().strip()
        except OSError:
            continue
        if found:
            return found
    return ""


_ORIGIN: dict[str, str] = {}


def origin() -> dict[str, str]:
    """Where this process runs: ``{"host": ..., "machine": ..., "boot": ...}``."""
    if not _ORIGIN:
        _ORIGIN.update(host=socket.gethostname(), machine=machine_id(), boot=boot_id())
    return dict(_ORIGIN)


def _elsewhere(where: dict[str, Any], mine: dict[str, str]) -> str | None:
    """Where a row's origin is, when it is not this machine's running boot
    (None: this boot, or this machine's earlier boot, whose processes are
    gone). Another host name is another machine, whatever its machine id
    says (clones of one image share one). Under this host name another boot
    is this machine rebooted only when both sides carry the same machine id;
    without one it may be another machine named alike."""
    host = where.get("host")
    if host != mine["host"]:
        return f"host {host}"
    if where.get("boot") == mine["boot"]:
        return None
    if where.get("machine") and mine.get("machine"):
        if where["machine"] == mine["machine"]:
            return None
        return f"host {host} (another machine: machine id {where['machine']})"
    return f"host {host} before its last reboot"


def _pid_running(pid: int) -> bool:
    """Whether ``pid`` runs on this machine (a zombie, already dead, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"] and state != ["X"]


def conflict(
    rows: list[Any],
    *,
    role: str,
    now: float,
    ttl: float,
    mine: dict[str, str],
    pid: int,
    parent: int = 0,
    service: int = 0,
) -> str | None:
    """Why the heartbeat ``rows`` of this node's name forbid ``role`` to
    start (None: it may). A pure decision but for the pid check. ``parent``:
    the pid that started this process (the API's extra processes are the
    running API's own, not a second one); ``service``: the main process of
    this process's service (a row another of its processes wrote is its own)."""
    own = ROLE_COMPONENTS.get(role, frozenset())
    for row in rows:
        if row.component not in PROCESSES:
            continue  # a route's row or the shipper's: the process rows say who runs
        try:
            details = json.loads(row.details)
        except (TypeError, ValueError):
            continue
        if not isinstance(details, dict) or details.get("stopped"):
            continue
        where = details.get("origin")
        age = now - row.ts
        if not isinstance(where, dict) or age >= ttl:
            continue
        other = _elsewhere(where, mine)
        if other is not None:
            return (
                f"node name {row.node!r} is in use: its {row.component} heartbeat (pid "
                f"{row.pid} on {other}) is {age:.0f}s old, younger than lease.ttl "
                f"({ttl:g}s). Give this node its own name (node: in the config), or stop "
                f"the other one; a dead node's name is free {ttl:g}s after its last heartbeat"
            )
        if where.get("boot") != mine["boot"]:
            continue  # this machine before its last reboot: that boot's processes are gone
        if details.get("service") in {pid, service} - {0} or row.pid in {pid, parent} - {0}:
            continue  # this process's own service
        if row.component in own and _pid_running(row.pid):
            return (
                f"node {row.node!r} already runs its {row.component} on this host "
                f"(pid {row.pid}, heartbeat {age:.0f}s old): stop it first"
            )
    return None


def ensure_name_free(store: JobStore, config: Config, role: str) -> None:
    """Refuse (:class:`NodeNameInUse`) to start ``role`` on a shared store
    when another live process set uses this node's name; nothing to check
    on SQLite (one node per store). The check and this process's first
    heartbeat rows (``starting``) are one write transaction, so that two
    processes started at once cannot both pass (see the module docstring)."""
    if config.store.backend != "postgresql" or role not in ROLE_COMPONENTS:
        return
    from ketter.runtime.children import service_pid

    service = service_pid()
    with store.transaction():
        rows = store.list_heartbeats(config.node)
        now = store.lease_clock(time.time())
        problem = conflict(
            rows,
            role=role,
            now=now,
            ttl=config.lease.ttl,
            mine=origin(),
            pid=os.getpid(),
            parent=os.getppid(),
            service=service,
        )
        if problem is not None:
            raise NodeNameInUse(problem)
        starting = json.dumps({"starting": True, "service": service})
        store.beat(
            config.node,
            {component: starting for component in sorted(ROLE_COMPONENTS[role])},
            pid=os.getpid(),
            now=time.time(),
        )


#: The heartbeat rows of a node's processes (``route:*`` rows are routes',
#: the ``audit`` row the shipper's mark).
PROCESSES = ("workers", "watcher", "api")


def nodes_view(beats: Any, *, now: float, live_for: float) -> dict[str, Any]:
    """Every node of the store with its processes' heartbeats, and the node
    whose watcher watches each route (``status``, ``health``).

    ``beats``: heartbeat facts (``component``, ``node``, ``pid``, ``ts``,
    ``details`` as a dict); ``now`` on the heartbeats' clock; a row is live
    when younger than ``live_for`` (``lease.ttl``) and not a clean stop."""
    nodes: dict[str, dict[str, Any]] = {}
    watchers: dict[str, tuple[float, str]] = {}
    for beat in beats:
        details = beat.details if isinstance(beat.details, dict) else {}
        age = round(now - beat.ts, 1)
        live = age < live_for and not details.get("stopped")
        if beat.component.startswith("route:"):
            route = beat.component.split(":", 1)[1]
            leads = live and details.get("leader", True) and not details.get("lost")
            if leads and (route not in watchers or age < watchers[route][0]):
                watchers[route] = (age, beat.node)
            continue
        if beat.component not in PROCESSES:
            continue
        entry = nodes.setdefault(beat.node, {"node": beat.node, "host": None, "processes": []})
        where = details.get("origin")
        if isinstance(where, dict) and where.get("host"):
            entry["host"] = where["host"]
        entry["processes"].append(
            {
                "component": beat.component,
                "pid": beat.pid,
                "age_s": age,
                "state": "stopped" if details.get("stopped") else ("live" if live else "stale"),
            }
        )
    return {
        "nodes": [nodes[name] for name in sorted(nodes)],
        "route_watchers": {route: node for route, (_, node) in sorted(watchers.items())},
    }
