"""``O_DIRECT`` copy of a large file: no page-cache copies on either side.

The buffered path copies every byte three times through the kernel (source
page cache → user buffer, user buffer → destination page cache, and the
read-back page cache → user buffer): about 3.8 of its ~8 CPU-seconds for
2 GiB on two vCPU. Here the source is read with ``O_DIRECT`` into
page-aligned buffers (anonymous ``mmap``), hashed, and the same buffers are
written to the temporary with ``O_DIRECT``; the read-back is ``O_DIRECT``
too, so nothing needs writing back or evicting before it, and it cannot be
served by the page cache. One direct request at a time is latency-bound on
a virtual disk, so :class:`DirectPipe` and :class:`DirectVerifier` keep
several requests in flight (reader and writer threads; ``preadv`` and
``pwritev`` release the GIL).

Everything here is per file and optional: a filesystem that refuses
``O_DIRECT`` (on ``open`` or at the first request, ``EINVAL``) makes
:func:`open_direct` return None or :meth:`DirectPipe.start` raise
:class:`Unsupported` before anything was hashed, and the caller uses the
buffered path. ``KETTER_DIRECT_IO=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import queue
import threading
from collections.abc import Callable

from ketter.errors import ChecksumMismatch, SourceChanged

from .hashing import BUF_SIZE, _Hasher
from .openfile import open_regular, reopen
from .oserrors import classify_oserror
from .paths import show

#: Offsets, lengths and buffer addresses of direct requests are multiples of
#: this (the largest logical block size in use; 512-byte devices accept it).
ALIGN = 4096
CHUNK = BUF_SIZE
#: Source buffers (32 MiB): reads and writes in flight plus the one being hashed.
N_BUFFERS = 8
N_READERS = 2
N_WRITERS = 2
N_VERIFY_READERS = 2
#: Errors that mean "no O_DIRECT here" (at open or at the first request).
_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def pipe_buffers(chunks: int) -> int:
    """Source buffers a :class:`DirectPipe` of ``chunks`` chunks allocates."""
    return min(N_BUFFERS, chunks + 1)


class Unsupported(Exception):
    """The filesystem refused a direct request before anything was copied."""


def enabled() -> bool:
    return os.environ.get("KETTER_DIRECT_IO", "1") != "0"


def open_direct(fd: int, flags: int) -> int | None:
    """A second descriptor with ``O_DIRECT`` on the file open as ``fd`` (the
    same inode, whatever happened to its path since), or None when the
    filesystem refuses it."""
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


def cached(fd: int, pos: int) -> bool:
    """True when the block at ``pos`` is in the page cache (a source just
    written by another program): then a buffered read is the faster one."""
    flag = getattr(os, "RWF_NOWAIT", 0)
    if not flag:
        return False
    try:
        return os.preadv(fd, [bytearray(ALIGN)], pos - pos % ALIGN, flag) > 0
    except OSError:
        return False  # EAGAIN: not cached; anything else: assume not


HUGE = 2 * 1024 * 1024


def _aligned_buffer(size: int) -> memoryview:
    """``size`` bytes of anonymous memory, page-aligned; on transparent huge
    pages where the kernel allows it. A direct request is split at every
    discontiguous page (virtio-blk takes at most ``max_segments``, 254 here,
    per request): with 4 KiB pages a 4 MiB read becomes four 1 MiB requests,
    with 2 MiB pages it stays one."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return memoryview(mmap.mmap(-1, size))
    m = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    off = -addr % HUGE
    return memoryview(m)[off : off + size]


def _read_full(fd: int, mv: memoryview, want: int, off: int) -> int:
    """Direct read of up to ``len(mv)`` bytes; short only at the end of file."""
    got = 0
    while got < want:
        n = os.preadv(fd, [mv[got:]], off + got)
        if n == 0:
            break
        got += n
        if got % ALIGN:
            break  # end of file (a further direct read would be unaligned)
    return got


