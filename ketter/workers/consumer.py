"""``ketter workers``: the Huey consumer running transfer jobs, plus the
threads that keep it honest (lease keeper, recovery sweep, heartbeat).

Huey's thread workers execute the task body, :meth:`JobRunner.handle`. Huey
3.5 makes only one of SIGINT/SIGTERM graceful and cannot interrupt thread
workers, so its signal handlers are replaced by Ketter's (see
:mod:`ketter.runtime.signals`): the first SIGTERM or SIGINT stops claiming,
the copy loops notice within a second, release their jobs (no attempt used)
and the process exits 0 within ``shutdown_timeout``; a second signal exits
at once and the next start's sweep recovers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketter.alerts import build_notifier
from ketter.audit.ship_process import ShipperProcess
from ketter.audit.shipper import AuditShipper
from ketter.config import Config, load_config
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner, LogNotifier, Notifier
from ketter.jobs.sweep import sweep
from ketter.node import Node
from ketter.queue import Queue, build_queue
from ketter.runtime import sdnotify
from ketter.runtime.children import Children, service_pid
from ketter.runtime.signals import Shutdown
from ketter.store.guard import StoreGuard

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger("ketter.workers")

#: How often the orphan sweep walks the destinations (it is a full walk).
ORPHAN_SWEEP_EVERY = 600.0


def write_heartbeat(
    store: JobStore, component: str, node: str, details: dict, *, now: float
) -> None:
    """Upsert this process's ``component`` heartbeat row, which names the
    service's main process (the extra processes beat the same row)."""
    details = {**details, "service": service_pid()}
    store.beat(node, {component: json.dumps(details, ensure_ascii=False)}, pid=os.getpid(), now=now)


#: Huey's loggers that print a traceback per failed dequeue or task (every
#: 0.25 s per thread while the state disk is full).
HUEY_LOGGERS = ("huey", "huey.consumer.Worker")


class _StateDiskFilter(logging.Filter):
    """Turns huey's tracebacks for a state disk that cannot be written (its
    queue.db lives there too) into the guard's one pause message."""

    def __init__(self, guard: StoreGuard) -> None:
        super().__init__()
        self.guard = guard

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and self.guard.is_unwritable(exc):
            self.guard.write_failed(exc)
            return False
        return True


