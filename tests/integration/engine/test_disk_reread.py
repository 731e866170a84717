"""The verification re-read reaches the disk, not the page cache (R-T4)."""

from __future__ import annotations

import os

import pytest

from ketter.engine import TransferContext, TransferSpec, copy_and_verify, inspect_source, members

from .helpers import write

MiB = 1024 * 1024


def _fstype(path: bytes) -> str:
    best, kind = b"", "?"
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace(b"\\040", b" ")
            if (path == mnt or path.startswith(mnt.rstrip(b"/") + b"/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2].decode()
    return kind


def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


@pytest.mark.parametrize("size", [40 * MiB, 3 * MiB, 64 * 1024])  # threaded, inline, tiny
def test_verification_reads_every_byte_from_disk(bt: bytes, size: int) -> None:
    kind = _fstype(os.path.realpath(bt))
    if kind in ("tmpfs", "overlay", "ramfs", "zfs", "9p", "fuse"):
        pytest.skip(f"{kind}: /proc/self/io read_bytes cannot show disk reads here")
    src = bt + b"/src/f"
    write(src, os.urandom(size))
    with open(src, "rb") as f:
        os.fsync(f.fileno())
        while f.read(MiB):  # the source is now in the page cache
            pass
    spec = TransferSpec(checkpoint_bytes=4 * MiB)
    plan = inspect_source(spec, src)
    before = _read_bytes()
    copy_and_verify(spec, plan, bt + b"/dst/f", TransferContext())
    delta = _read_bytes() - before
    # The source came from the cache, so every byte read from storage is the
    # destination being re-read for verification.
    assert delta >= size, f"only {delta} of {size} bytes were read from the disk"


def _skip_without_disk_io(bt: bytes) -> None:
    kind = _fstype(os.path.realpath(bt))
    if kind in ("tmpfs", "overlay", "ramfs", "zfs", "9p", "fuse"):
        pytest.skip(f"{kind}: /proc/self/io read_bytes cannot show disk reads here")


def test_an_as_unit_folder_is_read_back_from_disk(bt: bytes) -> None:
    """Mid-size members (read back while the copy goes on) and small ones
    (read back after the one syncfs) both come from the disk."""
    _skip_without_disk_io(bt)
    sizes = [2 * MiB, 3 * MiB + 5, 1 * MiB, 300 * 1024, 4096]
    for i, size in enumerate(sizes):
        write(bt + b"/src/reel/f%d" % i, os.urandom(size))
    for i in range(len(sizes)):
        with open(bt + b"/src/reel/f%d" % i, "rb") as f:
            os.fsync(f.fileno())
            while f.read(MiB):  # the source is now in the page cache
                pass
    spec = TransferSpec(folders="as_unit", package_min_files=0)
    plan = inspect_source(spec, bt + b"/src/reel")
    before = _read_bytes()
    copy_and_verify(spec, plan, bt + b"/dst/reel", TransferContext())
    delta = _read_bytes() - before
    assert delta >= sum(sizes), f"only {delta} of {sum(sizes)} bytes were read from the disk"


def test_small_members_read_back_while_the_copy_goes_on_come_from_disk(
    bt: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small members flushed early (a background syncfs every FLUSH_FILES)
    and read back while the next ones are copied still come from the disk."""
    _skip_without_disk_io(bt)
    monkeypatch.setattr(members, "FLUSH_FILES", 8)
    flushes: list[int] = []
    early = members.MemberCopy._flush_early

    def counted(self: members.MemberCopy) -> None:
        flushes.append(self._unflushed_files)
        early(self)

    monkeypatch.setattr(members.MemberCopy, "_flush_early", counted)
    sizes = [4096 + i for i in range(100)]
    for i, size in enumerate(sizes):
        write(bt + b"/src/seq/f%03d" % i, os.urandom(size))
    for i in range(len(sizes)):
        with open(bt + b"/src/seq/f%03d" % i, "rb") as f:
            os.fsync(f.fileno())
            f.read()  # the source is now in the page cache
    spec = TransferSpec(folders="as_unit", package_min_files=0)
    plan = inspect_source(spec, bt + b"/src/seq")
    before = _read_bytes()
    copy_and_verify(spec, plan, bt + b"/dst/seq", TransferContext())
    delta = _read_bytes() - before
    assert len(flushes) >= 2, flushes  # read back before the final flush
    assert delta >= sum(sizes), f"only {delta} of {sum(sizes)} bytes were read from the disk"
