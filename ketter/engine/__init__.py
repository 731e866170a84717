"""The transfer engine: verified, atomic copy and move of files and folders.

Pure engine — no job store, no queue, no config parsing. The job pipeline
calls the steps one by one and commits its state between them::

    plan = inspect_source(spec, src)
    final = resolve_destination(spec, plan, dst)
    result = copy_and_verify(spec, plan, final, ctx, resume=True)
    placement = place(spec, result, ctx)        # record it durably, then:
    delete_source(spec, plan, placement, ctx)   # MOVE only

:func:`transfer` runs them all at once (test-only: the ``same_fs_move:
rename`` tests, until the workers' path does the rename). See docs/engine.md.
"""

from .cleanup import find_orphans, remove_path, rollback
from .context import FAULT_POINTS, TransferContext
from .existing import check_existing
from .mounts import check_mounts, is_mount_point
from .move import delete_source, hash_source, move_by_rename, same_filesystem
from .oserrors import classify_oserror
from .package import extract_package, member_name
from .paths import temp_name
from .placement import place, placement_mode
from .results import (
    CopyResult,
    DeleteResult,
    FileHashes,
    Placement,
    TransferOutcome,
)
from .source import FileEntry, SourcePlan, inspect_source, resolve_destination
from .spec import TransferSpec
from .transfer import copy_and_verify, identical_result, per_file_items, transfer

__all__ = [
    "FAULT_POINTS",
    "CopyResult",
    "DeleteResult",
    "FileEntry",
    "FileHashes",
    "Placement",
    "SourcePlan",
    "TransferContext",
    "TransferOutcome",
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
    "move_by_rename",
    "per_file_items",
    "place",
    "placement_mode",
    "remove_path",
    "resolve_destination",
    "rollback",
    "same_filesystem",
    "temp_name",
    "transfer",
]
