"""Mount guard (R-W7): an unmounted share is just an empty local folder.

Writing into it "delivers" onto the node's own disk, and a MOVE would then
delete the source. Before writing, before placing and before deleting, each
route root must sit on its configured mount point, and on the same device
as when the job started. Whether something is mounted is decided by
:mod:`ketter.mounts`, the one mount check the watcher, the resume sweep and
``config check`` use too.
"""

from __future__ import annotations

import os

from ketter.errors import RouteUnavailable
from ketter.mounts import is_mount_point, mount_problem, network_fuse, unescape_mountinfo

from .paths import show
from .spec import TransferSpec

__all__ = ["check_mounts", "is_mount_point", "network_fuse", "unescape_mountinfo"]


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
        problem = mount_problem(side, root, mount)
        if problem is not None:
            raise RouteUnavailable(f"{problem}; nothing was written or deleted")
        where = root if root is not None else mount
        assert where is not None
        try:
            dev = os.stat(where).st_dev
        except OSError as e:
            raise RouteUnavailable(
                f"{side} root {show(where)} is not reachable ({e.strerror}); check the share"
            ) from e
        if expected is not None and side in expected and expected[side] != dev:
            raise RouteUnavailable(
                f"{side} root {show(where)} is on another filesystem "
                "than when the job started (share remounted or unmounted?); nothing was "
                "written or deleted"
            )
        devs[side] = dev
    return devs
