"""The watcher service: every route's watch, driven by one loop.

Threads: the loop runs in the caller's thread (``ketter watcher``'s main
thread, or a thread of ``ketter run``); watchdog's inotify threads only add
hints to thread-safe sets. Only the loop touches the job store and the
queue, so there is no locking beyond SQLite's.

On PostgreSQL a route is watched only by the watcher that holds its lock
(:mod:`ketter.store.postgres.route_locks`): the loop asks for the locks it
does not hold every ``lock_interval`` (the shortest ``poll_interval``, at
most half of ``lease.ttl``), so another node's watcher takes a route over
within that of its holder's death, with a full scan.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from watchdog.observers.api import BaseObserver

from ketter import __version__
from ketter.choices import WatchMode
from ketter.config.schema import Config
from ketter.jobs.shares import SourceShare
from ketter.runtime import sdnotify
from ketter.runtime.logs import job_fields
from ketter.watcher.availability import audit
from ketter.watcher.enqueue import Ringer
from ketter.watcher.heartbeat import beat, beat_stopped
from ketter.watcher.observers import OverflowHook, default_observer_factory
from ketter.watcher.route_watch import MAX_BACKOFF, RouteWatch

if TYPE_CHECKING:
    from ketter.store.port import JobStore
    from ketter.store.postgres.route_locks import RouteLocks

log = logging.getLogger(__name__)

#: Seconds between two heartbeat rows.
HEARTBEAT_INTERVAL = 5.0
#: Bounds of one wait of the loop: short enough to notice a stop request
#: and new hints promptly, long enough not to spin.
MIN_WAIT, MAX_WAIT = 0.02, 1.0
#: Longest a stop request waits while the loop sleeps.
STOP_CHECK = 0.2


class Watcher:
    """Detects finished files on every route and enqueues their jobs.

    ``store`` is the process's job store (:class:`ketter.node.Node`'s, with
    its audit chain). ``queue`` defaults to :func:`ketter.queue.build_queue`.

    Use :meth:`run` for the service (returns when ``stop`` is set), or
    :meth:`start` / :meth:`tick` / :meth:`scan_once` / :meth:`close` to
    drive it step by step (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        store: JobStore,
        queue: Ringer | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer_factory: Callable[[], BaseObserver] = default_observer_factory,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        max_backoff: float = MAX_BACKOFF,
        notifier: Any = None,
        locks: RouteLocks | str | None = "from-config",
    ) -> None:
        self.config = config
        self.store = store
        if queue is None:
            from ketter.queue import build_queue

            queue = build_queue(config)
        self.queue = queue
        self.clock = clock
        # At least every lease.heartbeat: a live node's rows stay younger
        # than lease.ttl (its name is checked against them, ketter.runtime.identity).
        self.heartbeat_interval = min(heartbeat_interval, config.lease.heartbeat)
        self._wake = threading.Event()
        self.routes = [
            RouteWatch(
                route,
                store=store,
                queue=queue,
                node=config.node,
                clock=clock,
                observer_factory=observer_factory,
                max_backoff=max_backoff,
                alert_after=config.alerts.watch_lost_after,
                notifier=notifier,
                wake=self._wake,
            )
            for route in config.routes
        ]
        if isinstance(locks, str):
            from ketter.node import store_backend

            names = [r.route.name for r in self.routes]
            locks = store_backend(config).route_locks(names, node=config.node, ttl=config.lease.ttl)
        #: One watcher per route across nodes (PostgreSQL; None on SQLite):
        #: a route is watched only while this watcher holds its lock.
        self.locks = locks
        if locks is not None:
            # Nothing is held yet: the first refresh asks for every route
            # whose root is there (a route "leading" but not watched yet was
            # not asked for, so the watcher started a lock_interval late,
            # saying each route was held by another watcher).
            for route in self.routes:
                route.leading = False
                # Several nodes: a root is watchable here only if it is the
                # share the nodes use, as far as its marker says.
                route.share_problem = SourceShare(store, route.route).problem
        self.lock_interval = max(
            0.5, min([config.lease.ttl / 2] + [r.poll_interval for r in config.routes])
        )
        self._next_lock_check = 0.0
        self._overflow = OverflowHook(self._on_overflow)
        self._started = False
        self._publishes = False
        self._next_beat = 0.0
        self._started_at = time.time()

    # -- the service -----------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set, then stop cleanly."""
        self.start()
        sdnotify.ready("watching")  # systemd (Type=notify): started
        try:
            while not stop.is_set():
                self._wake.clear()
                self.tick()
                # systemd's WatchdogSec: fed only while the loop turns, so a
                # tick stuck on a hung share gets the unit restarted.
                sdnotify.watchdog()
                self._sleep(stop)
        finally:
            sdnotify.stopping()  # systemd: "deactivating" while we close
            self.close()

    def start(self) -> None:
        """Record ``watcher_started`` and hook watchdog's overflow warning."""
        if self._started:
            return
        self._started = True
        self._overflow.install()
        guard = self.store.guard
        if guard is not None and not guard.publishing:
            guard.start_publishing("watcher")  # `ketter watcher`; `run` shares the workers'
            self._publishes = True
        routes = [r.route.name for r in self.routes]
        try:
            # The workers' shape (ketter.workers.consumer): pid, config, routes.
            audit(
                self.store,
                "watcher_started",
                None,
                {
                    "version": __version__,
                    "pid": os.getpid(),
                    "config": self.config.path,
                    "routes": routes,
                },
            )
        except Exception as exc:
            # A full or read-only state disk: up and paused, not a traceback.
            if guard is None or not guard.is_unwritable(exc):
                raise
            guard.write_failed(exc)
        log.info("watcher started", extra={"ketter.routes": routes})

    def tick(self) -> list[int]:
        """One pass over every route; returns the ids of the jobs created."""
        created: list[int] = []
        guard = self.store.guard
        if guard is not None and (guard.check_identity() or guard.unwritable):
            # Store lost or not writable: every route paused (no job could be
            # recorded); the heartbeat is the probe that resumes them.
            if self.clock() >= self._next_beat and guard.probe_due():
                self.heartbeat()
            return created
        if self._take_locks():
            return created  # the locks' connection is lost: paused, as the store is
        for route in self.routes:
            try:
                created.extend(route.tick())
            except Exception as exc:
                if guard is not None and guard.is_unwritable(exc):
                    guard.write_failed(exc)
                    break
                # One route's failure (database busy beyond the timeout, a bug)
                # must not stop the others; the next tick tries again.
                log.exception("route tick failed", **job_fields(route=route.route.name))
        if self.clock() >= self._next_beat:
            self.heartbeat()
        return created

    def _take_locks(self) -> bool:
        """Ask for the route locks not held yet (every ``lock_interval``):
        lead the routes held, follow the others. True when the locks'
        connection is lost (the store unavailable: every route paused)."""
        if self.locks is None:
            return False
        refreshed = self.clock() >= self._next_lock_check
        if refreshed:
            self._next_lock_check = self.clock() + self.lock_interval
            # A route whose root this node has lost (a mount gone) is given
            # back, and not asked for while it stays so: another node that
            # sees the share watches it (a holder without the share kept
            # the route unwatched for as long as its mount was away).
            wanted = {r.route.name for r in self.routes if self._wants(r)}
            held = self.locks.refresh(wanted)
            for route in self.routes:
                try:
                    if route.route.name in held:
                        route.lead()
                    else:
                        route.follow()
                except Exception:
                    # As a route's tick: its root failing as it starts (gone
                    # since it was checked) must not stop the watcher; the
                    # route's next tick starts it or reports it lost.
                    log.exception("route lead/follow failed", **job_fields(route=route.route.name))
        error = self.locks.error
        if error is None:
            return False
        guard = self.store.guard
        if refreshed and guard is not None and guard.is_unwritable(error):
            # This refresh failed: the status file says the store is
            # unavailable. An earlier refresh's error is not said again: the
            # store may have come back since (the heartbeat's probe), and
            # the locks are asked for again at the next tick.
            guard.write_failed(error)
        return True

    def _wants(self, route: RouteWatch) -> bool:
        """Whether to hold ``route``'s lock: a leader while it watches, a
        follower while it could (:meth:`RouteWatch.follower_check`, which
        records a lost watch in the chain: a store that fails then, with
        the share, is the route's trouble, not the watcher's end)."""
        if route.leading:
            return route.watching
        try:
            return route.follower_check(self.clock())
        except Exception as exc:
            guard = self.store.guard
            if guard is not None and guard.is_unwritable(exc):
                guard.write_failed(exc)
            else:
                log.exception(
                    "route availability check failed", **job_fields(route=route.route.name)
                )
            return False

    def scan_once(self) -> list[int]:
        """Force a full scan of every route now, then tick."""
        for route in self.routes:
            route.request_rescan()
        return self.tick()

    def heartbeat(self) -> None:
        self._next_beat = self.clock() + self.heartbeat_interval
        rows: dict[str, dict[str, Any]] = {f"route:{r.route.name}": r.status() for r in self.routes}
        rows["watcher"] = {
            "version": __version__,
            "started_at": self._started_at,
            "routes": len(self.routes),
            "routes_lost": sum(1 for r in self.routes if not r.watching),
            "pending": sum(len(r.tracker) for r in self.routes),
        }
        if self.locks is not None:
            rows["watcher"]["routes_led"] = sorted(r.route.name for r in self.routes if r.leading)
            if self.locks.problem is not None:
                rows["watcher"]["locks"] = self.locks.problem
        guard = self.store.guard
        if guard is not None and not guard.probe():
            return  # an immutable or read-only store: paused (tick)
        try:
            beat(self.store, self.config.node, rows)
        except Exception as exc:
            if guard is not None and guard.is_unwritable(exc):
                guard.write_failed(exc)
                return
            log.exception("heartbeat failed")
            return
        if guard is not None and guard.write_ok():
            for route in self.routes:  # catch up on what arrived while paused
                route.request_rescan()
            self._next_lock_check = 0.0  # the route locks asked for again at once

    def close(self) -> None:
        """Record ``watcher_stopped`` (the chain and the log) and stop the
        observers.

        The stop is recorded first, each record on its own: once the loop
        has ended no job is created any more, and neither an observer whose
        thread hangs on a dead share while it stops, nor a heartbeat that
        fails, may keep the stop out of the chain and the log."""
        if not self._started:
            return
        self._started = False
        self._overflow.remove()
        guard = self.store.guard
        created = sum(r.jobs_created for r in self.routes)
        fields = {"ketter.jobs_created": created}  # the log line has process.pid
        if guard is not None and guard.problem:
            log.info(
                "watcher stopped (store %s: not recorded in the chain)",
                "lost" if guard.lost else "not writable",
                extra=fields,
            )
        else:
            try:
                # The workers' shape (ketter.workers.consumer): pid.
                audit(
                    self.store,
                    "watcher_stopped",
                    None,
                    {"jobs_created": created, "pid": os.getpid()},
                )
            except Exception:
                log.exception("could not record the watcher's stop in the audit chain")
            log.info("watcher stopped", extra=fields)
        for route in self.routes:
            route.stop()
        if self.locks is not None:
            self.locks.close()  # the routes are free for another node's watcher
            for route in self.routes:
                route.leading = False  # the last heartbeat says so (status)
        if guard is not None and self._publishes:
            self._publishes = False
            guard.stop_publishing()
        if guard is not None and guard.problem:
            return
        try:
            self.heartbeat()
            beat_stopped(self.store, self.config.node, "watcher")  # health: "stopped cleanly"
        except Exception:
            log.exception("could not record the watcher's stop in its heartbeat")

    # -- helpers ---------------------------------------------------------

    def _on_overflow(self) -> None:
        # Called from watchdog's inotify thread: only set flags.
        for route in self.routes:
            if route.mode == WatchMode.NATIVE:
                route.request_rescan()

    def _sleep(self, stop: threading.Event) -> None:
        """Until the next thing to do, a new hint, or ``stop``; never less
        than ``MIN_WAIT`` (an event storm must not make the loop spin)."""
        if stop.wait(MIN_WAIT):
            return
        deadline = time.monotonic() + self._wait()  # measured after the MIN_WAIT
        while not stop.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(left, STOP_CHECK))

    def _wait(self) -> float:
        now = self.clock()
        wake = min([r.next_wakeup() for r in self.routes] + [self._next_beat])
        if self.locks is not None:
            wake = min(wake, self._next_lock_check)
        return min(MAX_WAIT, max(MIN_WAIT, wake - now))
