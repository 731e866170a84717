"""Lost and restored watches (R-W7), inotify overflow and watch limits."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from ketter.store.models import Heartbeat
from tests.integration.watcher.support import running, wait_for, write


def test_root_removed_and_recreated(make_env) -> None:
    env = make_env(ingest={"watch": "native"}, other={})
    src = env.source("ingest")
    for i in range(5):
        write(src / f"{i}.mov")
    with running(env.watcher()) as watcher:
        wait_for(lambda: len(env.jobs("ingest")) == 5)
        shutil.rmtree(src)
        wait_for(lambda: env.events("watch_lost", "ingest"), message="watch_lost")
        assert not watcher.routes[0].watching
        # the other route keeps detecting meanwhile
        write(env.source("other") / "b.mov")
        wait_for(lambda: env.jobs("other"), message="other route still detects")
        src.mkdir()
        wait_for(lambda: env.events("watch_restored", "ingest"), message="watch_restored")
        write(src / "after.mov")
        wait_for(lambda: len(env.jobs("ingest")) == 6, message="detection after restore")
    # the disappearance created nothing: 5 before, 1 after
    assert len(env.events("watch_lost", "ingest")) == 1
    assert json.loads(env.events("watch_lost", "ingest")[0].details)["reason"]
    assert bytes(env.jobs("ingest")[-1].source_path) == os.fsencode(src / "after.mov")


def test_unmounted_source_mount_pauses_only_that_route(make_env, tmp_path: Path) -> None:
    share = tmp_path / "share"  # a plain folder: not a mount point
    (share / "in").mkdir(parents=True)
    env = make_env(zone={"source": share / "in", "source_mount": share}, local={})
    write(share / "in" / "never.mov")
    # Written before the start, so the start's full scan counts it: the
    # heartbeat's files_watched is what the last full scan matched (a file
    # written later is detected at once but counted at the next full scan).
    write(env.source("local") / "yes.mov")
    with running(env.watcher()) as watcher:
        wait_for(lambda: env.jobs("local"), message="the healthy route detects")
        wait_for(lambda: env.events("watch_lost", "zone"))
        wait_for(lambda: Heartbeat.get_or_none(Heartbeat.component == "route:zone"))
        watcher.heartbeat()
    assert env.jobs("zone") == []
    details = json.loads(Heartbeat.get(Heartbeat.component == "route:zone").details)
    assert details["lost"] is True and "not mounted" in details["reason"]
    local = json.loads(Heartbeat.get(Heartbeat.component == "route:local").details)
    assert local["lost"] is False and local["files_watched"] == 1
    assert Heartbeat.get_or_none(Heartbeat.component == "watcher") is not None


def test_missing_root_at_start_is_lost_then_found(make_env, tmp_path: Path) -> None:
    late = tmp_path / "late"
    env = make_env(ingest={"source": late, "create": False})
    with running(env.watcher()):
        wait_for(lambda: env.events("watch_lost", "ingest"))
        write(late / "a.mov")
        wait_for(env.jobs, message="detection once the root exists")
    assert len(env.events("watch_restored", "ingest")) == 1


class _SilentObserver:
    """A native observer that delivers no events: only scans can detect."""

    def __init__(self) -> None:
        self.emitters: set[object] = set()
        self._alive = False

    def schedule(self, *args: object, **kwargs: object) -> None:
        pass

    def start(self) -> None:
        self._alive = True

    def stop(self) -> None:
        self._alive = False

    def is_alive(self) -> bool:
        return self._alive

    def join(self, timeout: float | None = None) -> None:
        pass


def test_inotify_overflow_schedules_a_rescan(make_env) -> None:
    env = make_env(ingest={"watch": "native"})
    src = env.source("ingest")
    watcher = env.watcher(observer_factory=_SilentObserver)
    watcher.start()
    try:
        watcher.tick()  # initial full scan
        write(src / "missed.mov")  # its events are "lost"
        for _ in range(3):
            watcher.tick()
        assert b"missed.mov" not in watcher.routes[0].tracker
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        watcher.tick()
        assert b"missed.mov" in watcher.routes[0].tracker
        wait_for(lambda: watcher.tick() or env.jobs(), message="job after the rescan")
    finally:
        watcher.close()
    assert env.job_paths() == [os.fsencode(src / "missed.mov")]


def test_watch_limit_falls_back_to_polling(make_env, caplog: pytest.LogCaptureFixture) -> None:
    class Refused(_SilentObserver):
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    env = make_env(ingest={"watch": "native"})
    with running(env.watcher(observer_factory=Refused)) as watcher:
        wait_for(lambda: watcher.routes[0].mode == "polling")
        write(env.source("ingest") / "a.mov")
        wait_for(env.jobs, message="detection by polling")
    assert any("fs.inotify.max_user_watches" in r.getMessage() for r in caplog.records)


@pytest.mark.root
def test_same_device_bind_mount_destination_pauses_and_resumes(tmp_path: Path) -> None:
    """Issue #14 finding 5: a destination share that is a bind mount on the
    same device, unmounted and mounted again while the watcher and workers
    run. The route pauses, then resumes by itself and delivers; `config
    check` agrees with the workers both times (one mount check: mountinfo).
    ``os.path.ismount`` called the mounted bind mount "not mounted", so the
    route never resumed and `config check` refused a good config."""
    from tests.integration.jobs.pausing import Node, mount, umount, unmounted_at_exit

    backing, share, src = tmp_path / "backing", tmp_path / "share", tmp_path / "src"
    for folder in (backing / "in", share, src):
        folder.mkdir(parents=True)
    with unmounted_at_exit(share):
        mount("--bind", str(backing), str(share))
        assert os.stat(share).st_dev == os.stat(tmp_path).st_dev  # same device
        node = Node(tmp_path, src, share / "in", destination_mount=str(share))
        check = node.ketter("config", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        node.start("watcher")
        node.start("workers")
        try:
            (src / "a.mov").write_bytes(b"a" * 4096)
            node.wait_for(lambda: (node.job("a.mov") or ())[1:2] == ("completed",), "a.mov")
            assert (backing / "in" / "a.mov").read_bytes() == b"a" * 4096

            umount(share)
            (src / "b.mov").write_bytes(b"b" * 4096)
            node.wait_for(node.paused, "the route to pause for the unmounted share")
            assert "not mounted" in node.route_status()[1]
            node.wait_for(lambda: (node.job("b.mov") or ())[1:3] == ("retry_wait", 0),
                          "b.mov to wait without using an attempt")
            check = node.ketter("config", "check")
            # The root is gone with the share: config check says so, and to mount it.
            assert check.returncode != 0 and "mount the share" in check.stderr, check.stderr
            assert not (share / "in").exists()  # nothing written to the bare folder

            mount("--bind", str(backing), str(share))
            node.wait_for(lambda: not node.paused(), "the route to resume by itself")
            node.wait_for(lambda: (node.job("b.mov") or ())[1:2] == ("completed",), "b.mov")
            assert (backing / "in" / "b.mov").read_bytes() == b"b" * 4096
            check = node.ketter("config", "check")
            assert check.returncode == 0, check.stdout + check.stderr
            assert len(node.events("route_paused")) == 1
            assert len(node.events("route_resumed")) == 1
        finally:
            node.stop()
