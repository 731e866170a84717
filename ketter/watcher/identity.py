"""Metadata-only identity of a file or folder version (no content is read).

The watcher never hashes content (R-W6); a version is named by its stat
fields, and for a folder by a SHA-256 of its listing.

Folder listing format (the worker recomputes it to check that the folder it
copies is the one that was detected; keep both sides byte-identical):

* walk the folder with ``os.scandir`` on **bytes** paths, never following
  symbolic links; recurse into real sub-folders; keep only regular files
  (links, FIFOs, sockets and devices are skipped); nothing is filtered by
  include/exclude patterns;
* ``relpath`` is the file's path relative to the folder, ``/``-separated,
  exact bytes;
* sort the entries by ``relpath`` bytes;
* hash, for each entry in order, ``relpath + b"\\0" + b"%d" % size + b"\\0"
  + b"%d" % mtime_ns + b"\\n"`` with SHA-256 (``st_size`` and
  ``st_mtime_ns`` from ``lstat``); the hex digest is the listing SHA-256.

An empty folder hashes to SHA-256 of nothing; the watcher does not deliver
empty folders (one just created may be about to receive files).

Readiness also compares ``st_ctime_ns`` (the newest one inside a folder),
which user space cannot set back: a writer that rewrites a file in place
and restores its size and mtime with ``os.utime`` still looks changed
(issue #14, finding 2). The ctime is not part of the listing hash, which
names a version in the job store and must stay the worker's.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from ketter.mounts import kept_inode


@dataclass(frozen=True, slots=True)
class Version:
    """One observed version of a candidate (file or folder)."""

    size: int  # file size, or total size of a folder's files
    mtime_ns: int  # file mtime, or the newest mtime inside a folder
    inode: int
    dev: int
    uid: int
    listing_sha256: str | None = None  # folders only
    file_count: int = 1
    #: file ctime, or the newest ctime inside a folder (module docstring)
    ctime_ns: int = 0

    @property
    def key_inode(self) -> int:
        """The inode as part of the version's identity (job key, stored
        ``source_inode``): 0 where the filesystem does not keep inode numbers
        (FUSE network clients renumber files on every mount and reconnect,
        issue #15 §1; :func:`ketter.mounts.kept_inode`). ``inode`` itself
        stays the live number, which the open-writer check matches."""
        return kept_inode(self.dev, self.inode)

    def same_as(self, other: Version) -> bool:
        """Unchanged between two observations (the readiness test, R-W3)."""
        return (self.size, self.mtime_ns, self.key_inode, self.listing_sha256, self.ctime_ns) == (
            other.size,
            other.mtime_ns,
            other.key_inode,
            other.listing_sha256,
            other.ctime_ns,
        )


@dataclass(frozen=True, slots=True)
class Listing:
    sha256: str
    file_count: int
    total_size: int
    newest_mtime_ns: int
    newest_ctime_ns: int = 0


def stat_path(path: bytes, *, revalidate: bool) -> os.stat_result:
    """``lstat`` of ``path``; with ``revalidate`` (network mounts) the regular
    file is opened and ``fstat``-ed instead.

    NFS and SMB clients answer ``stat`` from an attribute cache for up to
    ``acregmax``/``actimeo`` seconds, so a file still being written by
    another host can look unchanged for a minute (nfs-ganesha #294). An
    ``open`` forces close-to-open revalidation. ``O_NOFOLLOW`` keeps links
    out; ``O_NONBLOCK`` keeps a FIFO from blocking the watcher. A file that
    the writer holds with a deny-read share mode (SMB) fails to open: it is
    simply not ready yet.
    """
    st = os.lstat(path)
    if not revalidate or not stat.S_ISREG(st.st_mode):
        return st
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def file_version(st: os.stat_result) -> Version:
    return Version(
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        uid=st.st_uid,
        ctime_ns=st.st_ctime_ns,
    )


def folder_listing(path: bytes, *, revalidate: bool = False) -> Listing:
    """The listing identity of the folder ``path`` (format: module docstring).

    ``revalidate`` stats each file through ``open``+``fstat`` (network
    mounts); the values, and so the hash, are the same as ``lstat``'s once
    the attribute cache is fresh.
    """
    entries: list[tuple[bytes, int, int]] = []
    newest_ctime = 0
    stack: list[bytes] = [b""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(path, rel_dir) if rel_dir else path) as it:
            for entry in it:
                rel = rel_dir + b"/" + entry.name if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    st = (
                        stat_path(entry.path, revalidate=True)
                        if revalidate
                        else entry.stat(follow_symlinks=False)
                    )
                    if stat.S_ISREG(st.st_mode):
                        entries.append((rel, st.st_size, st.st_mtime_ns))
                        newest_ctime = max(newest_ctime, st.st_ctime_ns)
    entries.sort()
    digest = hashlib.sha256()
    total = newest = 0
    for rel, size, mtime_ns in entries:
        digest.update(rel + b"\0" + b"%d" % size + b"\0" + b"%d" % mtime_ns + b"\n")
        total += size
        newest = max(newest, mtime_ns)
    return Listing(digest.hexdigest(), len(entries), total, newest, newest_ctime)


def folder_listing_sha256(path: bytes) -> tuple[str, int, int]:
    """``(sha256 hex, file count, total size)`` of the folder ``path``'s
    listing; see the module docstring for the exact format."""
    listing = folder_listing(path)
    return listing.sha256, listing.file_count, listing.total_size


def folder_version(path: bytes, *, revalidate: bool) -> Version:
    st = os.lstat(path)
    listing = folder_listing(path, revalidate=revalidate)
    return Version(
        size=listing.total_size,
        mtime_ns=listing.newest_mtime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        uid=st.st_uid,
        listing_sha256=listing.sha256,
        file_count=listing.file_count,
        ctime_ns=listing.newest_ctime_ns,
    )
