"""watchdog glue: native (inotify) observers that turn events into hints,
the inotify overflow hook, and the watch-limit fallback.

Events are only *hints* ("look at this path soon"): readiness is always
decided by observing the file (see readiness.py), and whatever events miss
is found by the reconciliation scan.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import warnings
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

#: watchdog 7.1 warns when its recursive walk and the event of a folder just
#: created add the same folder's watch twice with the same callback (a race
#: inside watchdog, seen in the test suite); the second add overwrites the
#: callback with itself, nothing is lost. Silenced, or every such folder
#: would print a Python warning to the journal.
warnings.filterwarnings(
    "ignore",
    message=r"Callback with id .* already exists for watch",
    category=RuntimeWarning,
)

#: The loggers on which watchdog 7.1 reports a kernel queue overflow; it
#: does not tell the handlers (watchdog #654), so Ketter listens to the log.
OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")

#: Only these events are asked from the kernel: open/close-nowrite/attrib
#: would wake the watcher for every read of every file.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class WatchLimitReached(Exception):
    """The kernel refused more inotify watches or instances."""

    def __init__(self, root: bytes, exc: OSError) -> None:
        if exc.errno == errno.EMFILE:
            sysctl = "fs.inotify.max_user_instances"
        else:
            sysctl = "fs.inotify.max_user_watches"
        super().__init__(
            f"inotify limit reached while watching {os.fsdecode(root)} ({exc.strerror}); "
            f"falling back to polling for this route. Raise {sysctl} (e.g. "
            f"`sysctl -w {sysctl}=524288`, and persist it in /etc/sysctl.d/) to watch "
            "natively"
        )
        self.sysctl = sysctl


class Hints:
    """Paths named by events since the last tick, bounded.

    Filled by watchdog's dispatch thread, drained by the watcher loop. Past
    ``capacity`` the individual paths are dropped and one rescan is asked
    instead: an event storm costs a walk, not unbounded memory (R-W4).
    """

    def __init__(self, capacity: int = 50_000, wake: threading.Event | None = None) -> None:
        self.capacity = capacity
        #: set on every new hint: the watcher loop wakes up at once instead
        #: of finishing a wait of up to a second (the first files of a burst
        #: were observed up to 1 s late).
        self.wake = wake
        self._lock = threading.Lock()
        self._files: set[bytes] = set()
        self._dirs: set[bytes] = set()
        self._rescan = False

    def add(self, path: bytes, *, is_dir: bool) -> None:
        with self._lock:
            if self._rescan:
                return
            if len(self._files) + len(self._dirs) >= self.capacity:
                self._files.clear()
                self._dirs.clear()
                self._rescan = True
                return
            (self._dirs if is_dir else self._files).add(path)
        if self.wake is not None:
            self.wake.set()

    def request_rescan(self) -> None:
        with self._lock:
            self._files.clear()
            self._dirs.clear()
            self._rescan = True

    def drain(self) -> tuple[set[bytes], set[bytes], bool]:
        """``(files, dirs, rescan)`` collected since the last drain."""
        with self._lock:
            files, dirs, rescan = self._files, self._dirs, self._rescan
            self._files, self._dirs, self._rescan = set(), set(), False
        return files, dirs, rescan

    def __len__(self) -> int:
        with self._lock:
            return len(self._files) + len(self._dirs)


class HintHandler(FileSystemEventHandler):
    """Records the paths that events name (absolute bytes paths)."""

    def __init__(self, hints: Hints) -> None:
        self.hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "closed"):
            path = event.src_path
        elif event.event_type == "moved":
            # A rename from an excluded temporary name to a real one is an
            # arrival of the real name (R-W5): only the destination matters.
            path = event.dest_path
        else:
            return  # deletions never produce anything (R-W7)
        if not path:
            return
        if event.is_directory and event.event_type == "modified":
            return  # file events name the files themselves
        self.hints.add(os.fsencode(path), is_dir=event.is_directory)


def default_observer_factory() -> BaseObserver:
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver()


def start_native(
    root: bytes, hints: Hints, factory: Callable[[], BaseObserver] = default_observer_factory
) -> BaseObserver:
    """Start an inotify observer on ``root`` (recursive, links not followed).

    Raises :class:`WatchLimitReached` when the kernel refuses the watches
    (ENOSPC: ``max_user_watches``; EMFILE: ``max_user_instances``).
    """
    observer = factory()
    try:
        observer.schedule(
            HintHandler(hints),
            root,  # type: ignore[arg-type]
            recursive=True,
            event_filter=EVENT_FILTER,
        )
        observer.start()
    except OSError as exc:
        stop_observer(observer)
        if exc.errno in (errno.ENOSPC, errno.EMFILE):
            raise WatchLimitReached(root, exc) from exc
        raise
    return observer


def stop_observer(observer: BaseObserver | None) -> None:
    if observer is None:
        return
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception:  # stopping must not take the watcher down
        log.exception("error while stopping a watchdog observer")


def observer_alive(observer: BaseObserver) -> bool:
    """The observer and all its emitters still run (an emitter stops, for
    instance, when its root folder is deleted)."""
    return observer.is_alive() and all(e.is_alive() for e in observer.emitters)


class OverflowHook(logging.Handler):
    """A logging handler on watchdog's overflow warning: calls ``callback``.

    The kernel queue is shared by every watch of the process, so an overflow
    cannot be attributed to one route: every native route rescans.
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.callback = callback
        self._saved: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in str(record.msg).lower():
                self.callback()
        except Exception:  # a logging handler must never raise
            self.handleError(record)

    def install(self) -> OverflowHook:
        for name in OVERFLOW_LOGGERS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level))
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)  # the warning must reach us
            logger.addHandler(self)
        return self

    def remove(self) -> None:
        for logger, level in self._saved:
            logger.removeHandler(self)
            logger.setLevel(level)
        self._saved.clear()
