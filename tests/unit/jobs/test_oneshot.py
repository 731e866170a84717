"""The one-shot service (:mod:`ketter.jobs.oneshot`, issue #16 item 4) called
directly, as the CLI and the HTTP API call it: real files, a real job store
under tmp_path, the workers' JobRunner/Attempt path."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.audit.verify import Report, verify_db
from ketter.config import parse_config
from ketter.jobs.oneshot import ROUTE, OneshotOptions, Progress, run_oneshot
from ketter.node import Node
from ketter.runtime.signals import Shutdown
from ketter.store.models import Event, Job


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    (tmp_path / "audit.key").write_bytes(b"a-key-for-the-oneshot-test\n")
    config = parse_config(
        f"state_dir: {tmp_path / 'state'}\nnode: n1\n"
        f"audit: {{hmac_key_file: {tmp_path / 'audit.key'}}}\n",
        base_dir=str(tmp_path),
    )
    node = Node.from_config(config, "transfer")
    yield node
    node.close()


class Seen:
    """The progress the service reports (from the copy threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Progress] = []

    def __call__(self, p: Progress) -> None:
        with self.lock:
            self.seen.append(p)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_into_a_folder(node: Node, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    data = os.urandom(3 * 2**20 + 7)  # past the inline size: the progress path
    (tmp_path / "in" / "clip.mov").write_bytes(data)
    seen = Seen()
    result = run_oneshot(
        node,
        os.fsencode(tmp_path / "in" / "clip.mov"),
        os.fsencode(tmp_path / "out"),
        OneshotOptions(),
        progress=seen,
    )
    assert result.ok and result.not_started == 0 and result.unshipped is None
    (job,) = result.jobs
    assert job.state == "completed" and job.kind == "file" and job.size == len(data)
    assert job.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out" / "clip.mov").read_bytes() == data
    assert (tmp_path / "in" / "clip.mov").exists()  # a copy
    assert result.store == node.config.db_path
    # The row is the workers' row, on the one-off route, with its events.
    row = Job.get_by_id(job.id)
    assert row.route == ROUTE and row.state == "completed"
    names = [e.event for e in Event.select().where(Event.job_id == job.id).order_by(Event.id)]
    assert names[0] == "detect" and names[-1] == "complete", names
    assert seen.seen and all(p.total == len(data) for p in seen.seen)
    assert max(p.done for p in seen.seen) <= len(data)
    report = Report()
    assert node.store is not None
    verify_db(node.store, key=b"a-key-for-the-oneshot-test", marks=[], report=report)
    assert report.ok, report.problems


def test_a_per_file_folder_moves_file_by_file(node: Node, tmp_path: Path) -> None:
    src = tmp_path / "in" / "reel"
    (src / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    files = {"a.wav": os.urandom(1000), "b.wav": os.urandom(20000), "sub/c.wav": b"c" * 5}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    result = run_oneshot(
        node,
        os.fsencode(src),
        os.fsencode(tmp_path / "out"),
        OneshotOptions(mode="move", folders="per_file"),
    )
    assert result.ok, result.jobs
    # One job per file, in the order of the files, each verified.
    assert len(result.jobs) == len(files)
    assert [j.kind for j in result.jobs] == ["file"] * len(files)
    assert sorted(j.dest_display for j in result.jobs) == sorted(
        str(tmp_path / "out" / "reel" / rel) for rel in files
    )
    for rel, data in files.items():
        assert (tmp_path / "out" / "reel" / rel).read_bytes() == data
    # A move: the sources and their emptied folders are gone.
    assert not src.exists()
    assert sum(j.size for j in result.jobs) == sum(len(d) for d in files.values())


def test_a_conflict_fails_the_job_at_once(node: Node, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "clip.mov").write_bytes(b"new")
    (tmp_path / "out" / "clip.mov").write_bytes(b"old")
    result = run_oneshot(
        node,
        os.fsencode(tmp_path / "in" / "clip.mov"),
        os.fsencode(tmp_path / "out"),
        OneshotOptions(conflict="fail"),
    )
    assert not result.ok
    (job,) = result.jobs
    # A permanent error: the job fails at once, with the reason.
    assert job.state == "failed" and "already exists" in (job.error or "")
    assert (tmp_path / "out" / "clip.mov").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.mov"]  # no temporary left


def test_a_stop_before_the_start_starts_nothing(node: Node, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mov").write_bytes(b"x" * 10)
    stop = Shutdown()
    stop.request()
    result = run_oneshot(
        node,
        os.fsencode(tmp_path / "in" / "clip.mov"),
        os.fsencode(tmp_path / "out"),
        OneshotOptions(),
        shutdown=stop,
    )
    assert not result.ok and result.jobs == [] and result.not_started == 1
    assert Job.select().count() == 0
