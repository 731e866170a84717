"""What each step hands to the next (and to the caller to record)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .source import SourcePlan


@dataclass(frozen=True)
class FileHashes:
    """Checksums of one manifest file, in manifest order."""

    relpath: bytes
    size: int
    hashes: dict[str, str]
    #: (st_dev, st_ino) of the copy written for it, when one was (a member
    #: of a temporary folder): its read-back must reach that inode.
    ident: tuple[int, int] | None = field(default=None, compare=False)


@dataclass
class CopyResult:
    """A verified copy sitting under a temporary name, ready for :func:`place`."""

    plan: SourcePlan
    final_path: bytes
    #: ``.part`` file or ``.dir`` folder beside ``final_path``; ``b""`` when
    #: nothing was copied (``skipped``: an identical destination exists, or a
    #: same-filesystem rename moved the source itself).
    temp_path: bytes
    verify: str
    #: Whole-object checksums of a file (sha256, xxh128, xxh64[, md5]).
    hashes: dict[str, str] = field(default_factory=dict)
    #: Folders: one entry per manifest file, same order as ``plan.files``.
    files: list[FileHashes] = field(default_factory=list)
    packaged: bool = False
    #: Checksums of the ZIP stream when ``packaged`` (verify algo + sha256).
    package_hashes: dict[str, str] = field(default_factory=dict)
    bytes_copied: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    skipped: bool = False
    #: How a single file's bytes were copied: inline, direct or buffered
    #: (:func:`ketter.engine.copyfile.copy_path`); "" for folders and skips.
    copy_path: str = ""
    #: ``skipped`` by ``skip_identical``: (inode, device) of the destination
    #: compared; placement refuses a name that no longer holds it.
    existing: tuple[int, int] | None = None
    #: (st_dev, st_ino) of the temporary as created (the write descriptor's,
    #: or the ``.dir``'s at its creation): :func:`place` renames it only if
    #: its name still holds this inode, and the final name must hold it
    #: after the rename (a temporary in a shared folder can be swapped).
    temp_id: tuple[int, int] | None = None


@dataclass(frozen=True)
class Placement:
    """Where the delivery ended up (record it before deleting any source)."""

    final_path: bytes
    ino: int
    dev: int
    skipped: bool
    #: renameat2 | link | rename | none (skipped) | moved (same-fs rename)
    mode: str = ""
    #: An older version was replaced (``conflict: overwrite``).
    replaced: bool = False


@dataclass
class DeleteResult:
    """Outcome of :func:`delete_source`."""

    deleted: list[bytes] = field(default_factory=list)
    #: Files not deleted because they no longer match the copy (changed since).
    kept: list[bytes] = field(default_factory=list)
    already_gone: list[bytes] = field(default_factory=list)
