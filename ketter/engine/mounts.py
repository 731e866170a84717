"""Mount guard (R-W7): an unmounted share is just an empty local folder.

Writing into it "delivers" onto the node's own disk, and a MOVE would then
delete the source. Before writing, before placing and before deleting, each
route root must sit on its configured mount point, and on the same device
as when the job started.
"""

from __future__ import annotations

import os

from ketter.errors import RouteUnavailable

from .paths import is_within, real, show
from .spec import TransferSpec


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


def mount_points() -> set[bytes]:
    """Mount points of this mount namespace (bind mounts included)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            return {unescape_mountinfo(line.split(b" ")[4]) for line in f if line.strip()}
    except OSError:
        return set()


def is_mount_point(path: bytes) -> bool:
    """True when ``path`` is a mount point (st_dev differs from its parent,
    or it is listed in mountinfo, which also catches same-device binds)."""
    try:
        if os.path.ismount(path):
            return True
    except OSError:
        return False
    return real(path) in mount_points()


def check_mounts(spec: TransferSpec, expected: dict[str, int] | None = None) -> dict[str, int]:
    """Raise :class:`RouteUnavailable` unless every root is where it must be.

    Returns ``{"source": st_dev, "destination": st_dev}`` for the sides that
    have a root or mount; record it at job start and pass it back as
    ``expected`` so a share remounted elsewhere (another device) is noticed.
    """
    devs: dict[str, int] = {}
    for side, root, mount in (
        ("source", spec.source_root, spec.source_mount),
        ("destination", spec.destination_root, spec.destination_mount),
    ):
        if root is None and mount is None:
            continue
        dev = None
        if mount is not None:
            if not is_mount_point(mount):
                raise RouteUnavailable(
                    f"{side} mount {show(mount)} is not mounted; nothing was written "
                    "or deleted: mount the share, the route resumes by itself"
                )
            dev = os.stat(mount).st_dev
        if root is not None:
            try:
                st = os.stat(root)
            except OSError as e:
                raise RouteUnavailable(
                    f"{side} root {show(root)} is not reachable ({e.strerror}); check the share"
                ) from e
            if mount is not None and (st.st_dev != dev or not is_within(real(root), real(mount))):
                raise RouteUnavailable(
                    f"{side} root {show(root)} is not on the mounted share "
                    f"{show(mount)}; nothing was written or deleted"
                )
            dev = st.st_dev
        assert dev is not None
        if expected is not None and side in expected and expected[side] != dev:
            raise RouteUnavailable(
                f"{side} root {show(root or mount or b'')} is on another filesystem "
                "than when the job started (share remounted or unmounted?); nothing was "
                "written or deleted"
            )
        devs[side] = dev
    return devs
