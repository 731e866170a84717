"""The read-back of an as_unit folder's mid-size members (FileTrail) on
real files: it compares what the disk holds, says which file differs, and
stops when asked."""

from __future__ import annotations

import os

import pytest

from ketter.engine.hashing import MultiHash, ReadCancelled
from ketter.engine.members import FileTrail
from ketter.engine.results import FileHashes
from ketter.errors import ChecksumMismatch

from .helpers import write

MiB = 1024 * 1024


def _hashes(relpath: bytes, data: bytes) -> FileHashes:
    mh = MultiHash(("sha256", "xxh128"))
    mh.update(data)
    return FileHashes(relpath, len(data), mh.hexdigests())


@pytest.mark.parametrize("algo", ["sha256", "xxh128"])
def test_a_member_that_reads_back_differently_fails_naming_it(bt: bytes, algo: str) -> None:
    good, bad = os.urandom(2 * MiB), bytearray(os.urandom(3 * MiB))
    write(bt + b"/dst/good", good)
    expected = _hashes(b"bad \xff", bytes(bad))
    bad[MiB] ^= 1  # one bit differs on the destination
    write(bt + b"/dst/bad \xff", bytes(bad))
    trail = FileTrail(bt + b"/dst", algo)
    try:
        trail.submit(_hashes(b"good", good))
        trail.submit(expected)
        with pytest.raises(ChecksumMismatch, match=r"bad \\xff.*reads back from disk differently"):
            trail.finish()
    finally:
        trail.close()


def _read_back_one(
    bt: bytes, on_disk: bytes, source: bytes, exc: type[BaseException], *, stopped: bool = False
) -> None:
    """Write ``on_disk``, read it back against ``source``'s checksums:
    :meth:`FileTrail.finish` must raise ``exc``."""
    write(bt + b"/dst/f", on_disk)
    trail = FileTrail(bt + b"/dst", "sha256")
    if stopped:
        trail.stop.set()  # what close() does when the copy fails or is stopped
    try:
        trail.submit(_hashes(b"f", source))
        with pytest.raises(exc):
            trail.finish()
    finally:
        trail.close()


def test_a_member_that_reads_back_shorter_fails(bt: bytes) -> None:
    data = os.urandom(2 * MiB)
    _read_back_one(bt, data[:-1], data, ChecksumMismatch)


def test_identical_members_pass(bt: bytes) -> None:
    trail = FileTrail(bt + b"/dst", "xxh128")
    try:
        for i in range(6):
            data = os.urandom(MiB + i)
            write(bt + b"/dst/f%d" % i, data)
            trail.submit(_hashes(b"f%d" % i, data))
        trail.finish()
    finally:
        trail.close()


def test_a_stopped_trail_reads_nothing_more(bt: bytes) -> None:
    data = os.urandom(MiB)
    _read_back_one(bt, data, data, ReadCancelled, stopped=True)
