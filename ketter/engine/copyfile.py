"""Copy one file: one read of the source, every checksum, durable temporary.

Large files take the ``O_DIRECT`` path where the filesystems allow it
(:mod:`.direct`): reader and writer threads move aligned buffers from the
source to the temporary, this thread hashes them in order, and a
:class:`DirectVerifier` re-reads written windows with direct reads. Otherwise
(refused, or a source already in the page cache) the buffered path: the main
thread reads and writes (both release the GIL), a hasher thread feeds every
checksum from the same buffers, and a :class:`TrailingVerifier` re-reads
written-back, evicted windows from the disk. Buffers come from fixed pools,
so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ketter.errors import DestinationSpecialFile, SourceChanged

from . import direct
from .context import TransferContext
from .direct import DirectPipe, DirectVerifier
from .hashing import BUF_SIZE, MultiHash, evict, new_hasher, thread_buffer, write_back
from .openfile import Ident, ident_of, open_regular
from .oserrors import classify_oserror
from .paths import show
from .source import FileEntry, same_identity
from .spec import TransferSpec
from .verify import TrailingVerifier, compare

N_BUFFERS = 6  # 24 MiB in flight: enough to keep the hasher busy, bounded RSS
MIN_BUF_SIZE = 64 * 1024  # xxhash releases the GIL from 64 KiB
SMALL_FILE = 1024 * 1024
#: Files up to this size are copied and verified in the calling thread.
INLINE_MAX = 4 * SMALL_FILE
#: Default progress step for long reads (the default ``checkpoint_bytes``).
DEFAULT_STEP = 64 * SMALL_FILE


@dataclass
class FileCopy:
    size: int
    hashes: dict[str, str]
    #: True when the bytes were already re-read from disk and compared.
    verified: bool
    resumed_from: int = 0
    #: (st_dev, st_ino) of the temporary, from our write descriptor: only
    #: this inode may be read back, recorded and placed (a name in a shared
    #: folder can be swapped).
    ident: Ident | None = None


class Progress:
    """Throttles ``ctx.progress``: at most ~10 calls/s, at least once a second.

    ``step`` is the checkpoint size: long reads (hashing, re-reading from
    disk) report through :meth:`reads`, which makes a checkpoint call every
    ``step`` bytes, so a healthy job never looks stalled to the lease keeper.
    Only call it from the thread that runs the engine step (the job context
    talks to the job store); reader threads publish counters instead.
    """

    def __init__(self, ctx: TransferContext, base: int = 0, *, step: int = DEFAULT_STEP) -> None:
        self.ctx = ctx
        self.base = base
        self.step = step
        self.last = 0.0

    def __call__(self, done: int, phase: str, *, checkpoint: bool = False) -> None:
        now = time.monotonic()
        gap = now - self.last
        if (checkpoint and gap >= self.ctx.progress_interval) or gap >= 1.0:
            self.last = now
            self.ctx.progress(self.base + done, phase)

    def reads(self, phase: str, start: int = 0) -> ReadProgress:
        """A ``report(done)`` callback for one long read loop."""
        return ReadProgress(self, phase, start)


class ReadProgress:
    """Reports a long read: a checkpoint call each ``progress.step`` bytes,
    otherwise the time-based call (at least once a second)."""

    def __init__(self, progress: Progress, phase: str, start: int = 0) -> None:
        self.progress = progress
        self.phase = phase
        self.mark = start

    def __call__(self, done: int) -> None:
        if done - self.mark >= self.progress.step:
            self.mark = done
            self.progress(done, self.phase, checkpoint=True)
        else:
            self.progress(done, self.phase)


def shifted(report: Callable[[int], None] | None, base: int) -> Callable[[int], None] | None:
    """``report`` for one member of a folder: adds the bytes done before it."""
    if report is None:
        return None
    r = report
    return lambda n: r(base + n)


def progress_for(ctx: TransferContext | None, step: int = DEFAULT_STEP) -> Progress | None:
    """A :class:`Progress` for ``ctx``, or None when the caller passed none."""
    return Progress(ctx, step=step) if ctx is not None else None


def buffer_bytes(size: int) -> int:
    """The most copy-buffer memory :func:`copy_durable` holds for a file of
    ``size`` bytes, whichever path it takes: a caller that runs several
    copies side by side keeps the sum under a budget (peak RSS)."""
    if size <= INLINE_MAX:
        return 2 * size  # the data and its read-back
    chunks = -(-size // direct.CHUNK)
    direct_path = (direct.pipe_buffers(chunks) + direct.N_VERIFY_READERS + 1) * direct.CHUNK
    buf, count = _hash_buffers(size)
    return max(direct_path, count * buf + BUF_SIZE)  # + the buffered verifier's


def _hash_buffers(remaining: int | None) -> tuple[int, int]:
    """(size, count) of the buffered path's buffers for ``remaining`` bytes.

    Small files get small buffers: zeroing 6 × 4 MiB per file cost more
    than copying a 64 KiB file (fresh pages are slow on this kind of VM).
    """
    if remaining is None:
        return BUF_SIZE, N_BUFFERS
    # +1: one more byte than expected shows a source that grew.
    size = min(BUF_SIZE, max(MIN_BUF_SIZE, remaining + 1))
    return size, min(N_BUFFERS, 2 + remaining // size)


def open_source(path: bytes, e: FileEntry) -> int:
    """Open a source file and check it is still the one in the plan."""
    fd = open_regular(path)
    if not same_identity(os.fstat(fd), e):
        os.close(fd)
        raise SourceChanged(
            f"source {show(path)} changed since it was inspected "
            "(size, mtime, ctime or inode); it is copied again once stable"
        )
    return fd


def check_source_final(path: bytes, fd: int, e: FileEntry) -> None:
    """Source still identical after the copy: fstat of our fd, then a fresh
    open()+fstat() so an NFS/SMB client revalidates instead of answering
    from its attribute cache. The ctime is compared too: a rewrite in place
    that restores size and mtime leaves a copy of two versions (finding 2)."""
    if not same_identity(os.fstat(fd), e):
        raise SourceChanged(
            f"source {show(path)} was modified while it was being "
            "copied; it is copied again once stable"
        )
    fd2 = open_regular(path, "re-open the source")
    try:
        st = os.fstat(fd2)
    finally:
        os.close(fd2)
    if not same_identity(st, e):
        raise SourceChanged(
            f"source {show(path)} was replaced or modified while it "
            "was being copied; it is copied again once stable"
        )


def apply_metadata(fd: int, e: FileEntry) -> None:
    """Preserve mtime and permission bits (not setuid/setgid: least privilege)."""
    os.fchmod(fd, stat.S_IMODE(e.mode) & ~(stat.S_ISUID | stat.S_ISGID))
    os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))


def create_temp(path: bytes, access: int = os.O_WRONLY) -> int:
    try:
        return os.open(path, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise  # a name the destination merged (case/unicode) or a stale temporary
    except OSError as exc:
        raise classify_oserror(exc, path, "create the temporary file") from exc


def write_all(fd: int, data: memoryview, path: bytes) -> None:
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    except OSError as exc:
        raise classify_oserror(exc, path, "write the temporary file") from exc


def copy_small(
    src: bytes, e: FileEntry, out: bytes, algos: tuple[str, ...], *, start_write_back: bool = False
) -> FileCopy:
    """In-thread copy for small folder members; not fsynced (the folder is
    flushed once with syncfs) and verified later in a batch from disk."""
    sfd = open_source(src, e)
    try:
        ofd = create_temp(out)
        try:
            mh = MultiHash(algos)
            total = 0
            if e.size < SMALL_FILE:
                # One read of the expected size plus one byte (a regular file
                # reads short only at its end): no second read for the EOF.
                try:
                    chunk = os.pread(sfd, e.size + 1, 0)
                except OSError as exc:
                    raise classify_oserror(exc, src, "read the source") from exc
                total = len(chunk)
                mh.update(chunk)
                write_all(ofd, memoryview(chunk), out)
            else:
                buf = thread_buffer()
                mv = memoryview(buf)
                while True:
                    try:
                        n = os.preadv(sfd, [buf], total)
                    except OSError as exc:
                        raise classify_oserror(exc, src, "read the source") from exc
                    if not n:
                        break
                    total += n
                    mh.update(mv[:n])
                    write_all(ofd, mv[:n], out)
            if total != e.size:
                raise SourceChanged(f"source {show(src)} changed size while copied")
            check_source_final(src, sfd, e)
            apply_metadata(ofd, e)
            if start_write_back:  # the disk starts on it while the next file is copied
                write_back(ofd, 0, 0, wait=False)
            ident = ident_of(ofd)
        finally:
            os.close(ofd)
    finally:
        os.close(sfd)
    return FileCopy(total, mh.hexdigests(), verified=False, ident=ident)


class _HashThread:
    """Consumes filled buffers, updates every checksum, returns the buffers."""

    def __init__(self, mh: MultiHash, remaining: int | None = None) -> None:
        self.mh = mh
        self.free: queue.Queue[bytearray] = queue.Queue()
        size, count = _hash_buffers(remaining)
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


def seal_temp(src: bytes, sfd: int, e: FileEntry, ofd: int, out: bytes) -> None:
    """The copy is whole: the source did not change meanwhile, the
    temporary gets the source's mode and mtime, then it is fsynced."""
    check_source_final(src, sfd, e)
    apply_metadata(ofd, e)
    try:
        os.fsync(ofd)
    except OSError as exc:
        raise classify_oserror(exc, out, "flush the temporary file") from exc