class DirectPipe:
    """Reads ``[start, end)`` of the source with ``O_DIRECT`` and writes the
    same buffers to the destination, several requests in flight; hands the
    chunks to the caller in order for hashing (:meth:`get`, :meth:`done`).

    ``start`` must be a multiple of :data:`ALIGN`. The last chunk's unaligned
    tail (under 4 KiB) is written through ``ofd`` (buffered); it is flushed by
    the caller's final fsync like the rest of the file's metadata.
    """

    def __init__(
        self,
        sdfd: int,
        odfd: int,
        ofd: int,
        src: bytes,
        out: bytes,
        start: int,
        end: int,
    ) -> None:
        self.sdfd, self.odfd, self.ofd = sdfd, odfd, ofd
        self.src, self.out = src, out
        self.begin, self.end = start, end
        self.count = (end - start + CHUNK - 1) // CHUNK
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(pipe_buffers(self.count)):
            self._free.put(_aligned_buffer(CHUNK))
        self._cv = threading.Condition()
        self._claim = threading.Lock()  # chunk index and buffer, taken in order
        self._next = 0
        self._read: dict[int, tuple[memoryview, int]] = {}
        self._refs: dict[int, int] = {}
        self._written: set[int] = set()
        self._prefix = 0  # chunks written contiguously from the start
        self._writes: queue.Queue[tuple[int, memoryview, int] | None] = queue.Queue()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    # --- the caller's side -------------------------------------------------

    def start(self) -> None:
        """Copy the first chunk in this thread, so a filesystem that refuses
        direct requests says so before anything is hashed (raises
        :class:`Unsupported`; nothing was written then), then start the
        reader and writer threads for the rest."""
        buf = self._take()
        try:
            n = self._read_chunk(0, buf)
        except OSError as exc:
            self._free.put(buf)
            if exc.errno in _UNSUPPORTED:
                raise Unsupported() from exc
            raise classify_oserror(exc, self.src, "read the source") from exc
        try:
            self._write_chunk(0, buf, n)
        except OSError as exc:
            self._free.put(buf)
            if exc.errno in _UNSUPPORTED:
                raise Unsupported() from exc
            raise classify_oserror(exc, self.out, "write the temporary file") from exc
        self._next = 1
        self._refs[0] = 1
        self._read[0] = (buf, n)
        self._mark_written(0)
        for i in range(N_READERS):
            self._spawn(self._reader, f"ketter-dread{i}")
        for i in range(N_WRITERS):
            self._spawn(self._writer, f"ketter-dwrite{i}")

    def get(self, i: int) -> memoryview:
        """The bytes of chunk ``i`` (in order); call :meth:`done` after."""
        with self._cv:
            while i not in self._read:
                self._raise()
                self._cv.wait(0.5)
            buf, n = self._read[i]
        return memoryview(buf)[:n]

    def done(self, i: int) -> None:
        """The caller has hashed chunk ``i``."""
        with self._cv:
            buf, _ = self._read.pop(i)
        self._release(i, buf)

    def written_to(self) -> int:
        """Offset up to which every byte has been written; raises the first
        error of a reader or writer."""
        with self._cv:
            self._raise()
        return self.contiguous()

    def contiguous(self) -> int:
        """Offset up to which every byte has been written (never raises)."""
        with self._cv:
            return min(self.begin + self._prefix * CHUNK, self.end)

    def finish(self) -> None:
        """Wait until every chunk is written; raises the first error."""
        with self._cv:
            while self._prefix < self.count:
                self._raise()
                self._cv.wait(0.5)
            self._raise()

    def close(self) -> None:
        """Stop and join the threads (after :meth:`finish`, or on an error)."""
        self._stop.set()
        for _ in range(N_WRITERS):
            self._writes.put(None)
        for t in self._threads:
            t.join()

    def close_fds(self) -> None:
        """Close the two direct descriptors (after :meth:`close`)."""
        for fd in (self.sdfd, self.odfd):
            if fd >= 0:
                os.close(fd)
        self.sdfd = self.odfd = -1

    # --- threads -----------------------------------------------------------

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, exc: BaseException) -> None:
        with self._cv:
            if self.error is None:
                self.error = exc
            self._cv.notify_all()
        self._stop.set()

    def _take(self) -> memoryview:
        while True:
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    raise
                continue

    def _release(self, i: int, buf: memoryview) -> None:
        with self._cv:
            self._refs[i] -= 1
            if self._refs[i]:
                return
            del self._refs[i]
        self._free.put(buf)

    def _mark_written(self, i: int) -> None:
        with self._cv:
            self._written.add(i)
            while self._prefix in self._written:
                self._written.discard(self._prefix)
                self._prefix += 1
            self._cv.notify_all()

    def _read_chunk(self, i: int, buf: memoryview) -> int:
        off = self.begin + i * CHUNK
        want = min(CHUNK, self.end - off)
        # The last chunk asks for one byte more (rounded up to a block): a
        # longer read shows a source that grew.
        ask = CHUNK if want == CHUNK else min(CHUNK, -(-(want + 1) // ALIGN) * ALIGN)
        n = _read_full(self.sdfd, memoryview(buf)[:ask], ask, off)
        if n > want:
            raise SourceChanged(
                f"source {show(self.src)} grew while it was being copied; "
                "it is copied again once stable"
            )
        if n < want:
            raise SourceChanged(f"source {show(self.src)} shrank while it was being copied")
        return n

    def _write_chunk(self, i: int, buf: memoryview, n: int) -> None:
        off = self.begin + i * CHUNK
        mv = memoryview(buf)
        aligned = n - n % ALIGN
        done = 0
        while done < aligned:
            done += os.pwritev(self.odfd, [mv[done:aligned]], off + done)
        while done < n:  # the unaligned tail of the file, buffered
            done += os.pwrite(self.ofd, mv[done:n], off + done)

    def _reader(self) -> None:
        try:
            while not self._stop.is_set():
                with self._claim:
                    i = self._next
                    if i >= self.count:
                        return
                    self._next += 1
                    buf = self._take()
                try:
                    n = self._read_chunk(i, buf)
                except OSError as exc:
                    raise classify_oserror(exc, self.src, "read the source") from exc
                with self._cv:
                    self._refs[i] = 2
                    self._read[i] = (buf, n)
                    self._cv.notify_all()
                self._writes.put((i, buf, n))
        except queue.Empty:
            return  # stopped while waiting for a buffer
        except BaseException as exc:
            self._fail(exc)

    def _writer(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            i, buf, n = item
            if self._stop.is_set():
                continue
            try:
                self._write_chunk(i, buf, n)
            except OSError as exc:
                self._fail(classify_oserror(exc, self.out, "write the temporary file"))
                continue
            except BaseException as exc:
                self._fail(exc)
                continue
            self._mark_written(i)
            self._release(i, buf)


class DirectVerifier:
    """:class:`~ketter.engine.verify.TrailingVerifier` with ``O_DIRECT`` reads,
    several in flight: hashes written ranges of a file, in order, from the
    disk (a direct read never comes from the page cache)."""

    def __init__(
        self, path: bytes, algo: str, hasher: _Hasher, *, pos: int = 0, fd: int | None = None
    ) -> None:
        # Raises OSError where O_DIRECT is refused: the caller then uses the
        # buffered TrailingVerifier. ``fd``: the copy's write descriptor; the
        # read-back goes through it, never through the temporary's name,
        # which anyone who can write in the folder can swap (#14).
        if fd is not None:
            self._fd = reopen(fd, path, os.O_RDONLY | os.O_DIRECT)
        else:
            rfd = open_regular(path, "read the copy back", destination=True)
            try:
                self._fd = reopen(rfd, path, os.O_RDONLY | os.O_DIRECT)
            finally:
                os.close(rfd)
        self.path = path
        self.algo = algo
        self.hasher = hasher
        self.pos = pos  # bytes hashed so far (read by the copy loop for progress)
        self._submitted = pos
        self._seq = 0
        self._jobs: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(N_VERIFY_READERS + 1):
            self._free.put(_aligned_buffer(CHUNK))
        self._claim = threading.Lock()
        self._cv = threading.Condition()
        self._done: dict[int, tuple[memoryview, int, int, int]] = {}
        self._stop = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._reader, name=f"ketter-dverify{i}", daemon=True)
            for i in range(N_VERIFY_READERS)
        ]
        self._thread = threading.Thread(target=self._run, name="ketter-verify", daemon=True)
        for t in (*self._threads, self._thread):
            t.start()

    def submit(self, start: int, end: int) -> None:
        """Queue ``[start, end)``; ``start`` must be block-aligned."""
        if start != self._submitted:
            raise AssertionError(f"verify ranges out of order: {start} != {self._submitted}")
        self._submitted = end
        for off in range(start, end, CHUNK):
            self._jobs.put((self._seq, off, min(CHUNK, end - off)))
            self._seq += 1

    def _reader(self) -> None:
        while True:
            with self._claim:
                job = self._jobs.get()
                if job is None:
                    self._jobs.put(None)  # for the other readers
                    return
                buf = self._free.get()
            seq, off, length = job
            n = 0
            if self._error is None and not self._stop.is_set():
                try:
                    ask = min(CHUNK, -(-length // ALIGN) * ALIGN)
                    n = _read_full(self._fd, memoryview(buf)[:ask], ask, off)
                except BaseException as e:
                    self._fail(e)
            with self._cv:
                self._done[seq] = (buf, off, length, n)
                self._cv.notify_all()

    def _run(self) -> None:
        seq = 0
        while True:
            with self._cv:
                while seq not in self._done:
                    if self._closed and seq >= self._seq:
                        return
                    self._cv.wait(0.2)
                buf, off, length, n = self._done.pop(seq)
            seq += 1
            try:
                if self._error is None and not self._stop.is_set():
                    if n < length:
                        raise ChecksumMismatch(
                            f"{show(self.path)} reads back shorter than written "
                            f"({off + n} < {off + length} bytes)"
                        )
                    self.hasher.update(memoryview(buf)[:length])
                    self.pos = off + length
            except BaseException as e:
                self._fail(e)
            finally:
                self._free.put(buf)

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
        self._stop.set()

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` s for all submitted ranges; True when done.
        No range may be submitted after the first call."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            with self._cv:
                self._cv.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self) -> str:
        """Wait for every queued range; the hex digest of all bytes verified."""
        self.wait(None)
        self.close()
        if self._error is not None:
            raise self._error
        return self.hasher.hexdigest()

    def close(self) -> None:
        if not self._closed:
            self._stop.set()
            self.wait(None)
        self._thread.join()
        for t in self._threads:
            t.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
