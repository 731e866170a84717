"""The buffered copy loop: the calling thread reads and writes (both
release the GIL), a hasher thread feeds every checksum from the same
buffers, and each checkpoint window is written back and evicted before the
:class:`~ketter.engine.verify.TrailingVerifier` (or the direct one) re-reads
it from the disk. Buffers come from a fixed pool, so memory stays bounded
whatever the file size."""

from __future__ import annotations

import os
import queue
import threading

from ketter.errors import SourceChanged

from .context import TransferContext
from .copyio import source_checkpoint, write_all
from .hashing import BUF_SIZE, MultiHash, evict, write_back
from .oserrors import classify_oserror
from .paths import show
from .progress import Progress
from .source import FileEntry
from .spec import TransferSpec
from .verify import ReadBackVerifier

N_BUFFERS = 6  # 24 MiB in flight: enough to keep the hasher busy, bounded RSS
MIN_BUF_SIZE = 64 * 1024  # xxhash releases the GIL from 64 KiB


def hash_buffers(remaining: int | None) -> tuple[int, int]:
    """(size, count) of the buffered path's buffers for ``remaining`` bytes.

    Small files get small buffers: zeroing 6 × 4 MiB per file cost more
    than copying a 64 KiB file (fresh pages are slow on this kind of VM).
    """
    if remaining is None:
        return BUF_SIZE, N_BUFFERS
    # +1: one more byte than expected shows a source that grew.
    size = min(BUF_SIZE, max(MIN_BUF_SIZE, remaining + 1))
    return size, min(N_BUFFERS, 2 + remaining // size)


class _HashThread:
    """Consumes filled buffers, updates every checksum, returns the buffers."""

    def __init__(self, mh: MultiHash, remaining: int | None = None) -> None:
        self.mh = mh
        self.free: queue.Queue[bytearray] = queue.Queue()
        size, count = hash_buffers(remaining)
        for _ in range(count):
            self.free.put(bytearray(size))
        self.work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ketter-hash", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            buf, n = item
            if self.error is None:
                try:
                    self.mh.update(memoryview(buf)[:n])
                except BaseException as e:
                    self.error = e
            self.free.put(buf)

    def close(self) -> None:
        if self.thread.is_alive():
            self.work.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


def copy_buffered(
    spec: TransferSpec,
    ctx: TransferContext,
    src: bytes,
    sfd: int,
    e: FileEntry,
    out: bytes,
    ofd: int,
    mh: MultiHash,
    pos: int,
    verifier: ReadBackVerifier,
    progress: Progress,
) -> tuple[list[tuple[int, int]], int, bool]:
    """The buffered copy loop: read, write, hash in a second thread; each
    window is written back and evicted before the verifier reads it.
    Returns (windows not yet verified, end offset, faulted)."""
    os.lseek(sfd, pos, os.SEEK_SET)
    os.lseek(ofd, pos, os.SEEK_SET)
    hasher = _HashThread(mh, remaining=e.size - pos)
    try:
        window = pos
        pending: tuple[int, int] | None = None
        faulted = False
        src_f = os.fdopen(os.dup(sfd), "rb", buffering=0)
        with src_f:
            while True:
                buf = hasher.free.get()
                try:
                    n = src_f.readinto(buf) or 0
                except OSError as exc:
                    hasher.free.put(buf)
                    raise classify_oserror(exc, src, "read the source") from exc
                if n == 0:
                    hasher.free.put(buf)
                    break
                if pos + n > e.size:
                    hasher.free.put(buf)
                    raise SourceChanged(
                        f"source {show(src)} grew while it was being "
                        "copied; it is copied again once stable"
                    )
                write_all(ofd, memoryview(buf)[:n], out)
                hasher.work.put((buf, n))
                pos += n
                if pos - window >= spec.checkpoint_bytes:
                    pending = _checkpoint(ofd, out, window, pos, verifier, pending)
                    window = pos
                    faulted = source_checkpoint(ctx, src, sfd, e, faulted)
                    progress(pos, "copy", checkpoint=True)
                else:
                    progress(pos, "copy")
        if pos != e.size:
            raise SourceChanged(f"source {show(src)} shrank while it was being copied")
        hasher.close()
    finally:
        if hasher.thread.is_alive():
            hasher.work.put(None)
            hasher.thread.join()
    windows = [pending] if pending is not None else []
    return [*windows, (window, pos)], pos, faulted


def _checkpoint(
    ofd: int,
    out: bytes,
    start: int,
    end: int,
    verifier: ReadBackVerifier,
    pending: tuple[int, int] | None,
) -> tuple[int, int]:
    """Start writing ``[start, end)`` back and finish the window before it:
    wait for its write-back, drop it from the cache, hand it to the verifier.

    The disk writes one window while the copy fills the next, instead of the
    copy stalling on an fdatasync per window. Durability does not rest on
    these checkpoints: the whole file is fsynced before placement, and a
    resume checks the partial's prefix against the source, so a window that
    had not reached the disk at a power cut only costs a shorter resume.
    Returns the window now pending.
    """
    try:
        write_back(ofd, start, end - start, wait=False)
        if pending is not None:
            write_back(ofd, pending[0], pending[1] - pending[0], wait=True)
    except OSError as exc:
        raise classify_oserror(exc, out, "flush the temporary file") from exc
    if pending is not None:
        evict(ofd, pending[0], pending[1] - pending[0])
        verifier.submit(*pending)
    return (start, end)
