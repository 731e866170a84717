"""Ready markers and folders delivered as one unit."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.integration.watcher.support import running, set_mtime, wait_for, write


def _touch(path: Path) -> None:
    path.touch()
    os.utime(path, None)


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_marker_first_file_later_waits_for_a_fresh_marker(make_env, watch: str) -> None:
    env = make_env(ingest={"ready_marker": ".done", "watch": watch})
    src = env.source("ingest")
    with running(env.watcher()) as watcher:
        marker = write(src / "x.mov.done", b"")
        set_mtime(marker, 60)  # written before the file: it says nothing about it
        write(src / "x.mov", b"content")
        route = watcher.routes[0]
        # the file becomes stable, yet the stale marker keeps it waiting
        wait_for(lambda: route.tracker._pending.get(b"x.mov") is not None
                 and route.tracker._pending[b"x.mov"].seen >= 3, message="stable file")
        assert env.jobs() == []
        _touch(marker)
        wait_for(env.jobs, message="job once the marker is fresh")
    assert env.job_paths() == [os.fsencode(src / "x.mov")]  # never the marker itself


def test_stale_marker_from_an_older_version(make_env) -> None:
    env = make_env(ingest={"ready_marker": ".done"})
    src = env.source("ingest")
    f = write(src / "x.mov", b"v1")
    set_mtime(f, 30)
    write(src / "x.mov.done", b"")
    with running(env.watcher()) as watcher:
        wait_for(lambda: len(env.jobs()) == 1)
        # a new version arrives; the old marker (copy routes keep markers) is stale
        f.write_bytes(b"version two")
        route = watcher.routes[0]
        wait_for(lambda: route.tracker._pending.get(b"x.mov") is not None
                 and route.tracker._pending[b"x.mov"].seen >= 3, message="stable v2")
        assert len(env.jobs()) == 1
        _touch(src / "x.mov.done")
        wait_for(lambda: len(env.jobs()) == 2, message="v2 job after a fresh marker")
    assert env.jobs()[1].source_size == len(b"version two")


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_folder_as_unit_with_a_slow_writer_inside(make_env, watch: str) -> None:
    # The writer pauses 0.4 s: 2.5 s of stability leaves it 2 s of delay on
    # a loaded machine before its pause could look like the end.
    env = make_env(ingest={"folders": "as_unit", "stable_seconds": "2.5s", "watch": watch})
    src = env.source("ingest")
    pkg = src / "PKG_001"
    done = threading.Event()
    done_at: list[float] = []

    def writer() -> None:
        (pkg / "audio").mkdir(parents=True)
        for i in range(6):  # a new file, then appends, every 0.4 s
            with (pkg / "audio" / f"track{i}.wav").open("wb") as fh:
                fh.write(b"a" * 1000)
            with (pkg / "video.mov").open("ab") as fh:
                fh.write(b"v" * 1000)
            time.sleep(0.4)
        done_at.append(time.time())
        done.set()

    with running(env.watcher()):
        write(src / "loose.mov")  # a top-level file on an as_unit route: a file job
        thread = threading.Thread(target=writer)
        thread.start()
        while not done.is_set():
            assert all(j.kind == "file" for j in env.jobs()), "folder enqueued while written"
            time.sleep(0.05)
        thread.join()
        wait_for(lambda: len(env.jobs()) == 2, message="folder job")
    by_kind = {j.kind: j for j in env.jobs()}
    folder = by_kind["folder"]
    assert bytes(folder.source_path) == os.fsencode(pkg)
    assert folder.file_count == 7 and folder.size == 7 * 1000 + 5 * 1000
    assert folder.created_at >= done_at[0]
    assert bytes(by_kind["file"].source_path) == os.fsencode(src / "loose.mov")


def test_folder_marker_beside_the_folder(make_env) -> None:
    env = make_env(ingest={"folders": "as_unit", "ready_marker": ".ready"})
    src = env.source("ingest")
    write(src / "PKG" / "a.wav")
    with running(env.watcher()) as watcher:
        route = watcher.routes[0]
        wait_for(lambda: route.tracker._pending.get(b"PKG") is not None
                 and route.tracker._pending[b"PKG"].seen >= 3, message="stable folder")
        assert env.jobs() == []
        write(src / "PKG.ready", b"")
        wait_for(env.jobs, message="folder job after its marker")
    assert [j.kind for j in env.jobs()] == ["folder"]


def test_empty_folder_is_not_delivered(make_env) -> None:
    env = make_env(ingest={"folders": "as_unit"})
    src = env.source("ingest")
    (src / "EMPTY").mkdir()
    with running(env.watcher()) as watcher:
        route = watcher.routes[0]
        wait_for(lambda: route.last_full_scan is not None)
        wait_for(lambda: b"EMPTY" not in route.tracker, message="empty folder dropped")
        write(src / "EMPTY" / "now.wav")
        wait_for(env.jobs, message="folder job once it has a file")
    assert env.jobs()[0].file_count == 1
