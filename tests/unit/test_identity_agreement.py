"""The worker and the watcher must name a folder version identically, or every
as_unit folder the watcher detects would be refused as "changed"."""

from __future__ import annotations

import os
from pathlib import Path

from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.watcher.identity import folder_listing


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
