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

import os
from dataclasses import dataclass

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
        if holder is None or holder.mount_point != real_mount:
            where = os.fsdecode(holder.mount_point) if holder is not None else "no mount"
            return (
                f"{label} {os.fsdecode(root)} is not on the share mounted at {shown} "
                f"(it is on {where}); check the {label} and {label}_mount keys"
            )
    return None
