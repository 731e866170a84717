"""The one mount check (R-W7): is a share mounted, and is a route root on it.

Every place that asks "is this mounted?" asks here: the watcher's watch of
a source, the job's mount guard before it writes or deletes, the sweep that
resumes a paused route, and ``ketter config check``. They used to disagree —
``os.path.ismount`` compares the device of a folder with its parent's, so
it calls a *same-device bind mount* "not mounted", while the guard read the
mount table — and a route paused for an unmounted bind mount never resumed
(issue #14, finding 5). The mount table of this process's namespace,
``/proc/self/mountinfo``, lists every mount, bind mounts included, and
drops a mount the moment it is unmounted; it is the only source of truth.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
log = logging.getLogger("ketter.mounts")


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    mount_point: bytes
    fs_type: str
    source: str
    options: str  # per-mount options followed by the superblock options
    #: ``st_dev`` of the files on this mount (the MAJ:MIN field); 0 unknown
    dev: int = 0

    def option(self, name: str) -> str | None:
        """The value of ``name=value`` among the options (last one wins)."""
        value = None
        for item in self.options.split(","):
            key, _, val = item.partition("=")
            if key == name:
                value = val
        return value


def unescape_mountinfo(field: bytes) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def parse_mountinfo(text: bytes) -> list[Mount]:
    """Parse mountinfo (proc(5)): ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
    [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS``; in file order, which is mount
    order (a later mount on the same point hides an earlier one)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(b" ")
        if len(fields) < 10 or b"-" not in fields[6:]:
            continue
        sep = fields.index(b"-", 6)
        tail = fields[sep + 1 :]
        if len(tail) < 3:
            continue
        major, _, minor = fields[2].partition(b":")
        mounts.append(
            Mount(
                mount_point=unescape_mountinfo(fields[4]),
                fs_type=tail[0].decode(errors="replace"),
                source=unescape_mountinfo(tail[1]).decode(errors="replace"),
                options=fields[5].decode(errors="replace") + "," + tail[2].decode(errors="replace"),
                dev=os.makedev(int(major), int(minor))
                if major.isdigit() and minor.isdigit()
                else 0,
            )
        )
    return mounts


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    """The mounts of this process's namespace; ``OSError`` when /proc is not
    readable (callers treat that as "cannot tell": unavailable, never OK)."""
    with open(path, "rb") as fh:
        return parse_mountinfo(fh.read())


def _under(path: bytes, mount_point: bytes) -> bool:
    return mount_point == b"/" or path == mount_point or path.startswith(mount_point + b"/")


def mount_of(path: bytes | str, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount holding ``path`` (resolved): the longest mount point above
    it, the last mounted when several share that point."""
    real = os.path.realpath(os.fsencode(path))
    best: Mount | None = None
    for mount in read_mounts() if mounts is None else mounts:
        if _under(real, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def is_mount_point(path: bytes | str, mounts: list[Mount] | None = None) -> bool:
    """``path`` (resolved) is a mount point of this namespace: the mount
    holding it is mounted exactly there. A bind mount on the same device
    counts; an unmounted share (an empty local folder) does not."""
    real = os.path.realpath(os.fsencode(path))
    holder = mount_of(real, mounts)
    return holder is not None and holder.mount_point == real


def _bind_inside(point: bytes, share: bytes) -> bool:
    """The mount at ``point``, inside the share mounted at ``share``, is a
    bind mount of one of the share's own folders (the same filesystem), not
    another share: what systemd's ``ReadWritePaths=`` makes of each route
    folder under ``ProtectSystem=strict``, so inside the units every route
    root sits on such a bind (issue #15 section 2). An unreadable mount
    point is a "no"."""
    if not point.startswith(share.rstrip(b"/") + b"/"):
        return False
    try:
        return os.stat(point).st_dev == os.stat(share).st_dev
    except OSError:
        return False


def mount_problem(label: str, root: str | bytes | None, mount: str | bytes | None) -> str | None:
    """Why ``root`` is not on the share mounted at ``mount``, or None when it
    is (or when no mount is configured). ``label`` is ``source`` or
    ``destination``; the message names the config key and how to fix it.

    The root must sit on the very mount listed at ``mount`` (not on the
    folder underneath it, nor on another mount nested inside it that may be
    unmounted in turn): the same rule for the watcher, the job guard, the
    resume sweep and ``config check``.
    """
    if mount is None:
        return None
    shown = os.fsdecode(mount)
    try:
        mounts = read_mounts()
    except OSError as exc:
        return f"cannot read {MOUNTINFO} to check {label}_mount {shown}: {exc.strerror}"
    real_mount = os.path.realpath(os.fsencode(mount))
    if not is_mount_point(real_mount, mounts):
        return (
            f"{label}_mount {shown} is not mounted (an unmounted share is an empty "
            "local folder); mount it, the route resumes by itself"
        )
    if root is not None:
        holder = mount_of(root, mounts)
        if holder is None or (
            holder.mount_point != real_mount and not _bind_inside(holder.mount_point, real_mount)
        ):
            where = os.fsdecode(holder.mount_point) if holder is not None else "no mount"
            return (
                f"{label} {os.fsdecode(root)} is not on the share mounted at {shown} "
                f"(it is on {where}); check the {label} and {label}_mount keys"
            )
    return None


#: Filesystems whose ``st_ino`` is not the file's own: FUSE clients of
#: network protocols hand out node ids that start again on every mount and
#: whenever the kernel forgets a node (a reconnect, memory pressure). After
#: one server restart of a real sshfs / smbnetfs share, a copy route keyed on
#: the inode re-detected every file it had delivered and in-flight jobs
#: failed "changed since detected" (issue #15 §1). On these, a file's
#: identity is size + mtime_ns (+ ctime) and, before a delete, its content.
INODES_NOT_KEPT = frozenset(
    {
        "fuse.sshfs",
        "fuse.smbnetfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.curlftpfs",
        "fuse.httpdirfs",
    }
)
#: How long one reading of the mount table answers :func:`fs_type_of_dev`:
#: a remount gets a new anonymous device number, or the freed one back for
#: the same kind of filesystem, so a short memory is enough and keeps the
#: watcher from reading /proc for each of thousands of files.
_DEV_CACHE_SECONDS = 2.0
_dev_cache: dict[int, tuple[float, str | None]] = {}
_dev_lock = threading.Lock()


def fs_type_of_dev(dev: int) -> str | None:
    """The filesystem type of the mount whose files have ``st_dev == dev``
    (``fuse.sshfs``, ``ext4`` …), or None when the mount table does not
    list it (or cannot be read)."""
    now = time.monotonic()
    with _dev_lock:
        hit = _dev_cache.get(dev)
        if hit is not None and now - hit[0] < _DEV_CACHE_SECONDS:
            return hit[1]
    try:
        mounts = read_mounts()
    except OSError:
        mounts = []
    found = None
    for mount in mounts:
        if mount.dev == dev:
            found = mount.fs_type
    with _dev_lock:
        _dev_cache[dev] = (now, found)
    return found


def inodes_kept(dev: int) -> bool:
    """The filesystem of ``st_dev`` keeps a file's inode number across
    mounts and reconnects (every local and kernel network filesystem; not
    the FUSE clients in :data:`INODES_NOT_KEPT`)."""
    return fs_type_of_dev(dev) not in INODES_NOT_KEPT


def listings_cached(dev: int) -> bool:
    """The filesystem of ``st_dev`` is a FUSE network client whose folder
    listings and attributes may be answered from a client cache (sshfs:
    20 s by default) or whose folder mtimes are not the server's (smbnetfs:
    a share root dated 1970): a folder seen changed is listed again for a
    while (:mod:`ketter.watcher.scanner`)."""
    return fs_type_of_dev(dev) in INODES_NOT_KEPT


def network_fuse(dev: int) -> bool:
    """The filesystem of ``st_dev`` is a FUSE client of a network protocol
    (:data:`INODES_NOT_KEPT`): each write is a round trip to its daemon, so
    the page cache saves nothing on the way there; large copies onto it take
    the direct path (:func:`ketter.engine.copyfile.copy_path`)."""
    return fs_type_of_dev(dev) in INODES_NOT_KEPT


#: Local filesystems: a path lookup answers a file's current attributes.
#: Network clients (NFS, SMB, FUSE) may answer ``lstat`` from an attribute
#: cache that only an ``open`` revalidates (close-to-open consistency);
#: a filesystem not listed here is treated as one of those.
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "zfs", "bcachefs", "tmpfs"}
)


def attributes_current(dev: int) -> bool:
    """``lstat`` of a path on ``st_dev`` tells the file's current identity
    (size, mtime, ctime, inode) without an ``open`` to revalidate it: a
    local filesystem (:data:`LOCAL_FILESYSTEMS`)."""
    return fs_type_of_dev(dev) in LOCAL_FILESYSTEMS


def kept_inode(dev: int, ino: int) -> int:
    """``ino`` where the filesystem keeps it, else 0: "not part of the
    identity" wherever an identity compares inode numbers."""
    return ino if inodes_kept(dev) else 0


_warned_unknown_space: set[int] = set()


def disk_usage(path: str | bytes) -> shutil._ntuple_diskusage | None:
    """``shutil.disk_usage(path)``, or None when the filesystem does not say
    how big it is (``statfs`` reports ``f_blocks == 0``).

    smbnetfs answers ``statfs`` with 0 blocks in all and 0 free unless given
    a ``free_space_size``: every delivery onto it was refused as "can never
    fit … 0 bytes in all" (issue #15 §1). Zero blocks in all is not a full
    disk but an unknown size: the room check is skipped (a real ENOSPC
    while writing still pauses the route) and a warning is logged once per
    filesystem. ``OSError`` propagates as from ``shutil.disk_usage``.
    """
    vfs = os.statvfs(path)
    if vfs.f_blocks == 0:
        dev = os.stat(path).st_dev
        with _dev_lock:
            first = dev not in _warned_unknown_space
            _warned_unknown_space.add(dev)
        if first:
            log.warning(
                "free space unknown on %s (%s reports no size): min_free and the room "
                "check are not applied there; a full share shows up as ENOSPC while "
                "writing, which pauses the route",
                os.fsdecode(path),
                fs_type_of_dev(dev) or "its filesystem",
            )
        return None
    return shutil.disk_usage(path)
