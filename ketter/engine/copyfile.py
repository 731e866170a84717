"""Copy one file: one read of the source, every checksum, durable temporary.

:func:`copy_durable` picks the path: small files are copied in the calling
thread (:mod:`.inline`), a partial left by an earlier claim is checked and
resumed (:mod:`.resume`), the rest goes through the direct loop below or
the buffered one (:mod:`.buffered`). The source and temporary ends live in
:mod:`.copyio`, progress reporting in :mod:`.progress`.

Large files take the ``O_DIRECT`` path where the filesystems allow it
(:mod:`.direct`): reader and writer threads move aligned buffers from the
source to the temporary, this thread hashes them in order, and a
:class:`DirectVerifier` re-reads written windows with direct reads. Otherwise
(refused, or a source already in the page cache and a destination that is
not a FUSE network mount, see :func:`copy_path`) the buffered path: the main
thread reads and writes (both release the GIL), a hasher thread feeds every
checksum from the same buffers, and a :class:`TrailingVerifier` re-reads
written-back, evicted windows from the disk. Buffers come from fixed pools,
so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import contextlib
import os
import stat

from ketter.errors import DestinationSpecialFile, SourceChanged

from . import direct
from .buffered import copy_buffered, hash_buffers
from .context import TransferContext
from .copyio import FileCopy, create_temp, open_source, seal_temp, source_checkpoint
from .direct import DirectPipe, DirectVerifier
from .hashing import BUF_SIZE, MultiHash, evict, new_hasher, write_back
from .inline import INLINE_MAX, copy_inline
from .mounts import network_fuse
from .openfile import ident_of
from .oserrors import classify_oserror
from .paths import show
from .progress import Progress
from .resume import adopt_prefix
from .source import FileEntry
from .spec import TransferSpec
from .verify import ReadBackVerifier, TrailingVerifier, compare


def buffer_bytes(size: int) -> int:
    """The most copy-buffer memory :func:`copy_durable` holds for a file of
    ``size`` bytes, whichever path it takes: a caller that runs several
    copies side by side keeps the sum under a budget (peak RSS)."""
    if size <= INLINE_MAX:
        return 2 * size  # the data and its read-back
    chunks = -(-size // direct.CHUNK)
    direct_path = (direct.pipe_buffers(chunks) + direct.N_VERIFY_READERS + 1) * direct.CHUNK
    buf, count = hash_buffers(size)
    return max(direct_path, count * buf + BUF_SIZE)  # + the buffered verifier's


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
    if not resume and e.size <= INLINE_MAX:
        return copy_inline(spec, ctx, src, e, out, progress=progress)
    sfd = open_source(src, e)
    ofd = -1
    verifier: ReadBackVerifier | None = None
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
        chosen = "direct" if pipe is not None else "buffered"
        if pipe is not None:
            windows, pos, faulted = _copy_direct(
                spec, ctx, pipe, src, sfd, e, mh, verifier, progress
            )
        else:
            windows, pos, faulted = copy_buffered(
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
        return FileCopy(
            pos,
            hashes,
            verified=True,
            resumed_from=resumed_from,
            ident=ident_of(ofd),
            path=chosen,
        )
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


def copy_path(sfd: int, ofd: int, pos: int, size: int) -> str:
    """The path to try for ``[pos, size)`` of the source open as ``sfd`` into
    the temporary open as ``ofd``: ``direct`` or ``buffered`` (a direct
    attempt the filesystems refuse still ends on the buffered path).

    Buffered where O_DIRECT is off, the resume offset is unaligned or
    nothing is left to copy; buffered too for a source whose data is
    already in the page cache (reading it from there is faster), unless
    the temporary is on a FUSE network mount (sshfs, smbnetfs …): there
    every buffered write goes to the client daemon in page-sized pieces
    and the trailing verifier's write-back and eviction wait on the
    network, 6.8 MB/s onto smbnetfs against 82–138 MB/s direct (#15 §1)."""
    if not direct.enabled() or pos % direct.ALIGN or pos >= size:
        return "buffered"
    if (
        direct.cached(sfd, pos)
        and direct.cached(sfd, size - 1)
        and not network_fuse(os.fstat(ofd).st_dev)
    ):
        return "buffered"
    return "direct"


def _direct_pipe(
    sfd: int, ofd: int, src: bytes, out: bytes, pos: int, size: int
) -> DirectPipe | None:
    """A started :class:`DirectPipe` for ``[pos, size)``, or None where the
    buffered path is used (:func:`copy_path`, or O_DIRECT refused by either
    filesystem)."""
    if copy_path(sfd, ofd, pos, size) != "direct":
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


#: How far the read-back trails the direct writes: a written range is handed
#: to the verifier once this much has been written past what it already has
#: (not once a whole checkpoint window has also been hashed), so less of the
#: file is left to read back after the final fsync (#19 P1).
VERIFY_STEP = 2 * direct.CHUNK


def _copy_direct(
    spec: TransferSpec,
    ctx: TransferContext,
    pipe: DirectPipe,
    src: bytes,
    sfd: int,
    e: FileEntry,
    mh: MultiHash,
    verifier: ReadBackVerifier,
    progress: Progress,
) -> tuple[list[tuple[int, int]], int, bool]:
    """The copy loop over a started :class:`DirectPipe`: hashes its chunks in
    order in this thread and hands what the writers have finished, from the
    start of the file on, to the verifier every :data:`VERIFY_STEP` bytes
    (direct writes bypass the page cache: nothing to write back or evict
    first), whether or not this thread has hashed it yet: the two digests
    are compared only at the end. The file's unaligned tail went through the
    page cache and is left to the caller, which submits it after the final
    fsync. Returns (ranges not yet verified, end offset, faulted)."""
    window = pos = pipe.begin
    faulted = False
    verified = pipe.begin  # handed to the verifier up to here
    tail = e.size - e.size % direct.ALIGN
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
            window = pos
            faulted = source_checkpoint(ctx, src, sfd, e, faulted)
            progress(pos, "copy", checkpoint=True)
        else:
            progress(pos, "copy")
        written = min(pipe.written_to(), tail)
        if written - verified >= VERIFY_STEP:
            _submit_written(pipe.ofd, pipe.out, verifier, verified, written)
            verified = written
    pipe.finish()
    if pos != e.size:  # cannot happen: the pipe checks every read's length
        raise SourceChanged(f"source {show(src)} shrank while it was being copied")
    return ([(verified, pos)] if verified < pos else []), pos, faulted


def _submit_written(fd: int, out: bytes, verifier: ReadBackVerifier, a: int, b: int) -> None:
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
    verifier: ReadBackVerifier,
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
