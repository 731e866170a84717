"""Inspecting a source: identity of a file, manifest of a folder.

The identity (size, mtime_ns, inode, ctime_ns) taken here is what every
later step compares against: a copy whose source no longer matches is
discarded, and MOVE deletes only files that still match (rsync #359 deleted
sources it should not have).

``ctime_ns`` is in the identity because it is the one stat field user space
cannot set back: a writer that rewrites a file in place and restores its
size and mtime with ``os.utime`` (issue #14, finding 2) still moves the
ctime, so a copy torn between the old and the new bytes is never verified
and its source never deleted. A ``ctime_ns`` of 0 means "not recorded"
(rows written before migration 0003) and is not compared.

An inode of 0 means "not kept by this filesystem" and is not compared
either: FUSE clients of network shares (sshfs, smbnetfs) number their files
anew on every mount and reconnect, so after a server restart every file
looked changed — in-flight jobs failed and a move kept its sources as
"changed" (issue #15 §1). :func:`ketter.mounts.kept_inode` decides per
filesystem type, from the mount table.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Literal

from ketter.choices import Mode
from ketter.errors import PermanentError, SourceChanged
from ketter.mounts import kept_inode

from .oserrors import classify_oserror
from .paths import TEMP_PREFIX, check_contained, check_no_overlap, join, show, split
from .spec import TransferSpec


@dataclass(frozen=True)
class FileEntry:
    """One file (or folder, in :attr:`SourcePlan.dirs`) of a folder manifest."""

    relpath: bytes
    size: int
    mtime_ns: int
    mode: int
    ino: int
    #: 0: not recorded (a job row from before migration 0003); not compared.
    ctime_ns: int = 0


@dataclass(frozen=True)
class SourcePlan:
    """What was found at the source when the job started."""

    path: bytes
    kind: Literal["file", "folder"]
    size: int  # file size, or the sum of the manifest's file sizes
    mtime_ns: int
    ino: int
    dev: int
    mode: int
    files: tuple[FileEntry, ...] = ()
    dirs: tuple[FileEntry, ...] = ()
    listing_sha256: str = ""
    #: (relpath, reason) of entries left out: symlinks, devices, our temporaries.
    skipped: tuple[tuple[bytes, str], ...] = field(default=())
    #: the file's ctime (see the module docstring); 0: not recorded.
    ctime_ns: int = 0

    @property
    def name(self) -> bytes:
        return split(self.path)[1]

    def entry_path(self, entry: FileEntry) -> bytes:
        return join(self.path, entry.relpath)


def listing_digest(files: tuple[FileEntry, ...] | list[FileEntry]) -> str:
    """SHA-256 of the sorted (relpath, size, mtime_ns) listing.

    Byte-identical to the watcher's folder identity
    (:func:`ketter.watcher.identity.folder_listing`): the worker recomputes
    it to check that the folder it copies is the version that was detected.
    """
    h = hashlib.sha256()
    for e in files:
        h.update(e.relpath + b"\0" + b"%d" % e.size + b"\0" + b"%d" % e.mtime_ns + b"\n")
    return h.hexdigest()


def inspect_source(spec: TransferSpec, src: bytes) -> SourcePlan:
    """Identity of ``src`` and, for a folder, its manifest (symlinks skipped).

    Refuses a symlink source and a path outside ``spec.source_root``.
    """
    if not isinstance(src, bytes):
        raise TypeError("paths are bytes (os.fsencode)")
    src = src.rstrip(b"/") or b"/"
    check_contained(src, spec.source_root, "source")
    try:
        st = os.lstat(src)
    except OSError as e:
        raise classify_oserror(e, src, "inspect the source") from e
    if stat.S_ISLNK(st.st_mode):
        raise PermanentError(
            f"source {show(src)} is a symbolic link; Ketter never "
            "follows links out of a source: transfer its target instead"
        )
    if (
        spec.mode == Mode.MOVE
        and spec.source_root is not None
        and os.path.realpath(src) == os.path.realpath(spec.source_root)
    ):
        raise PermanentError(f"refusing to move the route root {show(src)} itself")
    if stat.S_ISREG(st.st_mode):
        return SourcePlan(
            src,
            "file",
            st.st_size,
            st.st_mtime_ns,
            kept_inode(st.st_dev, st.st_ino),
            st.st_dev,
            st.st_mode,
            ctime_ns=st.st_ctime_ns,
        )
    if not stat.S_ISDIR(st.st_mode):
        raise PermanentError(f"source {show(src)} is neither a file nor a folder")
    files, dirs, skipped = scan_tree(src)
    return SourcePlan(
        src,
        "folder",
        sum(e.size for e in files),
        st.st_mtime_ns,
        kept_inode(st.st_dev, st.st_ino),
        st.st_dev,
        st.st_mode,
        files=tuple(files),
        dirs=tuple(dirs),
        listing_sha256=listing_digest(files),
        skipped=tuple(skipped),
    )


def scan_tree(root: bytes) -> tuple[list[FileEntry], list[FileEntry], list[tuple[bytes, str]]]:
    """Files, folders and skipped entries below ``root``, sorted by relpath."""
    files: list[FileEntry] = []
    dirs: list[FileEntry] = []
    skipped: list[tuple[bytes, str]] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        here = join(root, rel) if rel else root
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as e:
            raise classify_oserror(e, here, "list the source folder") from e
        for de in entries:
            relpath = join(rel, de.name) if rel else de.name
            if de.name.startswith(TEMP_PREFIX):
                skipped.append((relpath, "ketter temporary"))
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as e:
                raise classify_oserror(e, join(root, relpath), "inspect the source") from e
            ino = kept_inode(st.st_dev, st.st_ino)
            entry = FileEntry(relpath, st.st_size, st.st_mtime_ns, st.st_mode, ino, st.st_ctime_ns)
            if stat.S_ISREG(st.st_mode):
                files.append(entry)
            elif stat.S_ISDIR(st.st_mode):
                dirs.append(FileEntry(relpath, 0, st.st_mtime_ns, st.st_mode, ino))
                stack.append(relpath)
            elif stat.S_ISLNK(st.st_mode):
                skipped.append((relpath, "symbolic link (never followed)"))
            else:
                skipped.append((relpath, "special file (device, fifo or socket)"))
    files.sort(key=lambda e: e.relpath)
    dirs.sort(key=lambda e: e.relpath)
    return files, dirs, skipped


def same_identity(st: os.stat_result, e: FileEntry) -> bool:
    """``st`` is still the version ``e`` names (module docstring: why ctime,
    and why an inode of 0 is not compared)."""
    return (
        (st.st_size, st.st_mtime_ns) == (e.size, e.mtime_ns)
        and (not e.ino or st.st_ino == e.ino)
        and (not e.ctime_ns or st.st_ctime_ns == e.ctime_ns)
    )


def same_identity_entry(now: FileEntry, then: FileEntry) -> bool:
    """Two manifest entries of one file name the same version."""
    return (
        (now.size, now.mtime_ns) == (then.size, then.mtime_ns)
        and (not then.ino or now.ino == then.ino)
        and (not then.ctime_ns or now.ctime_ns == then.ctime_ns)
    )


def check_unchanged(plan: SourcePlan) -> None:
    """Fail before placement when the folder changed since its manifest."""
    try:
        st = os.lstat(plan.path)
        files, _dirs, _skipped = scan_tree(plan.path)
    except (OSError, SourceChanged) as e:
        raise SourceChanged(
            f"source folder {show(plan.path)} vanished or became unreadable during the transfer"
        ) from e
    if (
        kept_inode(st.st_dev, st.st_ino) != plan.ino
        or listing_digest(files) != plan.listing_sha256
        or [e.ino for e in files] != [e.ino for e in plan.files]
        or not all(
            same_identity_entry(now, then) for now, then in zip(files, plan.files, strict=True)
        )
    ):
        raise SourceChanged(
            f"source folder {show(plan.path)} changed after its manifest was taken "
            "(a file was added, removed or modified); it is transferred again once stable"
        )


def resolve_destination(spec: TransferSpec, plan: SourcePlan, dst: bytes) -> bytes:
    """The final path, with ``cp`` semantics: into ``dst`` if it is a folder.

    Also refuses a destination outside ``spec.destination_root`` and one that
    is or overlaps the source.
    """
    if not isinstance(dst, bytes):
        raise TypeError("paths are bytes (os.fsencode)")
    dst = dst.rstrip(b"/") or b"/"
    final = join(dst, plan.name) if os.path.isdir(dst) else dst
    check_contained(final, spec.destination_root, "destination")
    check_no_overlap(plan.path, final)
    return final
