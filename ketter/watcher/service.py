"""The watcher service: every route's watch, driven by one loop.

Threads: the loop runs in the caller's thread (``ketter watcher``'s main
thread, or a thread of ``ketter run``); watchdog's inotify threads only add
hints to thread-safe sets. Only the loop touches the job store and the
queue, so there is no locking beyond SQLite's.
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
from ketter.runtime import sdnotify
from ketter.runtime.logs import job_fields
from ketter.watcher.availability import audit
from ketter.watcher.enqueue import Ringer
from ketter.watcher.heartbeat import beat, beat_stopped
from ketter.watcher.observers import OverflowHook, default_observer_factory
from ketter.watcher.route_watch import MAX_BACKOFF, RouteWatch

if TYPE_CHECKING:
    from ketter.store.port import JobStore

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
    ) -> None:
        self.config = config
        self.store = store
        if queue is None:
            from ketter.queue import build_queue

            queue = build_queue(config)
        self.queue = queue
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
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
        return min(MAX_WAIT, max(MIN_WAIT, wake - now))
