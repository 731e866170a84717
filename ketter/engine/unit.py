"""How an ``as_unit`` folder travels: the unit strategies behind one interface.

A folder unit is copied into a temporary folder beside its final name and
verified from disk there; the strategies differ only in how the members get
there — one by one (:class:`FolderUnit`, the default), or through one stored
ZIP written and verified first, then unpacked (:class:`PackagedUnit`,
R-T8: ``package_min_files``, off by default as measured in
docs/performance.md). :func:`copy_and_verify` picks one with
:func:`unit_strategy` and sees only :class:`UnitCopy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .context import TransferContext
from .folders import copy_folder
from .openfile import Ident
from .package import copy_packaged
from .progress import Progress
from .results import FileHashes
from .source import SourcePlan
from .spec import TransferSpec


@dataclass(frozen=True)
class UnitCopy:
    """A unit copied into its temporary folder and verified from disk."""

    files: list[FileHashes]
    size: int
    #: The temporary folder's identity (the inode placement renames).
    temp_id: Ident
    #: The ZIP's checksums, when the unit travelled packaged.
    package_hashes: dict[str, str] = field(default_factory=dict)


class UnitStrategy(Protocol):
    """One way of getting a folder unit into its temporary folder."""

    #: Recorded with the job (``packaged`` state and result).
    packaged: bool

    def copy(
        self,
        spec: TransferSpec,
        plan: SourcePlan,
        tmpdir: bytes,
        zip_path: bytes,
        ctx: TransferContext,
        progress: Progress,
    ) -> UnitCopy:
        """Copy ``plan`` into ``tmpdir`` (``zip_path``: where a package may be
        written beside it), durable and verified from disk."""
        ...


class FolderUnit:
    """Member by member into the temporary folder (:func:`copy_folder`)."""

    packaged = False

    def copy(
        self,
        spec: TransferSpec,
        plan: SourcePlan,
        tmpdir: bytes,
        zip_path: bytes,
        ctx: TransferContext,
        progress: Progress,
    ) -> UnitCopy:
        files, size, temp_id = copy_folder(spec, plan, tmpdir, ctx, progress)
        return UnitCopy(files, size, temp_id)


class PackagedUnit:
    """Through one stored ZIP, verified, then unpacked (:func:`copy_packaged`)."""

    packaged = True

    def copy(
        self,
        spec: TransferSpec,
        plan: SourcePlan,
        tmpdir: bytes,
        zip_path: bytes,
        ctx: TransferContext,
        progress: Progress,
    ) -> UnitCopy:
        files, zip_hashes, size, temp_id = copy_packaged(
            spec, plan, zip_path, tmpdir, ctx, progress
        )
        return UnitCopy(files, size, temp_id, zip_hashes)


def unit_strategy(spec: TransferSpec, plan: SourcePlan) -> UnitStrategy:
    """Packaged when the unit has at least ``package_min_files`` files
    (0: never), else member by member."""
    if 0 < spec.package_min_files <= len(plan.files):
        return PackagedUnit()
    return FolderUnit()
