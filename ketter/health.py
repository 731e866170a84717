"""``ketter health``: is this node doing its job right now?

Healthy means all of:

* the job store and the queue database open (read-only);
* the workers and the watcher recorded a heartbeat within
  ``health.heartbeat_stale``, did not record a stop, and their process is
  alive (checked when the heartbeat comes from this node);
* every configured route is available: not paused (``route_status``: share
  down, destination full) and not lost by the watcher (its ``route:<name>``
  heartbeat);
* every destination has more free space than ``health.min_free`` (asked
  by a child process with a deadline: a hung share makes that check fail
  "timed out", never ``health`` itself hang);
* on SQLite, no more of the job store's write-ahead log in use than
  ``health.max_wal``: a read transaction left open keeps SQLite from
  starting the log again, and it grows until the state disk is full
  (:mod:`ketter.store.wal_watch`); the report names the processes that hold
  the store open.

Everything is read, nothing written: a monitoring account that may read the
state directory (group ``ketter``) and the config can run it while the
services run. SQLite needs the ``-wal``/``-shm`` files of a WAL database to
read it without write access to the folder; once the services have stopped
cleanly those files are gone, and the store is then opened ``immutable``
(nothing is writing it, which the missing ``-wal`` file shows).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ketter.config import Config
from ketter.runtime.identity import nodes_view
from ketter.store.port import JobReadStore, StoreUnreadable
from ketter.store.sqlite_read import connect_readonly

if TYPE_CHECKING:
    from ketter.store.backend import StoreBackend

__all__ = ["Check", "HealthReport", "check_health", "connect_readonly"]

#: The two service processes and the name of their heartbeat row.
SERVICES = ("workers", "watcher")


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


@dataclass
class HealthReport:
    """All checks; healthy when every one passed."""

    node: str
    checked_at: float
    checks: list[Check] = field(default_factory=list)
    #: Every node of the store with its processes' heartbeats, and which
    #: node watches each route (:func:`ketter.runtime.identity.nodes_view`).
    nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "node": self.node,
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked_at)),
            "problems": sum(1 for c in self.checks if not c.ok),
            "checks": [asdict(c) for c in self.checks],
            "nodes": self.nodes.get("nodes", []),
            "route_watchers": self.nodes.get("route_watchers", {}),
        }

    def text(self) -> str:
        lines = [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]
        problems = sum(1 for c in self.checks if not c.ok)
        for entry in self.nodes.get("nodes", []):
            processes = ", ".join(
                f"{p['component']} {p['age_s']}s ago ({p['state']})" for p in entry["processes"]
            )
            lines.append(f"node  {entry['node']} on {entry['host'] or '?'}: {processes}")
        for route, node in self.nodes.get("route_watchers", {}).items():
            lines.append(f"route {route}: watched by node {node}")
        lines.append("healthy" if not problems else f"UNHEALTHY: {problems} problem(s)")
        return "\n".join(lines)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (ketter's): alive
    return True


def _heartbeats(store: JobReadStore, node: str) -> dict[str, tuple[int, float, dict]]:
    facts = store.health_facts(node)
    return {name: (b.pid, b.ts, b.details) for name, b in facts.heartbeats.items()}


def _check_service(
    report: HealthReport,
    name: str,
    beat: tuple[int, float, dict] | None,
    *,
    stale: float,
    now: float,
) -> None:
    if beat is None:
        report.add(
            name,
            False,
            "no heartbeat recorded: the service has never run on this "
            f"node (systemctl status ketter-{name})",
        )
        return
    pid, ts, details = beat
    age = now - ts
    if details.get("stopped"):
        # Recorded by the process itself on a graceful stop: not hung, not
        # running (still a failed check: nothing watches or transfers).
        report.add(
            name,
            False,
            f"stopped cleanly {age:.0f}s ago (pid {pid}); start it with "
            f"systemctl start ketter-{name}",
        )
    elif age > stale:
        report.add(
            name,
            False,
            f"last heartbeat {age:.0f}s ago, more than heartbeat_stale "
            f"{stale:g}s (pid {pid}): stopped or hung",
        )
    elif not _process_alive(pid):
        # The state directory is local (SQLite on a share is not supported),
        # so the heartbeat's writer was a process of this machine.
        report.add(name, False, f"pid {pid} of the last heartbeat ({age:.0f}s ago) is not running")
    else:
        report.add(name, True, f"heartbeat {age:.1f}s ago (pid {pid})")


def _check_routes(
    report: HealthReport,
    store: JobReadStore,
    config: Config,
    beats: dict[str, tuple[int, float, dict]],
    *,
    store_problem: str | None = None,
) -> None:
    if store_problem is not None:
        _routes_paused(report, config, store_problem)
        return
    paused = {p.route: (p.reason, p.since) for p in store.paused_routes()}
    # An operator's hold (`ketter pause`) is on purpose: shown, never unhealthy.
    held = {
        h.route: f"; held by {h.by or 'an operator'} since {_utc(h.since)}: {h.reason}"
        for h in store.held_routes()
    }
    for route in config.routes:
        name = f"route {route.name}"
        if route.name in paused:
            reason, since = paused[route.name]
            when = (
                f" since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))}" if since else ""
            )
            report.add(name, False, f"paused{when}: {reason}{held.get(route.name, '')}")
            continue
        beat = beats.get(f"route:{route.name}")
        if beat is None:
            report.add(
                name,
                False,
                "the watcher has not reported this route (restart the "
                "watcher after adding a route)",
            )
        elif beat[2].get("lost"):
            report.add(name, False, f"source not watchable: {beat[2].get('reason') or 'lost'}")
        else:
            report.add(name, True, "available" + held.get(route.name, ""))


def _utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "?"


def _check_audit(
    report: HealthReport, beats: dict[str, tuple[int, float, dict]], *, stale: float, now: float
) -> None:
    """The audit shipper's heartbeat (``audit`` row, :mod:`ketter.audit.shipper`):
    unhealthy while shipping fails (an immutable or unwritable log), or when the
    workers run but their shipper (a child process) stopped beating."""
    beat = beats.get("audit")
    if beat is None:
        return  # nothing shipped on this node yet (the workers check covers a stopped node)
    pid, ts, details = beat
    error = details.get("error")
    if error:
        since = details.get("failing_since") or ts
        report.add(
            "audit log",
            False,
            f"shipping to {details.get('log')} has failed for {now - since:.0f}s: {error} "
            "(the events wait in the job store; fix the log file, e.g. chattr -i, permissions)",
        )
        return
    workers = beats.get("workers")
    # The workers service it ships for: its main process's pid, which every
    # process of the service names (`worker_processes` > 1: they share the
    # one `workers` row); older rows name the process (or the shipper itself).
    ships_for = details.get("service", details.get("workers_pid", pid))
    if (
        workers is not None
        and workers[2].get("service", workers[0]) == ships_for
        and not workers[2].get("stopped")
        and now - workers[1] <= stale
        and now - ts > stale
    ):
        report.add(
            "audit log",
            False,
            f"the workers (pid {ships_for}) run but their audit shipper last reported "
            f"{now - ts:.0f}s ago: shipping stopped",
        )
        return
    report.add("audit log", True, f"shipped to seq {details.get('shipped_seq')}")


def _routes_paused(report: HealthReport, config: Config, problem: str) -> None:
    # Every route is paused in the services' memory (the store cannot record
    # a pause): say so instead of the rows' stale view.
    for route in config.routes:
        report.add(f"route {route.name}", False, f"paused: {problem}")


def _check_store_guard(report: HealthReport, config: Config, sqlite: bool) -> str | None:
    """What the running services know about their job store and cannot write
    into it (:mod:`ketter.store.guard`): deleted or replaced under them, or
    not writable (disk full, read-only, immutable). Returns the problem."""
    from ketter.store.guard import read_status

    problem = None
    for status in read_status(config.db_path):
        who = f"{status.get('component') or 'service'} pid {status.get('pid')}"
        reason = status.get("lost") or status.get("unwritable")
        if reason is None and sqlite and status.get("ino") is not None:
            try:
                st = os.stat(config.db_path)
                moved = (st.st_dev, st.st_ino) != (status.get("dev"), status.get("ino"))
            except FileNotFoundError:
                moved = True
            if moved:
                reason = f"job store {config.db_path} is not the file the {who} has open"
        if reason is not None and problem is None:
            problem = str(reason)
            since = status.get("since")
            when = f" for {time.time() - since:.0f}s" if since else ""
            report.add("state store", False, f"{who}, paused{when}: {reason}")
    return problem


#: How long ``health`` waits for the destinations' filesystems to answer.
PROBE_SECONDS = 10.0


def _statfs(path: str) -> dict[str, Any]:
    try:
        v = os.statvfs(path)
        # statfs may be answered by the client alone (smbnetfs): opening the
        # folder goes to the server.
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as exc:
        return {"error": exc.strerror or str(exc)}
    return {"blocks": v.f_blocks, "frsize": v.f_frsize, "avail": v.f_bavail}


def probe_filesystems(paths: list[str], timeout: float) -> list[dict[str, Any] | None]:
    """``statvfs`` of each path, done by a child process with a deadline:
    one dict per path (``blocks``/``frsize``/``avail``, or ``error``), None
    for a path that did not answer in time.

    A hung FUSE or network mount blocks ``statfs`` in an uninterruptible
    kernel wait (110 s on a SIGSTOPped smbd, past any monitoring time-out,
    issue #15 §1): the waiting is left to a child, which is killed at the
    deadline and never waited for (it may not die before the share answers;
    it is reaped when it does, or becomes init's). The child writes one
    JSON line per path, so a path that hangs is the one after the last line.
    """
    read_fd, write_fd = os.pipe()
    # A fork, not a new interpreter: the monitoring account may not be
    # allowed to execute the service's Python (and starting one is slower).
    pid = os.fork()
    if pid == 0:  # the child: answer path by path, then leave at once
        try:
            # Hold nothing of the parent's open: a child stuck on a hung share
            # must not keep its caller's stdout pipe (or anything else) open.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
            for path in paths:
                os.write(write_fd, json.dumps(_statfs(path)).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(write_fd)
    results: list[dict[str, Any] | None] = []
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(read_fd, selectors.EVENT_READ)
            while len(results) < len(paths):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    results.append(json.loads(line))
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return results + [None] * (len(paths) - len(results))


def _check_space(report: HealthReport, config: Config, timeout: float = PROBE_SECONDS) -> None:
    """Every route folder answers (sources: a check only when one does not),
    and every destination has room; all asked by :func:`probe_filesystems`."""
    dests = list(dict.fromkeys(r.destination for r in config.routes))
    sources = [s for s in dict.fromkeys(r.source for r in config.routes) if s not in dests]
    answers = probe_filesystems(dests + sources, timeout) if dests or sources else []
    for source, answer in zip(sources, answers[len(dests) :], strict=True):
        if answer is None:
            report.add(
                f"source {source}",
                False,
                f"timed out: the filesystem did not answer within {timeout:g}s "
                "(hung share or server?)",
            )
        elif "error" in answer:
            report.add(f"source {source}", False, f"cannot stat: {answer['error']}")
    for dest, answer in zip(dests, answers[: len(dests)], strict=True):
        name = f"free space {dest}"
        if answer is None:
            report.add(
                name,
                False,
                f"timed out: the filesystem did not answer within {timeout:g}s "
                "(hung share or server?)",
            )
            continue
        if "error" in answer:
            report.add(name, False, f"cannot stat: {answer['error']}")
            continue
        if answer["blocks"] == 0:
            report.add(name, True, "unknown: the filesystem reports no size (min_free not applied)")
            continue
        total = answer["blocks"] * answer["frsize"]
        free = answer["avail"] * answer["frsize"]
        needed = config.health.min_free.required(total)
        ok = free > needed
        report.add(
            name,
            ok,
            f"{free / 1e9:.1f} GB free, {'above' if ok else 'NOT above'}"
            f" health.min_free {config.health.min_free} ({needed / 1e9:.1f} GB)",
        )


def check_health(config: Config, *, now: float | None = None) -> HealthReport:
    """Run every check against ``config``'s node; never writes anything."""
    from ketter.node import store_backend

    now = time.time() if now is None else now
    report = HealthReport(node=config.node, checked_at=now)
    backend = store_backend(config)
    where = backend.where
    try:
        queue, how = backend.probe_queue()
        report.add("queue database", True, f"{queue} opens ({how})")
    except (StoreUnreadable, OSError) as exc:
        report.add("queue database", False, f"{where}: {exc}")
    store_problem = _check_store_guard(report, config, sqlite=backend.name == "sqlite")
    try:
        store = backend.open_read(for_health=True)
    except (StoreUnreadable, OSError) as exc:
        hint = (
            "is this account in the ketter group?"
            if backend.name == "sqlite"
            else "is the server up, and store.dsn / store.password_file right?"
        )
        report.add("job store", False, f"{where}: {exc} ({hint})")
        if store_problem is not None:
            _routes_paused(report, config, store_problem)
        return report
    readable = True
    try:
        beats = _heartbeats(store, config.node)
        report.add("job store", True, f"{where} opens ({store.how})")
        # Heartbeats are stamped on the store's clock (the database's on
        # PostgreSQL): their ages are taken on it.
        now = store.clock(now)
        if backend.name == "postgresql":  # several nodes; on SQLite the one, as before
            report.nodes = nodes_view(store.heartbeats(), now=now, live_for=config.lease.ttl)
        # The API is a service of this node when its unit is rendered
        # (api.listen set): then its heartbeat is checked like the others'.
        for service in SERVICES + (("api",) if config.api.listen else ()):
            _check_service(
                report, service, beats.get(service), stale=config.health.heartbeat_stale, now=now
            )
        _check_routes(report, store, config, beats, store_problem=store_problem)
        _check_audit(report, beats, stale=config.health.heartbeat_stale, now=now)
    except StoreUnreadable as exc:
        report.add("job store", False, f"{where}: {exc}")
        readable = False
    finally:
        store.close()
    if backend.name == "sqlite":
        _check_wal(report, config)
    if readable:  # a server lost meanwhile: its failure is said once
        _check_upkeep(report, backend)
    _check_space(report, config)
    return report


def _check_upkeep(report: HealthReport, backend: StoreBackend) -> None:
    """The store's upkeep by its server (PostgreSQL's vacuuming, see
    :mod:`ketter.store.postgres.upkeep`); nothing on SQLite."""
    try:
        upkeep = backend.upkeep()
    except StoreUnreadable as exc:
        report.add("store upkeep", False, str(exc))
        return
    if upkeep is not None:
        report.add("store upkeep", *upkeep)


def _check_wal(report: HealthReport, config: Config) -> None:
    """The job store's write-ahead log in use against ``health.max_wal``."""
    from ketter.store.wal_watch import holders, wal_state

    wal = wal_state(config.db_path)
    if wal.in_use_bytes is None:
        report.add(
            "store log",
            True,
            f"{wal.file_bytes / 2**20:.1f} MiB file; the part in use is not readable "
            f"by this account ({config.db_path}-shm), not checked",
        )
        return
    size = f"{wal.in_use_bytes / 2**20:.1f} MiB in use ({wal.file_bytes / 2**20:.1f} MiB file)"
    if wal.in_use_bytes <= config.health.max_wal:
        report.add("store log", True, size)
        return
    held = "; ".join(f"pid {pid}: {cmd[:120]}" for pid, cmd in holders(config.db_path))
    report.add(
        "store log",
        False,
        f"{size}, more than health.max_wal {config.health.max_wal / 2**20:.0f} MiB: "
        "a read transaction left open keeps SQLite from starting its log again, "
        "and it grows until the state disk is full. End it (a sqlite3 shell inside "
        f"BEGIN, a stuck report). Processes with {config.db_path} open: {held or 'none seen'}",
    )
