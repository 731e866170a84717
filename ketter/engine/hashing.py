"""Checksums and the kernel calls that make a re-read come from the disk.

All checksums of a file come from one read (R-T2): a :class:`MultiHash` is
fed each buffer once and updates every algorithm. ``hashlib`` releases the
GIL for buffers above 2 KiB and ``xxhash`` above 64 KiB, so hashing in a
second thread overlaps the I/O of the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import xxhash

from ketter.runtime.flush import grouped_fsync

BUF_SIZE = 4 * 1024 * 1024


_local = threading.local()


def thread_buffer() -> bytearray:
    """This thread's reusable 1 MiB buffer for whole small files (a fresh
    buffer per file costs page faults and zeroing in the kernel)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(1024 * 1024)
    return buf


class ReadCancelled(Exception):
    """Raised inside a reader thread whose caller has stopped (a stop signal
    from ``ctx.progress``, or a failure on the other side): ends the read."""


class _Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Any: ...


def new_hasher(algo: str) -> _Hasher:
    if algo == "sha256":
        return hashlib.sha256()
    if algo == "xxh128":
        return xxhash.xxh3_128()
    if algo == "xxh64":
        return xxhash.xxh64()
    if algo == "md5":
        # Not for security: delivery manifests of some clients still want it.
        return hashlib.md5(usedforsecurity=False)
    raise ValueError(f"unknown checksum {algo!r}")


class MultiHash:
    """Several checksums fed from the same buffers."""

    def __init__(self, algos: Iterable[str]) -> None:
        self.hashers = {a: new_hasher(a) for a in algos}

    def update(self, data: Any) -> None:
        for h in self.hashers.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self.hashers.items()}


# --- kernel helpers -------------------------------------------------------

_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def evict(fd: int, offset: int = 0, length: int = 0) -> None:
    """Drop clean cached pages of a range so the next read hits the storage.

    Only clean pages are dropped: call it after the range was written back
    (fdatasync / sync_file_range with WAIT_AFTER), or it is a silent no-op
    and the "verification" would read the page cache (doublecmd #923).
    """
    # Advisory; a filesystem may not support it (some FUSE), then the re-read
    # test in tests/integration/engine/test_disk_reread.py is what notices.
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


def write_back(fd: int, offset: int, length: int, *, wait: bool) -> None:
    """Start (``wait=False``) or finish writing back a range of a file.

    Starting write-back of the previous window while filling the next keeps
    the disk busy without a whole-file fdatasync stall. Falls back to
    ``fdatasync`` when ``sync_file_range`` is missing (non-Linux, some FUSE).
    """
    flags = _SYNC_FILE_RANGE_WRITE
    if wait:
        flags |= _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WAIT_AFTER
    try:
        fn = _lib().sync_file_range
    except AttributeError:
        if wait:
            os.fdatasync(fd)
        return
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    if fn(fd, offset, length, flags) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE):
            raise OSError(err, os.strerror(err))
        if wait:  # unsupported here: the whole-file flush is always correct
            os.fdatasync(fd)


def syncfs(fd: int) -> bool:
    """Flush the whole filesystem holding ``fd``; False when unavailable.

    One syncfs after writing thousands of small files replaces thousands of
    fsyncs (about 1,500/s on one stream here) with one flush.
    """
    try:
        fn = _lib().syncfs
    except AttributeError:
        return False
    if fn(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def fsync_dir(path: bytes) -> None:
    """Make a rename or unlink in ``path`` durable. Concurrent calls for one
    folder share a flush (group commit, :mod:`ketter.runtime.flush`)."""
    grouped_fsync(path, lambda: _fsync_dir(path))


def _fsync_dir(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_folder_fd(fd)
    finally:
        os.close(fd)


def fsync_folder_fd(fd: int) -> None:
    """fsync an open folder: the flush after a rename or unlink in it.

    Some network filesystems refuse fsync on folders (EINVAL); their server
    commits folder operations synchronously anyway, so that is not an error.
    Every other error is raised: the operation is not durable.
    """
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise


def hash_fd_from_disk(
    fd: int,
    algos: Iterable[str],
    *,
    start: int = 0,
    length: int | None = None,
    buf: bytearray | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, str], int]:
    """Hash an already-written-back file from storage; returns (digests, bytes).

    Evicts the range first so the read is served by the disk, not the cache.
    ``progress(bytes_so_far)`` is called after every buffer; whatever it
    raises (a stop signal, a cancellation) ends the read.
    """
    mh = MultiHash(algos)
    evict(fd, start, length or 0)
    buf = buf if buf is not None else bytearray(BUF_SIZE)
    mv = memoryview(buf)
    pos, end = start, (start + length if length is not None else None)
    total = 0
    while end is None or pos < end:
        want = len(buf) if end is None else min(len(buf), end - pos)
        n = os.preadv(fd, [mv[:want]], pos)
        if n == 0:
            break
        mh.update(mv[:n])
        pos += n
        total += n
        if progress is not None:
            progress(total)
    return mh.hexdigests(), total