def copy_durable(
    spec: TransferSpec,
    ctx: TransferContext,
    src: bytes,
    e: FileEntry,
    out: bytes,
    *,
    progress: Progress,
    resume: bool = False,
) -> FileCopy:
    """Copy with checkpoints and the trailing verification; fsynced and
    compared from disk on return. ``out`` may hold a partial to resume."""
    from .resume import adopt_prefix  # local: resume imports this module

    if not resume and e.size <= INLINE_MAX:
        return copy_inline(spec, ctx, src, e, out, progress=progress)
    sfd = open_source(src, e)
    ofd = -1
    verifier: TrailingVerifier | DirectVerifier | None = None
    pipe: DirectPipe | None = None
    copied = False
    try:
        mh = MultiHash(spec.algorithms)
        pos = 0
        vh = None
        if resume and os.path.lexists(out):
            # Non-blocking and regular only: a FIFO left under the partial's
            # name would block the resume's reads forever (#14 finding 4).
            ofd = os.open(out, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(ofd).st_mode):
                raise DestinationSpecialFile(
                    f"the partial {show(out)} is not a regular file; remove it and re-queue"
                )
            os.set_blocking(ofd, True)
            pos, vh = adopt_prefix(spec, ctx, src, sfd, e, out, ofd, mh, progress)
            if pos == 0:
                mh = MultiHash(spec.algorithms)
        else:
            ofd = create_temp(out)
        resumed_from = pos
        pipe = _direct_pipe(sfd, ofd, src, out, pos, e.size)
        if pipe is not None:
            try:
                verifier = DirectVerifier(
                    out, spec.verify, vh if vh is not None else new_hasher(spec.verify), pos=pos,
                    fd=ofd,
                )  # fmt: skip
            except OSError:
                verifier = None
        if verifier is None:
            verifier = TrailingVerifier(out, spec.verify, hasher=vh, pos=pos, fd=ofd)
        if pipe is not None:
            windows, pos, faulted = _copy_direct(
                spec, ctx, pipe, src, sfd, e, mh, verifier, progress
            )
        else:
            windows, pos, faulted = _copy_buffered(
                spec, ctx, src, sfd, e, out, ofd, mh, pos, verifier, progress
            )
        if not faulted:
            ctx.fault("mid-copy")
        if pipe is not None:
            windows = _verify_direct_part(windows, e.size, ofd, out, verifier)
        seal_temp(src, sfd, e, ofd, out)
        for a, b in windows:
            evict(ofd, a, b - a)
            verifier.submit(a, b)
        while not verifier.wait(0.5):
            progress(verifier.pos, "verify", checkpoint=True)
        digest = verifier.finish()
        if os.fstat(ofd).st_size != e.size:
            compare(out, "size", str(e.size), str(os.fstat(ofd).st_size))
        hashes = mh.hexdigests()
        compare(out, spec.verify, hashes[spec.verify], digest)
        progress(pos, "verify", checkpoint=True)
        copied = True
        return FileCopy(pos, hashes, verified=True, resumed_from=resumed_from, ident=ident_of(ofd))
    finally:
        if pipe is not None:
            pipe.close()
            pipe.close_fds()
            if not copied:
                # Direct writes finish out of order: a partial kept for a
                # resume must not hide a hole, so cut it to what was written.
                with contextlib.suppress(OSError):
                    os.ftruncate(ofd, pipe.contiguous())
        if verifier is not None:
            verifier.close()
        if ofd >= 0:
            os.close(ofd)
        os.close(sfd)


