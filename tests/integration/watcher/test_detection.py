"""Detection end to end inside one process: real files, a real watcher loop
in a thread, the real job store and queue."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.integration.watcher.support import running, wait_for, write


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_new_files_become_one_job_each(make_env, watch: str) -> None:
    env = make_env(ingest={"watch": watch})
    src = env.source("ingest")
    write(src / "before.mov")  # present at start: found by the initial full scan
    with running(env.watcher()):
        write(src / "a.mov")
        write(src / "deep" / "er" / "b.wav")  # a new sub-folder (tracked by polling)
        write(src / ".DS_Store")
        write(src / "Thumbs.db")
        write(src / "~$draft.docx")
        wait_for(lambda: len(env.jobs()) >= 3, message="three jobs")
        time.sleep(0.8)  # past stable_seconds: an excluded name would be a job by now
    paths = env.job_paths()
    assert paths == sorted(os.fsencode(p) for p in (
        src / "a.mov", src / "before.mov", src / "deep" / "er" / "b.wav"))
    job = env.jobs()[0]
    assert job.state == "detected" and job.kind == "file" and job.mode == "copy"
    assert job.source_owner and job.source_inode and job.source_dev is not None
    assert env.queue.pending() == 3
    assert len(env.events("detect")) == 3
    assert len(env.events("watcher_started")) == 1 and len(env.events("watcher_stopped")) == 1


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_rename_from_excluded_temp_name_is_delivered(make_env, watch: str) -> None:
    env = make_env(ingest={"watch": watch})
    src = env.source("ingest")
    with running(env.watcher()) as watcher:
        part = write(src / "x.mov.part", b"partial" * 1000)
        with part.open("ab") as fh:
            fh.write(b"more")
        route = watcher.routes[0]
        # the temporary name is never tracked
        wait_for(lambda: route.last_scan is not None or route.mode == "native")
        assert b"x.mov.part" not in route.tracker
        part.rename(src / "x.mov")
        wait_for(lambda: env.jobs(), message="the renamed file's job")
    assert env.job_paths() == [os.fsencode(src / "x.mov")]


def test_two_thousand_files_at_once_exactly_once(make_env) -> None:
    env = make_env(ingest={"stable_seconds": "0.5s"})
    src = env.source("ingest")
    count = 2000
    with running(env.watcher()):
        for i in range(count):
            (src / f"f{i:05d}.wav").write_bytes(b"%d" % i)
        wait_for(lambda: len(env.jobs()) >= count, timeout=40, message="2000 jobs")
    jobs = env.jobs()
    assert len(jobs) == count
    assert len({bytes(j.source_path) for j in jobs}) == count
    assert len({j.source_key for j in jobs}) == count
    assert env.queue.pending() == count


def test_rescan_does_not_duplicate(make_env) -> None:
    env = make_env(ingest={})
    src = env.source("ingest")
    for i in range(20):
        write(src / f"{i}.mov")
    watcher = env.watcher()
    with running(watcher):
        wait_for(lambda: len(env.jobs()) == 20)
        for route in watcher.routes:
            route.request_rescan()
        wait_for(lambda: watcher.routes[0].last_full_scan is not None)
        first = watcher.routes[0].last_full_scan
        watcher.routes[0].request_rescan()
        wait_for(lambda: watcher.routes[0].last_full_scan != first, message="a rescan")
    assert len(env.jobs()) == 20
    assert env.queue.pending() == 20


def test_slow_writer_is_not_enqueued_before_it_finishes(make_env) -> None:
    # The writer pauses 0.5 s: 2.5 s of stability leaves it 2 s of delay on
    # a loaded machine before its pause could look like the end.
    env = make_env(ingest={"stable_seconds": "2.5s", "poll_interval": "0.2s"})
    src = env.source("ingest")
    target = src / "growing.mxf"
    finished = threading.Event()
    finished_at: list[float] = []

    def writer() -> None:
        with target.open("wb") as fh:
            for _ in range(10):  # 1 MiB every 0.5 s for 5 s
                fh.write(os.urandom(2**20))
                fh.flush()
                time.sleep(0.5)
        finished_at.append(time.time())
        finished.set()

    with running(env.watcher()):
        thread = threading.Thread(target=writer)
        thread.start()
        while not finished.is_set():
            assert env.jobs() == [], "a file still being written was enqueued"
            time.sleep(0.05)
        thread.join()
        jobs = wait_for(env.jobs, message="the finished file's job")
    assert len(jobs) == 1
    assert jobs[0].source_size == 10 * 2**20
    assert jobs[0].created_at >= finished_at[0]


def test_changed_file_is_a_new_version(make_env) -> None:
    env = make_env(ingest={})
    src = env.source("ingest")
    with running(env.watcher()):
        f = write(src / "a.mov", b"one")
        wait_for(lambda: len(env.jobs()) == 1)
        f.write_bytes(b"two, longer")
        wait_for(lambda: len(env.jobs()) == 2, message="a job for the new version")
    first, second = env.jobs()
    assert first.source_key != second.source_key
    assert second.source_size == len(b"two, longer")


def test_failed_key_is_not_reenqueued_by_rescans(make_env) -> None:
    from ketter.store.models import Job

    env = make_env(ingest={})
    src = env.source("ingest")
    write(src / "bad.mov")
    watcher = env.watcher()
    with running(watcher):
        wait_for(lambda: len(env.jobs()) == 1)
    Job.update(state="failed").execute()
    with running(env.watcher()) as second:
        wait_for(lambda: second.routes[0].last_full_scan is not None)
        second.routes[0].request_rescan()
        first_scan = second.routes[0].last_full_scan
        wait_for(lambda: second.routes[0].last_full_scan != first_scan)
        time.sleep(0.7)  # longer than stable_seconds: had it been tracked, it would be ready
    assert len(env.jobs()) == 1


def test_restart_catches_up_on_files_that_arrived_while_down(make_env) -> None:
    env = make_env(ingest={}, dub={"watch": "polling"})
    with running(env.watcher()):
        write(env.source("ingest") / "early.mov")
        wait_for(lambda: len(env.jobs()) == 1)
    # the watcher is down: files arrive unseen
    write(env.source("ingest") / "while-down.mov")
    write(env.source("dub") / "sub" / "while-down.wav")
    with running(env.watcher()):
        wait_for(lambda: len(env.jobs()) == 3, message="catch-up jobs")
    assert len(env.jobs("ingest")) == 2 and len(env.jobs("dub")) == 1
    assert env.queue.pending() == 3


def test_symlinks_are_not_candidates(make_env, tmp_path: Path) -> None:
    env = make_env(ingest={})
    src = env.source("ingest")
    outside = write(tmp_path / "outside.mov")
    os.symlink(outside, src / "link.mov")
    os.symlink(tmp_path, src / "linkdir")
    write(src / "real.mov")
    with running(env.watcher()):
        wait_for(lambda: env.jobs())
        time.sleep(0.8)
    assert env.job_paths() == [os.fsencode(src / "real.mov")]


def test_symlinked_root_is_watched_natively(make_env, tmp_path: Path) -> None:
    real = tmp_path / "real-src"
    real.mkdir()
    link = tmp_path / "linked-src"
    os.symlink(real, link)
    env = make_env(ingest={"source": link, "watch": "native"})
    with running(env.watcher()) as watcher:
        wait_for(lambda: watcher.routes[0].last_full_scan is not None)
        write(link / "a.mov")
        wait_for(env.jobs, message="job through a symlinked root")
    assert env.job_paths() == [os.fsencode(link / "a.mov")]
