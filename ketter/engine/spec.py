"""What one transfer should do: the engine's only input besides the paths.

The job pipeline builds a :class:`TransferSpec` from a route of the config;
the engine never reads the config itself, so it can be tested and reused
(``ketter transfer``) without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ketter.choices import Conflict, Folders, Mode, SameFsMove, Verify, values

MiB = 1024 * 1024

_CHOICES: dict[str, type[StrEnum]] = {
    "mode": Mode,
    "verify": Verify,
    "conflict": Conflict,
    "folders": Folders,
    "same_fs_move": SameFsMove,
}


@dataclass(frozen=True)
class TransferSpec:
    """How to transfer: mode, checksum, conflict policy, folder handling, roots.

    Roots (``*_root``) confine paths: every path must resolve under its root
    when a root is set. Mounts (``*_mount``) are the mount guard: the root
    must sit on that mounted filesystem, or nothing is written or deleted.
    """

    mode: Mode = Mode.COPY
    verify: Verify = Verify.SHA256
    conflict: Conflict = Conflict.FAIL
    folders: Folders = Folders.PER_FILE
    #: Folders with at least this many files travel as one stored ZIP; 0 = never.
    package_min_files: int = 0
    md5: bool = False
    same_fs_move: SameFsMove = SameFsMove.COPY
    source_root: bytes | None = None
    destination_root: bytes | None = None
    source_mount: bytes | None = None
    destination_mount: bytes | None = None
    #: Partials smaller than this are restarted rather than resumed: re-reading
    #: the source prefix to rebuild the hash state only pays off for big files.
    resume_min_bytes: int = 256 * MiB
    ready_marker: str | None = None
    #: fsync + progress interval; also the trailing-verification window.
    checkpoint_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        # Programming errors, not route errors: the config layer validates
        # user input and reports it with line numbers before we get here.
        for name, choice in _CHOICES.items():
            if getattr(self, name) not in values(choice):
                raise ValueError(
                    f"{name} must be one of {values(choice)}, not {getattr(self, name)!r}"
                )
        if self.package_min_files < 0:
            raise ValueError("package_min_files must be >= 0")
        if self.checkpoint_bytes < MiB:
            raise ValueError("checkpoint_bytes must be at least 1 MiB")
        if self.resume_min_bytes < 0:
            raise ValueError("resume_min_bytes must be >= 0")
        for name in ("source_root", "destination_root", "source_mount", "destination_mount"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes (os.fsencode), not {type(value).__name__}")
        if self.ready_marker is not None and (not self.ready_marker or "/" in self.ready_marker):
            raise ValueError("ready_marker must be a non-empty suffix without '/'")

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Checksums computed from the single read of every source file."""
        base = ("sha256", "xxh128", "xxh64")
        return (*base, "md5") if self.md5 else base