def _direct_pipe(
    sfd: int, ofd: int, src: bytes, out: bytes, pos: int, size: int
) -> DirectPipe | None:
    """A started :class:`DirectPipe` for ``[pos, size)``, or None where the
    buffered path is used: O_DIRECT off or refused by either filesystem,
    an unaligned resume offset, nothing left to copy, or a source whose data
    is already in the page cache (reading it from there is faster)."""
    if not direct.enabled() or pos % direct.ALIGN or pos >= size:
        return None
    if direct.cached(sfd, pos) and direct.cached(sfd, size - 1):
        return None
    sdfd = direct.open_direct(sfd, os.O_RDONLY)
    if sdfd is None:
        return None
    odfd = direct.open_direct(ofd, os.O_WRONLY)
    if odfd is None:
        os.close(sdfd)
        return None
    pipe = DirectPipe(sdfd, odfd, ofd, src, out, pos, size)
    try:
        pipe.start()
    except direct.Unsupported:
        pipe.close_fds()
        os.ftruncate(ofd, pos)  # nothing was written; the buffered path takes over
        return None
    except BaseException:
        pipe.close_fds()
        raise
    return pipe


def _copy_direct(
    spec: TransferSpec,
    ctx: TransferContext,
    pipe: DirectPipe,
    src: bytes,
    sfd: int,
    e: FileEntry,
    mh: MultiHash,
    verifier: TrailingVerifier | DirectVerifier,
    progress: Progress,
) -> tuple[list[tuple[int, int]], int, bool]:
    """The copy loop over a started :class:`DirectPipe`: hashes its chunks in
    order in this thread and hands each window to the verifier once all of it
    is written (direct writes bypass the page cache: nothing to write back or
    evict first). The window that ends the file is left to the caller, which
    submits it after the final fsync (its unaligned tail went through the
    page cache). Returns (windows not yet verified, end offset, faulted)."""
    window = pos = pipe.begin
    faulted = False
    windows: list[tuple[int, int]] = []
    for i in range(pipe.count):
        mv = pipe.get(i)
        try:
            mh.update(mv)
            n = len(mv)
        finally:
            mv.release()
            pipe.done(i)
        pos += n
        if pos - window >= spec.checkpoint_bytes:
            windows.append((window, pos))
            window = pos
            faulted = _source_checkpoint(ctx, src, sfd, e, faulted)
            progress(pos, "copy", checkpoint=True)
        else:
            progress(pos, "copy")
        while windows and windows[0][1] < e.size and windows[0][1] <= pipe.written_to():
            _submit_written(pipe.ofd, pipe.out, verifier, *windows.pop(0))
    pipe.finish()
    if pos != e.size:  # cannot happen: the pipe checks every read's length
        raise SourceChanged(f"source {show(src)} shrank while it was being copied")
    if window < pos:
        windows.append((window, pos))
    return windows, pos, faulted


