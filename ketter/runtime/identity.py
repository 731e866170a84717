"""A node's name is its own: one live process set per name on a shared job
store (issue #18 item 3).

Every heartbeat row carries the writer's origin (``details.origin``: host
name and boot id, :func:`origin`), stamped by the store
(:class:`ketter.store.composite.heartbeats.CompositeHeartbeats`). A service
process (``ketter workers``, ``watcher``, ``api``, ``run``) on PostgreSQL
refuses to start (:func:`ensure_name_free`, exit 2) when a row of its node
name is *live* (younger than ``lease.ttl`` on the database's clock, not a
clean stop) and was written

* from another host or another boot (another machine, or this one before a
  reboot that came back within ``lease.ttl``): another node uses the name;
* from this host and boot, by the same service, whose pid is still running
  (and is not this process's parent: the API's extra processes): the
  service already runs here.

The same node restarting after a kill -9 is accepted at once: same host and
boot, and the old pid is gone (a zombie counts as gone). A row from another
host is accepted once it is older than ``lease.ttl``.
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


_ORIGIN: dict[str, str] = {}


def origin() -> dict[str, str]:
    """Where this process runs: ``{"host": ..., "boot": ...}``."""
    if not _ORIGIN:
        _ORIGIN.update(host=socket.gethostname(), boot=boot_id())
    return dict(_ORIGIN)


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
) -> str | None:
    """Why the heartbeat ``rows`` of this node's name forbid ``role`` to
    start (None: it may). A pure decision but for the pid check. ``parent``:
    the pid that started this process (the API's extra processes are the
    running API's own, not a second one)."""
    own = ROLE_COMPONENTS.get(role, frozenset())
    for row in rows:
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
        host, boot = where.get("host"), where.get("boot")
        if (host, boot) != (mine["host"], mine["boot"]):
            other = f"host {host}" + ("" if host != mine["host"] else " before its last reboot")
            return (
                f"node name {row.node!r} is in use: its {row.component} heartbeat (pid "
                f"{row.pid} on {other}) is {age:.0f}s old, younger than lease.ttl "
                f"({ttl:g}s). Give this node its own name (node: in the config), or stop "
                f"the other one; a dead node's name is free {ttl:g}s after its last heartbeat"
            )
        if row.component in own and row.pid not in (pid, parent) and _pid_running(row.pid):
            return (
                f"node {row.node!r} already runs its {row.component} on this host "
                f"(pid {row.pid}, heartbeat {age:.0f}s old): stop it first"
            )
    return None


def ensure_name_free(store: JobStore, config: Config, role: str) -> None:
    """Refuse (:class:`NodeNameInUse`) to start ``role`` on a shared store
    when another live process set uses this node's name; nothing to check
    on SQLite (one node per store)."""
    if config.store.backend != "postgresql" or role not in ROLE_COMPONENTS:
        return
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
    )
    if problem is not None:
        raise NodeNameInUse(problem)


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
