"""The transfer engine: verified, atomic copy and move of files and folders.

Pure engine — no job store, no queue, no config parsing. The job pipeline
calls the steps one by one and commits its state between them::

    plan = inspect_source(spec, src)
    final = resolve_destination(spec, plan, dst)
    result = copy_and_verify(spec, plan, final, ctx, resume=True)
    placement = place(spec, result, ctx)        # record it durably, then:
    delete_source(spec, plan, placement, ctx)   # MOVE only

A move with ``same_fs_move: rename`` on one filesystem hashes the source
(:func:`hash_source`) and renames it into place (:func:`place_by_rename`)
instead of copying. The workers' ``Attempt`` (:mod:`ketter.jobs.steps`) is
the one driver. See docs/engine.md.
"""

from .cleanup import find_orphans, remove_path, rollback
from .context import FAULT_POINTS, TransferContext
from .existing import check_existing
from .mounts import check_mounts, is_mount_point
from .move import delete_source, hash_source, place_by_rename, same_filesystem
from .oserrors import classify_oserror
from .package import extract_package, member_name
from .paths import temp_name
from .placement import place, placement_mode
from .results import (
    CopyResult,
    DeleteResult,
    FileHashes,
    Placement,
)
from .source import FileEntry, SourcePlan, inspect_source, resolve_destination
from .spec import TransferSpec
from .transfer import copy_and_verify, identical_result

__all__ = [
    "FAULT_POINTS",
    "CopyResult",
    "DeleteResult",
    "FileEntry",
    "FileHashes",
    "Placement",
    "SourcePlan",
    "TransferContext",
    "TransferSpec",
    "check_existing",
    "check_mounts",
    "classify_oserror",
    "copy_and_verify",
    "delete_source",
    "extract_package",
    "find_orphans",
    "hash_source",
    "identical_result",
    "inspect_source",
    "is_mount_point",
    "member_name",
    "place",
    "place_by_rename",
    "placement_mode",
    "remove_path",
    "resolve_destination",
    "rollback",
    "same_filesystem",
    "temp_name",
]
