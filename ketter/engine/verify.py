"""Verification that reads the destination back from the disk (R-T4).

A re-read right after writing is served from the page cache and proves
nothing about the disk (doublecmd #923). Every range handed to the
:class:`TrailingVerifier` has already been written back (fdatasync) and is
evicted again right before it is read, so the bytes hashed here come from
storage. It runs in its own threads (a reader and a hasher), trailing the
copy one checkpoint window behind, so on two cores the source hash and the
destination hash run side by side instead of one after the other.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading

from ketter.errors import ChecksumMismatch

from .hashing import BUF_SIZE, _Hasher, evict, new_hasher
from .paths import show

#: Read-ahead of the verification: the reader fills one buffer while the
#: hasher works on another, so the disk always has a read queued.
N_VERIFY_BUFFERS = 3


class TrailingVerifier:
    """Hashes written-back ranges of a file, in order, from the disk.

    Two threads: a reader evicts each range and reads it into a small pool
    of buffers, a hasher consumes them in order. With one thread doing
    both, the disk sat idle while a buffer was hashed and the hash waited
    for each read: the re-read of 2 GiB trailed the copy by far more than
    one window.
    """

    def __init__(
        self, path: bytes, algo: str, *, hasher: _Hasher | None = None, pos: int = 0
    ) -> None:
        self.path = path
        self.algo = algo
        self.hasher = hasher if hasher is not None else new_hasher(algo)
        self.pos = pos  # bytes hashed so far (read by the copy loop for progress)
        self._submitted = pos
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._filled: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._reader = threading.Thread(target=self._read, name="ketter-verify", daemon=True)
        self._hashing = threading.Thread(target=self._hash, name="ketter-verify-hash", daemon=True)
        self._reader.start()
        self._hashing.start()

    def submit(self, start: int, end: int) -> None:
        """Queue ``[start, end)``; it must already be written back to disk."""
        if start != self._submitted:
            raise AssertionError(f"verify ranges out of order: {start} != {self._submitted}")
        self._submitted = end
        if end > start:
            self._queue.put((start, end))

    def _buffer(self, made: list[int]) -> bytearray | None:
        """A free buffer (allocated lazily: a short file needs one), or None
        once the hasher has failed."""
        while True:
            try:
                return self._free.get_nowait()
            except queue.Empty:
                pass
            if made[0] < N_VERIFY_BUFFERS:
                made[0] += 1
                return bytearray(BUF_SIZE)
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                if self._error is not None or not self._hashing.is_alive():
                    return None

    def _read(self) -> None:
        made = [0]
        try:
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
                        buf = self._buffer(made)
                        if buf is None:
                            break
                        n = os.preadv(self._fd, [memoryview(buf)[: min(len(buf), end - pos)]], pos)
                        if n == 0:
                            self._free.put(buf)
                            raise ChecksumMismatch(
                                f"{show(self.path)} reads back shorter than written "
                                f"({pos} < {end} bytes)"
                            )
                        self._filled.put((buf, n))
                        pos += n
                except BaseException as e:  # reported by finish() in the caller's thread
                    if self._error is None:
                        self._error = e
        finally:
            self._filled.put(None)

    def _hash(self) -> None:
        while True:
            item = self._filled.get()
            if item is None:
                return
            buf, n = item
            if self._error is None:
                try:
                    self.hasher.update(memoryview(buf)[:n])
                    self.pos += n
                except BaseException as e:
                    self._error = e
            self._free.put(buf)

    def _join(self, timeout: float | None = None) -> bool:
        self._queue.put(None)
        self._reader.join(timeout)
        if self._reader.is_alive():
            return False
        self._hashing.join(timeout)
        return not self._hashing.is_alive()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for all submitted ranges; True when done."""
        return self._join(timeout)

    def finish(self) -> str:
        """Wait for every queued range; the hex digest of all bytes verified."""
        self._join()
        self.close()
        if self._error is not None:
            raise self._error
        return self.hasher.hexdigest()

    def close(self) -> None:
        self._join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def compare(path: bytes, algo: str, expected: str, got: str) -> None:
    if expected != got:
        raise ChecksumMismatch(
            f"{show(path)} reads back from disk with {algo} {got}, but the source "
            f"has {expected}; the copy is discarded and retried"
        )
