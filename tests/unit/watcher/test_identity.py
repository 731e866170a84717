from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ketter.watcher.identity import folder_listing, folder_listing_sha256, stat_path


def test_listing_format_is_the_documented_one(tmp_path: Path) -> None:
    root = tmp_path / "PKG"
    (root / "b").mkdir(parents=True)
    (root / "a.wav").write_bytes(b"12345")
    (root / "b" / "c.mov").write_bytes(b"1")
    odd = os.fsencode(root) + b"/caf\xe9 \n.txt"
    with open(odd, "wb") as fh:
        fh.write(b"xy")
    os.symlink(root / "a.wav", root / "link.wav")  # links are skipped
    os.mkfifo(root / "fifo")  # so is anything not a regular file
    expected = hashlib.sha256()
    total = 0
    for rel in sorted([b"a.wav", b"b/c.mov", b"caf\xe9 \n.txt"]):
        st = os.lstat(os.fsencode(root) + b"/" + rel)
        expected.update(rel + b"\0" + b"%d" % st.st_size + b"\0" + b"%d" % st.st_mtime_ns + b"\n")
        total += st.st_size
    sha, count, size = folder_listing_sha256(os.fsencode(root))
    assert (sha, count, size) == (expected.hexdigest(), 3, total)
    assert folder_listing(os.fsencode(root), revalidate=True).sha256 == sha


def test_listing_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    before = folder_listing_sha256(os.fsencode(tmp_path))
    (tmp_path / "a").write_bytes(b"22")
    assert folder_listing_sha256(os.fsencode(tmp_path)) != before


def test_empty_folder(tmp_path: Path) -> None:
    assert folder_listing_sha256(os.fsencode(tmp_path)) == (
        hashlib.sha256().hexdigest(), 0, 0)


def test_revalidating_stat_matches_lstat(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    a = stat_path(os.fsencode(f), revalidate=True)
    b = os.lstat(f)
    assert (a.st_size, a.st_mtime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ino)
    os.mkfifo(tmp_path / "p")  # must not block on a FIFO
    assert stat_path(os.fsencode(tmp_path / "p"), revalidate=True).st_size == 0