def _submit_written(
    fd: int, out: bytes, verifier: TrailingVerifier | DirectVerifier, a: int, b: int
) -> None:
    """Hand ``[a, b)`` of the temporary, written with ``O_DIRECT``, to the
    verifier. Real direct writes leave nothing in the page cache, and the
    write-back and eviction here cost nothing; but a filesystem may accept
    ``O_DIRECT`` and cache the writes anyway (ext4 ``data=journal``,
    encrypted or inline-data files): its dirty pages would then serve the
    read-back, which must come from the disk."""
    try:
        write_back(fd, a, b - a, wait=True)
    except OSError as exc:
        raise classify_oserror(exc, out, "flush the temporary file") from exc
    evict(fd, a, b - a)
    verifier.submit(a, b)


def _verify_direct_part(
    windows: list[tuple[int, int]],
    size: int,
    fd: int,
    out: bytes,
    verifier: TrailingVerifier | DirectVerifier,
) -> list[tuple[int, int]]:
    """Hand the verifier every byte the direct writes put on the device, so
    its read-back overlaps the final fsync; returns what is left: the
    file's unaligned tail, written through the page cache, which is read
    back only after the fsync."""
    tail = size - size % direct.ALIGN
    for a, b in windows:
        if a < tail:
            _submit_written(fd, out, verifier, a, min(b, tail))
    return [(tail, size)] if tail < size else []


