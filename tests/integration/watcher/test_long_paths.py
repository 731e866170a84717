"""A source path longer than PATH_MAX (a 5,000-byte-deep tree) cannot be
opened by name by any program; the watcher used to skip it without a word
(issue #14 finding 12). It is now logged as a skipped path with the reason,
alerted once per route, and never becomes a job; the rest of the route is
delivered as usual."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ketter.watcher.scanner import PATH_MAX
from tests.integration.watcher.support import running, wait_for, write


class Notes:
    """A notifier that records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, route, message))


def deep_tree(root: Path, depth_bytes: int = 5_000) -> tuple[bytes, list[bytes]]:
    """Folders of 200-byte names below ``root`` until the path passes
    ``depth_bytes``, made relative to a descriptor (``mkdir`` by full path
    fails with ENAMETOOLONG); a file at every level past PATH_MAX / 2.
    Returns (relative path of the deepest folder, relative paths of files)."""
    name = b"d" * 200
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    rel = b""
    files: list[bytes] = []
    try:
        while len(os.fsencode(root)) + len(rel) < depth_bytes:
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rel = rel + b"/" + name if rel else name
            if len(rel) > PATH_MAX // 2:
                f = os.open(b"take.mov", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, b"x" * 100)
                os.close(f)
                files.append(rel + b"/take.mov")
    finally:
        os.close(fd)
    return rel, files


@pytest.mark.parametrize("watch", ["native", "polling"])
def test_paths_longer_than_path_max_are_reported_not_silent(
    make_env, watch: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env(ingest={"watch": watch})
    src = env.source("ingest")
    deepest, files = deep_tree(src)
    assert len(os.fsencode(src)) + len(deepest) >= 5_000
    reachable = [f for f in files if len(os.fsencode(src)) + 1 + len(f) < PATH_MAX]
    assert reachable and len(reachable) < len(files)
    write(src / "short.mov")
    notes = Notes()
    caplog.set_level(logging.INFO, logger="ketter.watcher")
    with running(env.watcher(notifier=notes)):
        wait_for(lambda: len(env.jobs()) >= 1 + len(reachable), message="the reachable files")
        wait_for(lambda: any(k == "path_skipped" for k, _, _ in notes.sent),
                 message="the skipped-path alert")
    paths = env.job_paths()
    assert os.fsencode(src / "short.mov") in paths
    assert all(len(p) < PATH_MAX for p in paths)
    assert len(paths) == 1 + len(reachable)
    skipped = [r for r in caplog.records if r.getMessage().startswith("path skipped: ")]
    assert skipped, "no log line for the unreachable paths"
    assert all("longer than PATH_MAX" in r.getMessage() for r in skipped)
    assert all(getattr(r, "ketter.route", None) == "ingest" for r in skipped)
    # Once per route, however many paths and scans.
    alerts = [n for n in notes.sent if n[0] == "path_skipped"]
    assert len(alerts) == 1 and alerts[0][1] == "ingest"
    assert "longer than PATH_MAX" in alerts[0][2]
