"""The worker and the watcher must name a folder version identically, or every
as_unit folder the watcher detects would be refused as "changed"."""

from __future__ import annotations

import os
from pathlib import Path

from ketter.engine.source import FileEntry, inspect_source
from ketter.engine.spec import TransferSpec
from ketter.watcher.identity import folder_listing
from tests.ctime import wait_past_ctime


def test_engine_and_watcher_folder_listing_agree(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    for rel in ("a/1.wav", "a/b/2.wav", "z.txt", "caf\udce9.mov"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100))
    os.symlink("/etc/passwd", root / "link")  # skipped by both
    plan = inspect_source(TransferSpec(folders="as_unit"), os.fsencode(root))
    listing = folder_listing(os.fsencode(root))
    assert plan.listing_sha256 == listing.sha256
    assert len(plan.files) == listing.file_count == 4


def test_watcher_and_engine_both_see_a_rewrite_with_mtime_restored(tmp_path: Path) -> None:
    """#14 finding 2: a rewrite in place that restores size and mtime with
    utime changes only the ctime; readiness and the engine's identity must
    both see it (and agree on what the version was)."""
    from ketter.engine.source import same_identity
    from ketter.watcher.identity import file_version

    path = tmp_path / "take.mov"
    path.write_bytes(b"a" * 4096)
    before = os.stat(path)
    plan = inspect_source(TransferSpec(), os.fsencode(path))
    assert plan.ctime_ns == before.st_ctime_ns
    wait_past_ctime(path)
    with open(path, "r+b") as f:
        f.write(b"b" * 4096)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    assert not file_version(after).same_as(file_version(before))
    entry = FileEntry(plan.name, plan.size, plan.mtime_ns, plan.mode, plan.ino, plan.ctime_ns)
    assert same_identity(before, entry) and not same_identity(after, entry)
