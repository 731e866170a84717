"""Watching one route: scans, events, readiness, enqueue, and what a lost
root does to the watch.

A route whose root is missing, unreadable or not on its ``source_mount`` is
*lost* (R-W7): its observer is stopped, its candidates forgotten, and the
root is checked again with exponential backoff
(:class:`ketter.watcher.availability.RootAvailability` keeps that state, its
audit events and its alert). Nothing is ever concluded from a lost root's
contents — an unmounted share is an empty folder, and the watcher does not
act on disappearances at all. Other routes carry on.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from watchdog.observers.api import BaseObserver

from ketter.choices import Folders, Kind, WatchMode
from ketter.config.schema import RouteConfig
from ketter.paths import readable
from ketter.runtime.logs import job_fields
from ketter.watcher import mounts
from ketter.watcher.availability import RootAvailability
from ketter.watcher.enqueue import KEY_BATCH, Ready, Ringer, enqueue_ready, settled_keys
from ketter.watcher.identity import Version, file_version, folder_version, stat_path
from ketter.watcher.observers import (
    Hints,
    WatchLimitReached,
    default_observer_factory,
    observer_alive,
    start_native,
    stop_observer,
)
from ketter.watcher.patterns import RoutePatterns
from ketter.watcher.readiness import StabilityTracker, still_written
from ketter.watcher.scanner import Found, Scanner

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger(__name__)

#: Longest wait between two checks of a lost root.
MAX_BACKOFF = 60.0
#: Ready candidates enqueued per tick (about 1 s of job creation): a burst of
#: 10,000 files is spread over several ticks so that heartbeats and a stop
#: request are not held up; the rest stay due and go at the next tick.
MAX_READY_PER_TICK = 500


class RouteWatch:
    """The watch of one route; driven by :meth:`tick` from the watcher loop.

    ``clock`` is monotonic seconds (readiness and schedules); rows and
    events carry wall-clock time.
    """

    def __init__(
        self,
        route: RouteConfig,
        *,
        store: JobStore,
        queue: Ringer,
        node: str,
        clock: Callable[[], float] = time.monotonic,
        observer_factory: Callable[[], BaseObserver] = default_observer_factory,
        max_backoff: float = MAX_BACKOFF,
        alert_after: float = 300.0,
        pending_capacity: int = 100_000,
        notifier: Any = None,
        wake: threading.Event | None = None,
    ) -> None:
        self.route = route
        self.store = store
        self.notifier = notifier
        self.root = os.fsencode(route.source)
        self.watch_root = self.root
        self.queue = queue
        self.node = node
        self.clock = clock
        self.observer_factory = observer_factory
        self.patterns = RoutePatterns.for_route(route)
        self.as_unit = route.folders == Folders.AS_UNIT
        self.tracker = StabilityTracker(
            stable_seconds=route.stable_seconds,
            poll_interval=route.poll_interval,
            capacity=pending_capacity,
        )
        self.hints = Hints(wake=wake)
        self.scanner: Scanner | None = None
        self.observer: BaseObserver | None = None
        self.mode: str | None = None  # native | polling, while watching
        self.mode_reason = ""
        self.revalidate = False
        self.availability = RootAvailability(
            route,
            store=store,
            max_backoff=max_backoff,
            alert_after=alert_after,
            notifier=notifier,
        )
        self.next_check = 0.0
        # schedules (clock) and facts for the heartbeat (wall clock)
        self.next_poll = 0.0
        self.next_full_scan = 0.0
        self.last_scan: float | None = None
        self.last_full_scan: float | None = None
        self.jobs_created = 0
        #: source paths too long to reach by name, each logged once
        self.unreachable: set[bytes] = set()
        #: (key, ctime) of delivered files whose ctime moved with the same
        #: bytes (chmod, chown): settled, not hashed again (enqueue.py)
        self.same_bytes: set[tuple[str, int]] = set()
        #: This watcher holds the route (its lock on PostgreSQL; always on
        #: SQLite): only the leader watches a route (:meth:`lead`, :meth:`follow`).
        self.leading = True
        #: Several nodes (PostgreSQL): why the root is not the share the
        #: nodes use (:class:`ketter.jobs.shares.SourceShare`), part of
        #: :meth:`root_problem`; None on one node.
        self.share_problem: Callable[[], str | None] | None = None

    # -- lifecycle -------------------------------------------------------

    def stop(self) -> None:
        stop_observer(self.observer)
        self.observer = None

    def follow(self) -> None:
        """Another node's watcher holds the route (or this one lost its
        lock): stop watching it and forget its candidates."""
        if not self.leading:
            return
        self.leading = False
        self.stop()
        self._forget()
        self.scanner = None
        log.info(
            "route held by another watcher: not watched here", **job_fields(route=self.route.name)
        )

    def lead(self) -> None:
        """This watcher took the route's lock: watch it, starting with a
        full scan (the catch-up of what arrived under the previous holder)."""
        if self.leading:
            return
        self.leading = True
        if self.watching:
            try:
                self._start_watching(self.clock())
            except BaseException:
                # Not watching after all (the root gone between its check
                # and the start, a transient error): the next tick starts it
                # the usual way, instead of ticking a route with no scanner.
                self.availability.watching = False
                self.stop()
                raise

    def _forget(self) -> None:
        self.tracker = StabilityTracker(
            stable_seconds=self.route.stable_seconds,
            poll_interval=self.route.poll_interval,
            capacity=self.tracker.capacity,
        )
        self.hints.drain()

    def request_rescan(self) -> None:
        """Thread-safe: the next tick walks the whole tree (overflow)."""
        self.hints.request_rescan()

    def tick(self) -> list[int]:
        """One step: check the root, scan what is due, observe candidates,
        enqueue the ready ones. Returns the ids of the jobs created."""
        now = self.clock()
        if not self.leading or not self._available(now):
            return []
        try:
            self._scan(now)
            ready = self._observe(now)
        except OSError as exc:
            # The root went away mid-scan (unmount, removal): a lost watch.
            if self.root_problem() is not None:
                self._lose(self.root_problem() or str(exc), now)
                return []
            raise
        if not ready:
            return []
        created = enqueue_ready(
            self.store,
            self.route,
            self.root,
            ready,
            queue=self.queue,
            node=self.node,
            confirmed=self.same_bytes,
        )
        for item in ready:
            self.tracker.discard(item.relpath)
        self.jobs_created += len(created)
        return created

    @property
    def watching(self) -> bool:
        """Whether the root is watched (not lost)."""
        return self.availability.watching

    @property
    def lost_reason(self) -> str | None:
        return self.availability.lost_reason

    def next_wakeup(self) -> float:
        """Clock time at which :meth:`tick` has something to do."""
        if not self.leading:
            return self.clock() + self.route.poll_interval  # the watcher asks for the lock
        if not self.watching:
            return self.availability.retry_at
        times = [self.next_full_scan, self.next_check]
        if self.mode == WatchMode.POLLING:
            times.append(self.next_poll)
        due = self.tracker.next_due()
        if due is not None:
            times.append(due)
        if len(self.hints):
            times.append(self.clock())
        return min(times)

    # -- availability ----------------------------------------------------

    def root_problem(self) -> str | None:
        problem = mounts.check_root(self.route, self.root)
        if problem is None and self.share_problem is not None:
            problem = self.share_problem()
        return problem

    def follower_check(self, now: float) -> bool:
        """A route another node may lead: whether this node could watch its
        root (then it asks for the route's lock). A root it cannot watch is
        reported lost as a leader's is (the route's heartbeat row, ``ketter
        health``, the ``watch_lost`` event and alert), so that a node whose
        share is missing says so even while another node watches the route,
        or while none can; it is restored, without a wait, once the root is
        back (a route it follows and could watch is not lost)."""
        problem = self.root_problem()
        if problem is not None:
            if problem != self.availability.lost_reason:
                self.availability.lose(problem, now)
            else:
                self.availability.maybe_alert()
            return False
        if not self.availability.watching:
            # Watchable here (a "watch_restored" event only after a loss):
            # a follower's row said "lost" from its start, and `ketter
            # health` failed every route another node watched.
            self.availability.restore(None)
        return True

    def _available(self, now: float) -> bool:
        if not self.watching:
            if not self.availability.may_retry(now):
                return False
            problem = self.root_problem()
            if problem is not None:
                self._lose(problem, now)
                return False
            self._start_watching(now)
            return True
        if now >= self.next_check:
            self.next_check = now + self.route.poll_interval
            problem = self.root_problem()
            if problem is not None:
                self._lose(problem, now)
                return False
            if self.observer is not None and not observer_alive(self.observer):
                # e.g. the root was removed and re-created between two checks:
                # the old inotify watch died with the old folder.
                log.warning(
                    "native watch stopped; restarting it and rescanning",
                    **job_fields(route=self.route.name),
                )
                self.stop()
                self._start_observer()
                self.next_full_scan = now
        return True

    def _lose(self, reason: str, now: float) -> None:
        """The root is lost: stop the watch and forget its candidates (they
        are found again by the full scan after it comes back)."""
        self.stop()
        self._forget()
        self.scanner = None
        self.availability.lose(reason, now)

    def _unreachable(self, relpath: bytes, reason: str) -> None:
        """A source path too long to reach by name (issue #14 finding 12):
        logged once per path, alerted once per route; never a job."""
        if relpath in self.unreachable:
            return
        self.unreachable.add(relpath)
        path = readable(os.path.join(self.root, relpath))
        first = len(self.unreachable) == 1
        log.warning(
            "path skipped: %s: %s",
            path,
            reason,
            extra={"ketter.route": self.route.name, "file.path": path, "ketter.reason": reason},
        )
        if first and self.notifier is not None:
            self.notifier.notify(
                "path_skipped",
                self.route.name,
                f"route {self.route.name}: {path} is not transferred: {reason} "
                "(further such paths on this route are logged, not alerted)",
            )

    def _start_watching(self, now: float) -> None:
        self.mode, self.mode_reason = mounts.choose_watch(self.route, self.root)
        self.revalidate = mounts.is_network(self.root)
        if self.mode == WatchMode.NATIVE:
            self._start_observer()
        self.scanner = Scanner(
            self.root,
            self.patterns,
            as_unit=self.as_unit,
            track_dirs=self.mode == WatchMode.POLLING,
            on_unreachable=self._unreachable,
        )
        self.next_full_scan = now  # catch up on whatever arrived meanwhile (R-W1)
        self.next_check = now + self.route.poll_interval
        self.availability.restore(self.mode)
        log.info(
            "watching %s (%s: %s)",
            readable(self.root),
            self.mode,
            self.mode_reason,
            **job_fields(route=self.route.name),
        )

    def _start_observer(self) -> None:
        # inotify does not follow a symlinked root (IN_DONT_FOLLOW): watch the
        # folder it points to; _relative() accepts paths under either name.
        self.watch_root = os.path.realpath(self.root)
        try:
            self.observer = start_native(self.watch_root, self.hints, self.observer_factory)
        except WatchLimitReached as exc:
            log.error(
                str(exc), extra={"ketter.route": self.route.name, "ketter.sysctl": exc.sysctl}
            )
            self._fall_back_to_polling(str(exc))

    def _fall_back_to_polling(self, reason: str) -> None:
        self.observer = None
        self.mode, self.mode_reason = "polling", reason
        if self.scanner is not None:
            self.scanner.track_dirs = True
        self.next_full_scan = self.clock()  # builds the folder mtimes

    # -- scanning --------------------------------------------------------

    def _scan(self, now: float) -> None:
        assert self.scanner is not None
        files, dirs, rescan = self.hints.drain()
        if self.tracker.overflowed and self.tracker.room():
            self.tracker.overflowed = False
            rescan = True
        if rescan or now >= self.next_full_scan:
            self._consider(self.scanner.full_scan(), now)
            self.next_full_scan = now + self.route.rescan_interval
            self.next_poll = now + self.route.poll_interval
            self.last_scan = self.last_full_scan = time.time()
            return  # the walk covered every hint
        if self.mode == WatchMode.POLLING and now >= self.next_poll:
            for rel_dir in self.scanner.changed_dirs():
                self._consider(self.scanner.list_dir(rel_dir), now)
            self.next_poll = now + self.route.poll_interval
            self.last_scan = time.time()
        if files or dirs:
            self._consider(self._from_hints(files, dirs), now)

    def _from_hints(self, files: Iterable[bytes], dirs: Iterable[bytes]) -> Iterable[Found]:
        assert self.scanner is not None
        for path in dirs:
            rel = self._relative(path)
            if rel:
                yield from self.scanner.walk_new(rel)
        for path in files:
            rel = self._relative(path)
            if not rel:
                continue
            if self.patterns.is_marker(rel):
                # A marker appeared: look at the file (or folder) it speaks for.
                rel = self.patterns.marked_path(rel)
                self.tracker.poke(rel, self.clock())
            found = self.scanner.stat_candidate(rel)
            if found is not None:
                yield found

    def _relative(self, path: bytes) -> bytes | None:
        for root in (self.root, self.watch_root):
            prefix = root.rstrip(b"/") + b"/"
            if path.startswith(prefix):
                return path[len(prefix) :]
        return None

    def _consider(self, found: Iterable[Found], now: float) -> None:
        """Track the found candidates that are neither tracked nor settled."""
        batch: list[tuple[Found, Version | None, str | None]] = []
        for item in found:
            if item.relpath in self.tracker:
                if item.version is not None and not self.revalidate:
                    # The scan's lstat is an observation (local disk): no
                    # second stat of every tracked file at every poll.
                    self.tracker.observe(item.relpath, item.version, now)
                else:
                    self.tracker.poke(item.relpath, now)
                continue
            version, key = self._discovery_key(item)
            batch.append((item, version, key))
            if len(batch) >= KEY_BATCH:
                self._track(batch, now)
                batch = []
        self._track(batch, now)

    def _discovery_key(self, item: Found) -> tuple[Version | None, str | None]:
        version: Version | None
        if item.kind == Kind.FOLDER:
            try:
                version = folder_version(os.path.join(self.root, item.relpath), revalidate=False)
            except OSError:
                return None, None
        else:
            version = item.version
        if version is None:
            return None, None
        return version, Ready(item.relpath, item.kind, version).key(self.route.name)

    def _track(self, batch: list[tuple[Found, Version | None, str | None]], now: float) -> None:
        if not batch:
            return
        settled = settled_keys(
            self.store,
            (key for _, _, key in batch if key is not None),
            {key: v.ctime_ns for _, v, key in batch if key is not None and v is not None},
            paths={
                key: os.path.join(self.root, item.relpath)
                for item, _, key in batch
                if key is not None
            },
            confirmed=self.same_bytes,
        )
        for item, version, key in batch:
            if key is not None and key in settled:
                continue  # this version already has a job (any state, same ctime)
            # On a network mount the scan's stat may come from the client's
            # attribute cache: do not count it as an observation.
            first = None if self.revalidate else version
            self.tracker.add(item.relpath, item.kind, now, first)

    # -- readiness -------------------------------------------------------

    def _observe(self, now: float) -> list[Ready]:
        ready: list[Ready] = []
        for relpath, pending in self.tracker.due(now):
            if len(ready) >= MAX_READY_PER_TICK:
                break
            path = os.path.join(self.root, relpath)
            try:
                if pending.kind == Kind.FOLDER:
                    version = folder_version(path, revalidate=self.revalidate)
                else:
                    st = stat_path(path, revalidate=self.revalidate)
                    if not stat.S_ISREG(st.st_mode):
                        self.tracker.discard(relpath)
                        continue
                    version = file_version(st)  # with the ctime (#14 finding 2)
            except FileNotFoundError:
                self.tracker.discard(relpath)  # gone: nothing to do, ever
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    self.tracker.discard(relpath)
                    continue
                # Busy or locked (an SMB writer's share mode): not ready yet.
                self.tracker.defer(relpath, now + self.route.poll_interval)
                continue
            if not self.tracker.observe(relpath, version, now):
                continue
            if pending.kind == Kind.FOLDER and version.file_count == 0:
                # An empty folder may be about to receive files: not a
                # delivery. A file arriving in it brings it back.
                self.tracker.discard(relpath)
                continue
            if self._marker_ok(relpath, version):
                ready.append(Ready(relpath, pending.kind, version))
        return self._closed(ready, now)

    def _closed(self, ready: list[Ready], now: float) -> list[Ready]:
        """Only candidates no process holds open for writing: a writer that
        stalled longer than ``stable_seconds`` is not done (#14 finding 15).
        The others stay tracked and are looked at again at the next poll."""
        busy = still_written(
            [(r.relpath, r.kind, r.version, os.path.join(self.root, r.relpath)) for r in ready]
        )
        for relpath, who in busy.items():
            log.debug(
                "not ready: still open for writing by %s",
                who,
                extra={"ketter.route": self.route.name, "file.path": readable(relpath)},
            )
            self.tracker.defer(relpath, now + self.route.poll_interval)
        return [r for r in ready if r.relpath not in busy]

    def _marker_ok(self, relpath: bytes, version: Version) -> bool:
        """Without ``ready_marker``: always. With it: ``NAME<marker>`` exists
        and is not older than the newest content (a stale marker from an
        older version does not count)."""
        marker = self.patterns.marker_for(relpath)
        if marker is None:
            return True
        try:
            st = stat_path(os.path.join(self.root, marker), revalidate=self.revalidate)
        except OSError:
            return False
        return st.st_mtime_ns >= version.mtime_ns

    # -- status ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Heartbeat details of this route."""
        return {
            "lost": not self.watching,
            "leader": self.leading,
            "reason": self.availability.lost_reason,
            "lost_since": self.availability.lost_since,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "last_scan": self.last_scan,
            "last_full_scan": self.last_full_scan,
            "files_watched": self.scanner.files_seen if self.scanner else 0,
            "pending": len(self.tracker),
            "jobs_created": self.jobs_created,
        }
