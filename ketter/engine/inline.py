"""Copies done in the calling thread, without hash or verify threads:
small folder members (:func:`copy_small`, verified later in a batch) and
single files up to :data:`INLINE_MAX` (:func:`copy_inline`, verified from
the disk before it returns)."""

from __future__ import annotations

import os

from ketter.errors import SourceChanged

from .context import TransferContext
from .copyio import (
    FileCopy,
    apply_metadata,
    check_source_final,
    create_temp,
    open_source,
    seal_temp,
    write_all,
)
from .hashing import MultiHash, evict, new_hasher, thread_buffer, write_back
from .openfile import ident_of
from .oserrors import classify_oserror
from .paths import show
from .progress import Progress
from .source import FileEntry
from .spec import TransferSpec
from .verify import compare

SMALL_FILE = 1024 * 1024
#: Files up to this size are copied and verified in the calling thread.
INLINE_MAX = 4 * SMALL_FILE


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
    return FileCopy(total, mh.hexdigests(), verified=False, ident=ident, path="inline")


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
        return FileCopy(e.size, hashes, verified=True, ident=ident_of(ofd), path="inline")
    finally:
        if ofd >= 0:
            os.close(ofd)
        os.close(sfd)