class WorkersProcess:
    """Everything ``ketter workers`` runs, built from the config in one place."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int | None = None,
        shutdown: Shutdown | None = None,
        notifier: Notifier | None = None,
        on_reload: Callable[[], None] | None = None,
        node: Node | None = None,
    ) -> None:
        self.config = config
        #: The process's composition root (``ketter run`` passes its own).
        self.node = node
        #: Called after a SIGHUP was handled (the main process passes it on
        #: to its children, :mod:`ketter.runtime.children`).
        self.on_reload = on_reload
        self.workers = workers or config.workers
        self.shutdown = shutdown or Shutdown()
        self.notifier = notifier or LogNotifier()
        self.queue: Queue | None = None
        #: The node's job store (set by :meth:`run`).
        self.store: JobStore
        #: The audit shipper: a child process, or a thread without a config file.
        self.shipper: AuditShipper | ShipperProcess | None = None
        #: Store problems already alerted (one alert per outage).
        self._alerted_unwritable = False
        self._alerted_lost = False

    def run(self, *, install_signals: bool = True) -> int:
        config = self.config
        if install_signals:
            # First thing: a SIGTERM during start-up must be graceful too.
            self.shutdown.install()
        if self.node is None:
            # The key first (a ConfigError, exit 2, with the config line);
            # never silently a new, empty store where the node has run before.
            self.node = Node.from_config(
                config,
                "workers",
                evidence=[config.audit.log_file],
                notifier=self.notifier,
            )
        store = self.node.store
        assert store is not None
        self.store = store
        guard = store.guard or StoreGuard(config.db_path)
        guard.start_publishing("workers")
        quiet = _StateDiskFilter(guard)
        for name in HUEY_LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        # The stall alert is the node's AlertSubscriber on the stalled event.
        keeper = LeaseKeeper(config, self.shutdown, store=store)
        runner = JobRunner(
            config,
            store=store,
            shutdown=self.shutdown,
            keeper=keeper,
            ring=lambda job_id, delay: queue.ring(job_id, delay=delay),
            notifier=self.notifier,
            threads=self.workers,
        )
        queue = self.queue = build_queue(config, handler=runner.handle)
        consumer = queue.huey.create_consumer(
            workers=self.workers,
            worker_type="thread",
            periodic=False,
            # An idle worker polls the queue at most every 0.25 s (a cheap
            # read of queue.db): a burst after a quiet spell starts at once.
            initial_delay=0.05,
            backoff=1.5,
            max_delay=0.25,
            check_worker_health=True,
            shutdown_timeout=config.shutdown_timeout,
        )
        now = time.time()

        def started() -> None:
            with store.transaction():
                store.append_event(
                    "workers_started",
                    now=now,
                    details={
                        "workers": self.workers,
                        "pid": os.getpid(),
                        "config": config.path,
                        "routes": [r.name for r in config.routes],
                    },
                )

        # A full or read-only state disk at start: up and paused, not exit 1.
        self._store_write(guard, started)
        # Huey's consumer would install its own handlers (only one of SIGINT
        # and SIGTERM graceful, acted on by a loop we do not run): keep ours.
        consumer._set_signal_handlers = lambda: None
        shipper = self.shipper = _shipper(config, store)
        with self.shutdown.spawn_threads_without_signals():
            consumer.start()
            keeper.start()
            shipper.start()
        log.info("workers started", extra={"ketter.workers": self.workers})
        # systemd (Type=notify): started only now, with the consumer running.
        sdnotify.ready(f"{self.workers} workers")
        try:
            self._loop(queue, runner, keeper, guard)
        finally:
            # systemd: the unit shows "deactivating" while transfers checkpoint.
            sdnotify.stopping()
            log.info("stopping: waiting for running transfers to checkpoint")
            consumer.stop(graceful=True)
            keeper.stop()

            def stopped() -> None:
                with store.transaction():
                    store.append_event(
                        "workers_stopped", now=time.time(), details={"pid": os.getpid()}
                    )

            if not guard.problem:
                self._store_write(guard, stopped)
            shipper.stop()  # after the last event: it ships everything first
            if not guard.problem:
                self._store_write(
                    guard,
                    lambda: write_heartbeat(
                        store, "workers", config.node, {"stopped": True}, now=time.time()
                    ),
                )
            guard.stop_publishing()
            for name in HUEY_LOGGERS:
                logging.getLogger(name).removeFilter(quiet)
            queue.close()
            log.info("workers stopped")
        return 0

    def _store_write(self, guard: StoreGuard, write: Callable[[], object]) -> bool:
        """Run one write of the job store; a store that cannot be written
        (disk full, read-only, immutable) pauses the node instead of
        killing it (issue #14 finding 8). True when the write landed."""
        try:
            write()
        except Exception as exc:
            if not guard.is_unwritable(exc):
                raise
            guard.write_failed(exc)
            self._store_alerts(guard)
            return False
        if guard.write_ok():
            self._store_alerts(guard)
        return True

    def _store_alerts(self, guard: StoreGuard) -> None:
        """One alert when the store is lost, one when it stops being writable,
        one when it is writable again (the notifier throttles on top)."""
        if guard.lost and not self._alerted_lost:
            self._alerted_lost = True
            self.notifier.notify("store_lost", None, f"node {self.config.node}: {guard.lost}")
        if guard.unwritable and not self._alerted_unwritable:
            self._alerted_unwritable = True
            self.notifier.notify(
                "store_unwritable",
                None,
                f"node {self.config.node}: every route paused: {guard.unwritable}; "
                "retrying with a backoff, resumes by itself (free space in the "
                f"state dir {self.config.state_dir} or make the store writable)",
            )
        elif not guard.unwritable and self._alerted_unwritable:
            self._alerted_unwritable = False
            self.notifier.notify(
                "store_writable", None, f"node {self.config.node}: state store writable again"
            )

    def _loop(
        self, queue: Queue, runner: JobRunner, keeper: LeaseKeeper, guard: StoreGuard
    ) -> None:
        next_sweep = 0.0
        next_orphans = 0.0
        next_beat = 0.0
        while not self.shutdown.requested:
            mono = time.monotonic()
            now = time.time()
            if self.shutdown.reload.is_set():
                self.shutdown.reload.clear()
                self._reload(runner, keeper)
                if self.on_reload is not None:
                    self.on_reload()
            if isinstance(self.shipper, ShipperProcess):
                self.shipper.check()  # started again if it exited on its own
            # Every turn (a stat): a deleted or replaced store stops every
            # running copy at its next checkpoint (JobContext.progress).
            guard.check_identity()
            self._store_alerts(guard)
            if guard.problem:
                # Paused: nothing is claimed (JobRunner.handle); only a probe
                # write, on a backoff, tells when the store is writable again.
                if not guard.lost and guard.probe_due():
                    beat = {"workers": self.workers, "running": [], "paused": guard.problem}
                    if guard.probe() and self._store_write(
                        guard,
                        functools.partial(
                            write_heartbeat, self.store, "workers", self.config.node, beat, now=now
                        ),
                    ):
                        next_sweep = 0.0  # re-ring what waited, now
                sdnotify.watchdog()
                self.shutdown.wait(0.2)
                continue
            if mono >= next_sweep:
                orphans = mono >= next_orphans
                try:
                    sweep(
                        self.store,
                        self.config,
                        now=now,
                        pending=queue.pending,
                        ring=queue.ring,
                        cleanup_orphans=orphans,
                        shares=runner.shares,
                    )
                except Exception as exc:
                    if guard.is_unwritable(exc):  # a share's EACCES is no store problem
                        guard.write_failed(exc)
                    else:
                        log.exception("sweep failed")
                next_sweep = mono + self.config.lease.sweep_interval
                if orphans:
                    next_orphans = mono + ORPHAN_SWEEP_EVERY
            if mono >= next_beat:
                running = [
                    {"job_id": a.job_id, "phase": a.phase, "bytes": a.bytes_done}
                    for a in keeper.running()
                ]
                if not guard.probe():
                    self._store_alerts(guard)
                    continue
                self._store_write(
                    guard,
                    functools.partial(
                        write_heartbeat,
                        self.store,
                        "workers",
                        self.config.node,
                        {"workers": self.workers, "running": running},
                        now=now,
                    ),
                )
                next_beat = mono + self.config.lease.heartbeat
            # systemd's WatchdogSec: only a loop that keeps turning feeds it,
            # so a sweep hung on a dead mount gets the unit restarted.
            sdnotify.watchdog()
            self.shutdown.wait(min(0.2, self.config.lease.sweep_interval))

    def _reload(self, runner: JobRunner, keeper: LeaseKeeper) -> None:
        """SIGHUP: load the config again and apply it between jobs, unless the
        change needs filesystem access the service was not started with."""
        try:
            new = load_config(self.config.path)
        except Exception as exc:
            log.error("reload refused: %s", exc)
            return
        old_roots = {(r.source, r.destination) for r in self.config.routes}
        new_roots = {(r.source, r.destination) for r in new.routes}
        if not new_roots <= old_roots or new.state_dir != self.config.state_dir:
            log.error(
                "reload refused: new route folders or a new state_dir need new "
                "filesystem permissions; restart the service (systemctl restart "
                "ketter-workers) after updating the units (ketter deploy units)"
            )
            return
        new = dataclasses.replace(new, path=self.config.path)
        self.config = runner.config = keeper.config = new
        log.info("config reloaded", extra={"ketter.routes": [r.name for r in new.routes]})


def _shipper(config: Config, store: JobStore) -> AuditShipper | ShipperProcess:
    """The audit shipper beside the workers: its own process (its Python
    CPU off this interpreter's lock, :mod:`ketter.audit.ship_process`), or a
    thread of this one for a config without a file (tests)."""
    if config.path:
        return ShipperProcess(config, store)
    return AuditShipper(config, store=store)


def run_workers(config: Config, workers: int | None = None, processes: int | None = None) -> int:
    """Entry point of ``ketter workers``: this process, and as many more as
    ``worker_processes`` asks for (:mod:`ketter.runtime.children`)."""
    # First thing: a SIGTERM during start-up must be graceful too.
    shutdown = Shutdown().install()
    count = processes or config.worker_processes
    args = ["workers", "--processes", "1", *(["--workers", str(workers)] if workers else [])]
    children = Children(config, [args] * (count - 1)) if count > 1 else None
    if children is not None:
        children.start()  # before this process starts any thread
    notifier = build_notifier(config)
    try:
        if children is not None:
            children.watch(shutdown)
        code = WorkersProcess(
            config,
            workers=workers,
            shutdown=shutdown,
            notifier=notifier,
            on_reload=children.reload if children is not None else None,
        ).run(install_signals=False)
    finally:
        notifier.stop()
        if children is not None:
            shutdown.request()  # also when this process failed: the children stop too
            children.stop(config.shutdown_timeout + 30)
    return 1 if children is not None and children.failed else code


__all__ = ["WorkersProcess", "run_workers"]
