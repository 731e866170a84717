"""How to watch a route root: which filesystem it is on (R-W2), and whether
the route's ``source_mount`` is really mounted (R-W7, decided by
:mod:`ketter.mounts`, the one mount check).

inotify only reports changes made through the local kernel: a file written
to an NFS/SMB share by another host produces no event on this node
(lsyncd FAQ; watchdog #409). So native watching is used only on an
allow-list of local filesystem types; anything else (nfs, cifs, fuse.*,
an untriggered ``autofs``) is polled.
"""

from __future__ import annotations

import os

from ketter.config.schema import Config, RouteConfig
from ketter.mounts import (
    MOUNTINFO,
    Mount,
    is_mount_point,
    mount_of,
    mount_problem,
    parse_mountinfo,
    read_mounts,
)

__all__ = [
    "LOCAL_FS_TYPES",
    "MOUNTINFO",
    "NETWORK_FS_TYPES",
    "Mount",
    "attribute_cache_seconds",
    "check_root",
    "choose_watch",
    "is_mount_point",
    "is_network",
    "is_network_mount",
    "mount_of",
    "parse_mountinfo",
    "read_mounts",
    "stable_seconds_warnings",
]

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


def is_network_mount(mount: Mount) -> bool:
    """A network (or unknown remote: FUSE, an untriggered autofs) filesystem."""
    return (
        mount.fs_type in NETWORK_FS_TYPES
        or mount.fs_type.startswith("fuse.")
        or mount.fs_type == "autofs"
    )


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
        # An unmounted share is the likelier cause: say so when it is.
        return mount_problem("source", root, route.source_mount) or (
            f"source {os.fsdecode(root)} does not exist"
        )
    except OSError as exc:
        return f"source {os.fsdecode(root)} cannot be read: {exc.strerror}"
    if not os.path.isdir(root):
        return f"source {os.fsdecode(root)} is not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return f"source {os.fsdecode(root)} is not readable by this user"
    # The same check as the job's mount guard and the resume sweep
    # (ketter.mounts): a same-device bind mount is mounted, an unmounted
    # share is not, whichever asks.
    return mount_problem("source", root, route.source_mount)
