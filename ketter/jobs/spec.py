"""From a configured route to the engine's :class:`TransferSpec`."""

from __future__ import annotations

import os

from ketter.choices import Conflict, Folders, Mode, SameFsMove, Verify
from ketter.config import Config, RouteConfig
from ketter.engine.spec import MiB, TransferSpec


def _b(path: str | None) -> bytes | None:
    return os.fsencode(path) if path is not None else None


def spec_for(route: RouteConfig, config: Config) -> TransferSpec:
    """The engine settings of ``route`` (roots confine every path to it)."""
    return TransferSpec(
        mode=Mode(route.mode),
        verify=Verify(route.verify),
        conflict=Conflict(route.conflict),
        folders=Folders(route.folders),
        package_min_files=route.package_min_files,
        md5=config.hashes.md5,
        same_fs_move=SameFsMove(route.same_fs_move),
        source_root=_b(route.source),
        destination_root=_b(route.destination),
        source_mount=_b(route.source_mount),
        destination_mount=_b(route.destination_mount),
        resume_min_bytes=config.resume_min_bytes,
        ready_marker=route.ready_marker,
        checkpoint_bytes=checkpoint_bytes(config.resume_min_bytes),
    )


def checkpoint_bytes(resume_min_bytes: int) -> int:
    """fsync + progress interval: a quarter of the resume threshold, within
    [1 MiB, 64 MiB], so a partial worth resuming has been checkpointed."""
    return max(MiB, min(64 * MiB, resume_min_bytes // 4))