def _source_checkpoint(
    ctx: TransferContext, src: bytes, sfd: int, e: FileEntry, faulted: bool
) -> bool:
    """At a checkpoint: the source must still be the version being copied
    (size, mtime, ctime, inode). The ``mid-copy`` fault point fires at the first one;
    returns True once it has."""
    if not same_identity(os.fstat(sfd), e):
        raise SourceChanged(f"source {show(src)} was modified while it was being copied")
    if not faulted:
        ctx.fault("mid-copy")
    return True


def _copy_buffered(
    spec: TransferSpec,
    ctx: TransferContext,
    src: bytes,
    sfd: int,
    e: FileEntry,
    out: bytes,
    ofd: int,
    mh: MultiHash,
    pos: int,
    verifier: TrailingVerifier | DirectVerifier,
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
                    faulted = _source_checkpoint(ctx, src, sfd, e, faulted)
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


def copy_inline(
    spec: TransferSpec,
    ctx: TransferContext,
    src: bytes,
    e: FileEntry,
    out: bytes,
    *,
    progress: Progress,
) -> FileCopy:
    """:func:`copy_durable` for a file of at most ``INLINE_MAX`` bytes, in the
    calling thread: one read, every checksum, write, fsync, evict, re-read
    from the disk and compare. Starting a hash and a verify thread cost more
    than the whole copy of a 64 KiB file (the watcher benchmark's case)."""
    sfd = open_source(src, e)
    ofd = -1
    try:
        try:
            data = os.pread(sfd, e.size + 1, 0)  # one byte more shows a source that grew
        except OSError as exc:
            raise classify_oserror(exc, src, "read the source") from exc
        if len(data) != e.size:
            raise SourceChanged(
                f"source {show(src)} changed size while it was being copied "
                f"({len(data)} bytes read, {e.size} expected); it is copied again once stable"
            )
        ofd = create_temp(out, os.O_RDWR)
        mh = MultiHash(spec.algorithms)
        mh.update(data)
        write_all(ofd, memoryview(data), out)
        progress(e.size, "copy")
        ctx.fault("mid-copy")
        seal_temp(src, sfd, e, ofd, out)
        del data
        evict(ofd)  # written back by the fsync: the re-read below comes from the disk
        try:
            back = os.pread(ofd, e.size + 1, 0)
        except OSError as exc:
            raise classify_oserror(exc, out, "read the temporary file back") from exc
        if len(back) != e.size:
            compare(out, "size", str(e.size), str(len(back)))
        check = new_hasher(spec.verify)
        check.update(back)
        hashes = mh.hexdigests()
        compare(out, spec.verify, hashes[spec.verify], check.hexdigest())
        progress(e.size, "verify", checkpoint=True)
        return FileCopy(e.size, hashes, verified=True, ident=ident_of(ofd))
    finally:
        if ofd >= 0:
            os.close(ofd)
        os.close(sfd)


def _checkpoint(
    ofd: int,
    out: bytes,
    start: int,
    end: int,
    verifier: TrailingVerifier | DirectVerifier,
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
