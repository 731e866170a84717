"""The mount table: which filesystem a route root is on, and whether the
route's ``source_mount`` is really mounted (R-W2, R-W7).

inotify only reports changes made through the local kernel: a file written
to an NFS/SMB share by another host produces no event on this node
(lsyncd FAQ; watchdog #409). So native watching is used only on an
allow-list of local filesystem types; anything else (nfs, cifs, fuse.*,
an untriggered ``autofs``) is polled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ketter.config.schema import Config, RouteConfig
from ketter.engine.mounts import unescape_mountinfo

#: Local filesystems whose changes all go through this kernel, so inotify
#: sees every write. Anything not listed is polled.
LOCAL_FS_TYPES = frozenset(
    {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "zfs",
        "tmpfs",
        "overlay",
        "f2fs",
        "jfs",
        "reiserfs",
        "bcachefs",
        "nilfs2",
        "ramfs",
        "vfat",
        "exfat",
        "ntfs3",
        "hfsplus",
    }
)

#: Network filesystems: attributes are cached by the client, so readiness
#: observations stat through open()+fstat() (see identity.stat_path).
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "davfs",
        "fuse.rclone",
    }
)

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    mount_point: bytes
    fs_type: str
    source: str
    options: str  # per-mount options followed by the superblock options

    def option(self, name: str) -> str | None:
        """The value of ``name=value`` among the options (last one wins)."""
        value = None
        for item in self.options.split(","):
            key, _, val = item.partition("=")
            if key == name:
                value = val
        return value

    @property
    def is_network(self) -> bool:
        return (
            self.fs_type in NETWORK_FS_TYPES
            or self.fs_type.startswith("fuse.")
            or self.fs_type == "autofs"
        )


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
        mounts.append(
            Mount(
                mount_point=unescape_mountinfo(fields[4]),
                fs_type=tail[0].decode(errors="replace"),
                source=unescape_mountinfo(tail[1]).decode(errors="replace"),
                options=fields[5].decode(errors="replace") + "," + tail[2].decode(errors="replace"),
            )
        )
    return mounts


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    with open(path, "rb") as fh:
        return parse_mountinfo(fh.read())


def _under(path: bytes, mount_point: bytes) -> bool:
    return mount_point == b"/" or path == mount_point or path.startswith(mount_point + b"/")


def mount_of(path: bytes, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount holding ``path`` (resolved): the longest mount point above
    it, the last mounted when several share that point."""
    real = os.path.realpath(path)
    best: Mount | None = None
    for mount in read_mounts() if mounts is None else mounts:
        if _under(real, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def is_mount_point(path: bytes, mounts: list[Mount] | None = None) -> bool:
    """``path`` is a mount point: listed in mountinfo (which also catches a
    bind mount on the same device) or on another device than its parent."""
    real = os.path.realpath(path)
    listed = read_mounts() if mounts is None else mounts
    if any(m.mount_point == real for m in listed):
        return True
    try:
        return os.path.ismount(real)
    except OSError:
        return False


def trigger_automount(root: bytes) -> None:
    """stat() inside ``root`` so an autofs/systemd.automount share mounts
    before its type is read: until then mountinfo says ``autofs``."""
    try:
        with os.scandir(root) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)
                break
    except OSError:
        pass


def choose_watch(route: RouteConfig, root: bytes) -> tuple[str, str]:
    """``("native"|"polling", reason)`` for the route, from ``watch:`` and the
    type of the filesystem holding the root."""
    if route.watch == "native":
        return "native", "watch: native in the config"
    if route.watch == "polling":
        return "polling", "watch: polling in the config"
    trigger_automount(root)
    try:
        mount = mount_of(root)
    except OSError as exc:
        return "polling", f"cannot read {MOUNTINFO} ({exc.strerror}); polling to be safe"
    if mount is None:
        return "polling", "no mount found for the root; polling to be safe"
    if mount.fs_type in LOCAL_FS_TYPES:
        return "native", f"local filesystem {mount.fs_type}"
    return "polling", f"{mount.fs_type} is not a local filesystem type"


def is_network(root: bytes) -> bool:
    """True when the root is on a network (or unknown remote) filesystem."""
    try:
        mount = mount_of(root)
    except OSError:
        return True
    return mount is None or mount.fs_type not in LOCAL_FS_TYPES


def attribute_cache_seconds(mount: Mount) -> float | None:
    """How long the client may answer ``stat`` from cache on this mount:
    ``actimeo``, else ``acregmax``; kernel defaults (NFS 60 s, CIFS 1 s) when
    the options do not say; None for local filesystems."""
    if mount.fs_type in LOCAL_FS_TYPES:
        return None
    if mount.option("noac") is not None:
        return 0.0
    for name in ("actimeo", "acregmax"):
        value = mount.option(name)
        if value is not None and value.isdigit():
            return float(value)
    if mount.fs_type.startswith("nfs"):
        return 60.0
    if mount.fs_type in ("cifs", "smb3"):
        return 1.0
    return None


def stable_seconds_warnings(config: Config) -> list[str]:
    """Warnings for ``ketter config check``: routes whose ``stable_seconds``
    is shorter than their mount's attribute cache (a growing file may look
    still for that long)."""
    warnings = []
    for route in config.routes:
        try:
            mount = mount_of(os.fsencode(route.source))
        except OSError:
            continue
        cache = attribute_cache_seconds(mount) if mount is not None else None
        if cache is not None and route.stable_seconds < cache:
            assert mount is not None
            warnings.append(
                f"route {route.name!r}: stable_seconds ({route.stable_seconds:g}s) is shorter "
                f"than the attribute cache of {mount.fs_type} mount "
                f"{os.fsdecode(mount.mount_point)} ({cache:g}s, acregmax/actimeo); raise "
                f"stable_seconds to at least {cache:g}s"
            )
    return warnings


def check_root(route: RouteConfig, root: bytes) -> str | None:
    """None when the route root can be watched, else why not (R-W7).

    A missing or unreadable root, or a root that is not on its
    ``source_mount`` (an unmounted share is just an empty local folder),
    makes the route's watch *lost*: nothing is concluded from its contents.
    """
    try:
        os.stat(root)  # also triggers an automount
    except FileNotFoundError:
        return f"source {os.fsdecode(root)} does not exist"
    except OSError as exc:
        return f"source {os.fsdecode(root)} cannot be read: {exc.strerror}"
    if not os.path.isdir(root):
        return f"source {os.fsdecode(root)} is not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return f"source {os.fsdecode(root)} is not readable by this user"
    if route.source_mount:
        mount_path = os.fsencode(route.source_mount)
        try:
            mounts = read_mounts()
        except OSError as exc:
            return f"cannot read {MOUNTINFO}: {exc.strerror}"
        if not is_mount_point(mount_path, mounts):
            return (
                f"source_mount {route.source_mount} is not mounted (an unmounted "
                "share is an empty local folder)"
            )
        holder = mount_of(root, mounts)
        real_mount = os.path.realpath(mount_path)
        if holder is None or not _under(holder.mount_point, real_mount):
            return f"source {os.fsdecode(root)} is not on source_mount {route.source_mount}"
    return None
