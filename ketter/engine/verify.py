"""Verification that reads the destination back from the disk (R-T4).

A re-read right after writing is served from the page cache and proves
nothing about the disk (doublecmd #923). Every range handed to the
:class:`TrailingVerifier` has already been written back (fdatasync) and is
evicted again right before it is read, so the bytes hashed here come from
storage. It runs in its own thread, trailing the copy one checkpoint
window behind, so on two cores the source hash and the destination hash
run side by side instead of one after the other.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from ketter.errors import ChecksumMismatch

from .hashing import BUF_SIZE, _Hasher, evict, hash_fd_from_disk, new_hasher, write_back
from .openfile import Ident, check_ident, open_regular, open_regular_stat, reopen
from .paths import show
from .results import FileHashes


class ReadBackVerifier(Protocol):
    """What the copy loop hands the ranges it wrote back to: the one declared
    read-back interface (:class:`TrailingVerifier` through the page cache,
    :class:`ketter.engine.direct.DirectVerifier` with ``O_DIRECT``). Whole
    files re-read after the copy (folder members, packages) go through
    :func:`read_back_file` instead."""

    #: Bytes hashed so far (read by the copy loop for progress).
    pos: int

    def submit(self, start: int, end: int) -> None:
        """Queue ``[start, end)``, already written back to the disk, in order."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for everything submitted; True when done."""
        ...

    def finish(self) -> str:
        """Wait for every range; the hex digest read back from the disk."""
        ...

    def close(self) -> None:
        """Stop the reader and close its descriptor (idempotent)."""
        ...


class TrailingVerifier:
    """Hashes written-back ranges of a file, in order, from the disk."""

    def __init__(
        self,
        path: bytes,
        algo: str,
        *,
        hasher: _Hasher | None = None,
        pos: int = 0,
        fd: int | None = None,
    ) -> None:
        self.path = path
        self.algo = algo
        self.hasher = hasher if hasher is not None else new_hasher(algo)
        self.pos = pos  # bytes hashed so far (read by the copy loop for progress)
        self._submitted = pos
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        # ``fd``: the copy's write descriptor. The read-back goes through it
        # (the same inode), never through the name: a temporary swapped in a
        # shared folder would otherwise be the one "verified" (#14).
        if fd is not None:
            self._fd = reopen(fd, path)
        else:
            self._fd = open_regular(path, "read the copy back", destination=True)
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._thread = threading.Thread(target=self._run, name="ketter-verify", daemon=True)
        self._thread.start()

    def submit(self, start: int, end: int) -> None:
        """Queue ``[start, end)``; it must already be written back to disk."""
        if start != self._submitted:
            raise AssertionError(f"verify ranges out of order: {start} != {self._submitted}")
        self._submitted = end
        if end > start:
            self._queue.put((start, end))

    def _run(self) -> None:
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            start, end = item
            try:
                evict(self._fd, start, end - start)
                pos = start
                while pos < end:
                    n = os.preadv(self._fd, [mv[: min(len(buf), end - pos)]], pos)
                    if n == 0:
                        raise ChecksumMismatch(
                            f"{show(self.path)} reads back shorter than written "
                            f"({pos} < {end} bytes)"
                        )
                    self.hasher.update(mv[:n])
                    pos += n
                    self.pos = pos
            except BaseException as e:  # reported by finish() in the caller's thread
                self._error = e

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for all submitted ranges; True when done."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self) -> str:
        """Wait for every queued range; the hex digest of all bytes verified."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.close()
        if self._error is not None:
            raise self._error
        return self.hasher.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def compare(path: bytes, algo: str, expected: str, got: str) -> None:
    if expected != got:
        raise ChecksumMismatch(
            f"{show(path)} reads back from disk with {algo} {got}, but the source "
            f"has {expected}; the copy is discarded and retried"
        )


def read_back_file(
    path: bytes,
    f: FileHashes,
    algo: str,
    buf: bytearray,
    progress: Callable[[int], None],
    *,
    wait_write_back: bool = False,
    ident: Ident | None = None,
    dir_fd: int | None = None,
) -> int:
    """Re-read one copied file from the disk and compare it with the
    source's checksum (``f``); returns its size. The file must be written
    back already, or ``wait_write_back`` waits for it: only clean pages can
    be evicted, and the re-read must not come from the page cache.
    ``progress(bytes_so_far)`` may raise to cancel the read.

    Opened without blocking and only if regular (a FIFO put under the name
    blocked the worker, #14 finding 4), and only if it is the inode written
    (``ident``, else ``f.ident``): a member of a temporary folder swapped
    away is not read back from its impostor. ``dir_fd``: ``path`` is
    relative to that folder."""
    fd, st = open_regular_stat(path, "read the copy back", destination=True, dir_fd=dir_fd)
    try:
        check_ident(fd, ident if ident is not None else f.ident, path, "copied file", st)
        if wait_write_back:
            write_back(fd, 0, 0, wait=True)
        if f.size < len(buf):
            # One read (and no MultiHash) for a small file: one more byte
            # than expected shows a file that reads back longer.
            evict(fd)
            # One call: a regular file reads short only at its end.
            mv = memoryview(buf)
            n = os.preadv(fd, [mv[: f.size + 1]], 0)
            h = new_hasher(algo)
            h.update(mv[:n])
            progress(n)
            digest = h.hexdigest()
        else:
            digests, n = hash_fd_from_disk(fd, (algo,), buf=buf, progress=progress)
            digest = digests[algo]
    finally:
        os.close(fd)
    if n != f.size or digest != f.hashes[algo]:
        raise ChecksumMismatch(
            f"{show(path)} reads back from disk differently from "
            f"the source ({algo}); the copy is discarded and retried"
        )
    return n
