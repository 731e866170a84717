"""The stability rule with a fake clock: no sleeps."""

from __future__ import annotations

from ketter.watcher.identity import Version
from ketter.watcher.observers import Hints, OverflowHook, WatchLimitReached
from ketter.watcher.readiness import StabilityTracker


def v(size: int = 1, mtime: int = 1, inode: int = 1) -> Version:
    return Version(size=size, mtime_ns=mtime, inode=inode, dev=1, uid=0)


def tracker(**kw: float) -> StabilityTracker:
    return StabilityTracker(stable_seconds=kw.get("stable", 10.0),
                            poll_interval=kw.get("poll", 2.0),
                            capacity=int(kw.get("capacity", 100)))


def test_two_observations_across_the_quiet_period() -> None:
    t = tracker()
    t.add(b"f", "file", 0.0)
    assert not t.observe(b"f", v(), 0.0)  # first observation
    assert not t.observe(b"f", v(), 5.0)  # unchanged, but not for 10 s yet
    assert t.observe(b"f", v(), 10.0)


def test_one_observation_is_never_enough() -> None:
    t = tracker()
    t.add(b"f", "file", 0.0)
    assert not t.observe(b"f", v(), 100.0)


def test_any_change_restarts_the_quiet_period() -> None:
    t = tracker()
    t.add(b"f", "file", 0.0, v(size=1))
    for changed, at in ((v(size=2), 9.0), (v(size=2, mtime=2), 18.0), (v(size=2, mtime=2,
                                                                          inode=7), 27.0)):
        assert not t.observe(b"f", changed, at)
    assert not t.observe(b"f", v(size=2, mtime=2, inode=7), 36.0)
    assert t.observe(b"f", v(size=2, mtime=2, inode=7), 37.0)


def test_next_observation_is_at_the_end_of_the_quiet_period_or_the_poll() -> None:
    t = tracker(stable=1.0, poll=5.0)
    t.add(b"f", "file", 0.0, v())
    assert t.next_due() == 1.0  # not 5 s: the file could be ready at 1 s
    t2 = tracker(stable=10.0, poll=2.0)
    t2.add(b"f", "file", 0.0, v())
    assert t2.next_due() == 2.0


def test_an_observation_that_completes_the_quiet_period_makes_it_due_now() -> None:
    """A polling scan's lstat counts as an observation; when it is the one
    that completes the quiet period, the candidate is due at once, not a
    poll later (this cost up to poll_interval of detection latency)."""
    t = tracker(stable=1.0, poll=0.5)
    t.add(b"f", "file", 0.0, v())
    assert not t.observe(b"f", v(), 0.5)
    assert t.next_due() == 1.0
    assert t.observe(b"f", v(), 1.0)  # the scan at 1.0 sees it stable
    assert [k for k, _ in t.due(1.0)] == [b"f"]


def test_capacity_is_bounded_and_asks_for_a_rescan() -> None:
    t = tracker(capacity=4)
    for i in range(6):
        t.add(b"%d" % i, "file", 0.0)
    assert len(t) == 4 and t.overflowed
    assert not t.room()
    for i in range(3):
        t.discard(b"%d" % i)
    assert t.room()


def test_hints_are_bounded() -> None:
    hints = Hints(capacity=3)
    for i in range(10):
        hints.add(b"/x/%d" % i, is_dir=False)
    files, dirs, rescan = hints.drain()
    assert rescan and not files and not dirs
    hints.add(b"/x/a", is_dir=False)
    assert hints.drain() == ({b"/x/a"}, set(), False)


def test_a_hint_wakes_the_sleeping_watcher_loop() -> None:
    """The first file of a burst is observed at once, not after the loop's
    current wait (up to a second) runs out."""
    import threading
    import types

    from ketter.watcher.service import Watcher

    wake, stop = threading.Event(), threading.Event()
    hints = Hints(wake=wake)
    # A loop with nothing to do for an hour: only the hint can end its sleep.
    loop = types.SimpleNamespace(_wake=wake, _wait=lambda: 3600.0)
    sleeper = threading.Thread(target=Watcher._sleep, args=(loop, stop), daemon=True)
    sleeper.start()
    hints.add(b"/x/new.mxf", is_dir=False)
    sleeper.join(60)
    alive = sleeper.is_alive()
    stop.set()
    assert not alive, "the hint did not wake the loop"
    assert hints.drain() == ({b"/x/new.mxf"}, set(), False)


def test_overflow_hook_calls_back_and_uninstalls() -> None:
    import logging

    calls: list[int] = []
    hook = OverflowHook(lambda: calls.append(1)).install()
    logger = logging.getLogger("watchdog.observers.inotify_c")
    try:
        logger.warning("Inotify queue overflowed; filesystem events were lost")
        logger.warning("something else")
    finally:
        hook.remove()
    logger.warning("Inotify queue overflowed; filesystem events were lost")
    assert calls == [1]


def test_watch_limit_message_names_the_sysctl() -> None:
    import errno

    exc = WatchLimitReached(b"/mnt/x", OSError(errno.ENOSPC, "inotify watch limit reached"))
    assert "fs.inotify.max_user_watches" in str(exc) and "/mnt/x" in str(exc)
    exc = WatchLimitReached(b"/mnt/x", OSError(errno.EMFILE, "too many"))
    assert exc.sysctl == "fs.inotify.max_user_instances"
