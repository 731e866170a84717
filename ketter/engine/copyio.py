"""The two ends of one file copy: the source opened and checked against
the plan (at the start, at each checkpoint, at the end), the temporary
created, written, given the source's metadata and fsynced."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ketter.errors import SourceChanged
from ketter.mounts import attributes_current

from .context import TransferContext
from .openfile import Ident, open_regular, open_regular_stat
from .oserrors import classify_oserror
from .paths import show
from .source import FileEntry, same_identity


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
    #: How the bytes were copied: ``inline`` (small files), ``direct``
    #: (O_DIRECT) or ``buffered`` (:func:`.copyfile.copy_path`).
    path: str = ""


def open_source(path: bytes, e: FileEntry) -> int:
    """Open a source file and check it is still the one in the plan."""
    fd, st = open_regular_stat(path)
    if not same_identity(st, e):
        os.close(fd)
        raise SourceChanged(
            f"source {show(path)} changed since it was inspected "
            "(size, mtime, ctime or inode); it is copied again once stable"
        )
    return fd


def check_source_final(path: bytes, fd: int, e: FileEntry) -> None:
    """Source still identical after the copy: ``fstat`` of our fd, then the
    name checked too. The ctime is compared: a rewrite in place that
    restores size and mtime leaves a copy of two versions (finding 2).

    The name is checked with a fresh ``open()`` + ``fstat()`` so that an
    NFS/SMB client revalidates instead of answering from its attribute
    cache; on a local filesystem (:func:`~ketter.mounts.attributes_current`)
    one ``lstat`` answers the same, for one syscall instead of five (a
    10,000-file folder pays them per file)."""
    st = os.fstat(fd)
    if not same_identity(st, e):
        raise SourceChanged(
            f"source {show(path)} was modified while it was being "
            "copied; it is copied again once stable"
        )
    if attributes_current(st.st_dev):
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise classify_oserror(exc, path, "re-check the source") from exc
    else:
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


def seal_temp(src: bytes, sfd: int, e: FileEntry, ofd: int, out: bytes) -> None:
    """The copy is whole: the source did not change meanwhile, the
    temporary gets the source's mode and mtime, then it is fsynced."""
    check_source_final(src, sfd, e)
    apply_metadata(ofd, e)
    try:
        os.fsync(ofd)
    except OSError as exc:
        raise classify_oserror(exc, out, "flush the temporary file") from exc


def source_checkpoint(
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
