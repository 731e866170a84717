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

from ketter.errors import ChecksumMismatch

from .hashing import BUF_SIZE, _Hasher, evict, new_hasher
from .paths import show


class TrailingVerifier:
    """Hashes written-back ranges of a file, in order, from the disk."""

    def __init__(
        self, path: bytes, algo: str, *, hasher: _Hasher | None = None, pos: int = 0
    ) -> None:
        self.path = path
        self.algo = algo
        self.hasher = hasher if hasher is not None else new_hasher(algo)
        self.pos = pos  # bytes hashed so far (read by the copy loop for progress)
        self._submitted = pos
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
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
