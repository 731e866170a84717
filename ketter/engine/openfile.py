"""Opening files that must be what Ketter thinks they are.

Two failure modes, both found by attacking the product (issue #14):

* **a special file blocks** a plain ``open()`` forever: a FIFO swapped into
  a source folder (finding 4), or into the destination where Ketter reads
  its package, an existing file it compares with, or a copy it reads back.
  :func:`open_regular` opens with ``O_NONBLOCK``, refuses anything but a
  regular file, then clears ``O_NONBLOCK``;
* **a temporary swapped by name**: anyone who can write in a destination
  folder can rename Ketter's ``.part``/``.dir``/``.zip`` away and put their
  own under its name. Ketter keeps the (st_dev, st_ino) of what it created
  (:func:`ident_of` on its own descriptor), reads it back through that
  descriptor (:func:`reopen`), and checks any later open by name against it
  (:func:`check_ident`).

  Where the filesystem does not keep inode numbers (FUSE clients of
  network shares: sshfs, smbnetfs renumber a file whenever the kernel
  forgets its node, :func:`ketter.mounts.inodes_kept`) only the device is
  compared: a real sshfs delivery failed as "temporary replaced" because
  its own temporary came back under a new number (issue #15 §1). There a
  swap is not told apart by identity; the content was verified by hash
  through Ketter's own descriptor before placement.
"""

from __future__ import annotations

import hashlib
import os
import stat

from ketter.errors import DestinationSpecialFile, KetterError, SpecialSourceFile, TemporarySwapped
from ketter.mounts import inodes_kept

from .oserrors import classify_oserror
from .paths import show

#: (st_dev, st_ino): what a temporary is, whatever its name holds later.
Ident = tuple[int, int]


def ident_of(fd: int) -> Ident:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def same_ident(st: os.stat_result, want: Ident) -> bool:
    """``st`` is the file identified as ``want``: same device, and same inode
    where the filesystem keeps inode numbers (module docstring)."""
    if st.st_dev != want[0]:
        return False
    return st.st_ino == want[1] or not inodes_kept(st.st_dev)


def swapped(path: bytes, what: str = "temporary") -> TemporarySwapped:
    return TemporarySwapped(
        f"the {what} {show(path)} was replaced by another file or folder after Ketter "
        "wrote it (someone with write access to the destination folder renamed it away "
        "and put their own under its name); nothing was delivered and the source is "
        "kept: find out who can write there, remove the stray entry, then re-queue the job"
    )


def check_ident(
    fd: int,
    want: Ident | None,
    path: bytes,
    what: str = "temporary",
    st: os.stat_result | None = None,
) -> None:
    """``fd`` (opened by name) must be the inode Ketter wrote (``st``: its
    ``fstat``, when the caller has it already)."""
    if want is not None and not same_ident(st if st is not None else os.fstat(fd), want):
        raise swapped(path, what)


def open_regular(
    path: bytes,
    what: str = "open the source",
    *,
    dir_fd: int | None = None,
    destination: bool = False,
) -> int:
    """:func:`open_regular_stat` without the ``fstat`` it took."""
    return open_regular_stat(path, what, dir_fd=dir_fd, destination=destination)[0]


def open_regular_stat(
    path: bytes,
    what: str = "open the source",
    *,
    dir_fd: int | None = None,
    destination: bool = False,
) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without ever blocking on a special file.

    A FIFO swapped into a folder while it is copied would block a plain
    ``open()`` forever (issue #14, finding 4: the worker hung and, as it
    kept reporting progress, no stall alert fired). ``O_NONBLOCK`` makes the
    open return at once whatever the file is; ``fstat`` then refuses
    anything that is not a regular file, and only then is ``O_NONBLOCK``
    cleared so the reads behave as usual. ``O_NOFOLLOW`` keeps links out.
    ``destination``: the file is on the destination side (the message says
    so); ``dir_fd``: ``path`` is relative to that folder. Returns the
    descriptor and its ``fstat`` (the caller need not ask again: one
    syscall less per file of a 10,000-file folder).
    """
    try:
        fd = os.open(
            path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        raise classify_oserror(exc, path, what) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if destination:
                raise DestinationSpecialFile(
                    f"destination {show(path)} is not a regular file (a fifo, socket or "
                    "device is under that name); Ketter never reads special files: "
                    "remove it from the destination and re-queue the job"
                )
            raise SpecialSourceFile(
                f"source {show(path)} is not a regular file (a fifo, socket or device "
                "was put in its place); Ketter never reads special files: "
                "remove it from the source and re-queue the job"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def reopen(fd: int, path: bytes, flags: int = os.O_RDONLY) -> int:
    """A new descriptor with ``flags`` on the very file open as ``fd``.

    Through ``/proc/self/fd/N``: the file itself, not whatever its name
    holds now (a read-back by name read a swapped temporary and called it
    verified). Where ``/proc`` is not mounted: by name, without following a
    link or blocking, and only if it is still the same inode.
    """
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    want = ident_of(fd)
    new = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        check_ident(new, want, path)
        os.set_blocking(new, True)
    except BaseException:
        os.close(new)
        raise
    return new


def sha256_of_file(path: bytes, *, dir_fd: int | None = None) -> str | None:
    """SHA-256 of the regular file at ``path`` (opened as a source: never
    blocking on a special file, never through a link; relative to
    ``dir_fd`` when given); None when it cannot be read (gone, or no
    longer a regular file)."""
    try:
        fd = open_regular(path, "hash the source", dir_fd=dir_fd)
    except (OSError, KetterError):
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)
