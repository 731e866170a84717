"""The names a route's choices take, one ``StrEnum`` each, in one place.

The config, the engine's spec, the job rows and the audit events carry them
as plain strings (a ``StrEnum`` member *is* its string: it compares equal,
hashes the same and serialises as it), so nothing stored changes; the code
compares against these members, never against a string literal, and the
config's allowed values are read from here.
"""

from __future__ import annotations

import functools
from enum import StrEnum


class Mode(StrEnum):
    """What happens to the source once its copy is verified."""

    COPY = "copy"
    MOVE = "move"


class Kind(StrEnum):
    """What a job transfers."""

    FILE = "file"
    FOLDER = "folder"


class Folders(StrEnum):
    """How a route treats a folder: one job per file, or the folder as one unit."""

    PER_FILE = "per_file"
    AS_UNIT = "as_unit"


class Conflict(StrEnum):
    """What a delivery does when its final name is taken."""

    FAIL = "fail"
    SKIP_IDENTICAL = "skip_identical"
    RENAME = "rename"
    OVERWRITE = "overwrite"


class SameFsMove(StrEnum):
    """A move within one filesystem: copy and verify, or rename the source."""

    COPY = "copy"
    RENAME = "rename"


class Verify(StrEnum):
    """The checksum the read-back is compared with."""

    SHA256 = "sha256"
    XXH128 = "xxh128"


class WatchMode(StrEnum):
    """How the watcher sees a route's source (``auto`` picks one by mount)."""

    AUTO = "auto"
    NATIVE = "native"
    POLLING = "polling"


@functools.cache
def values(choice: type[StrEnum]) -> tuple[str, ...]:
    """The allowed values of ``choice``, in declaration order (the config's
    ``choices``). Cached: every job's transfer spec checks its choices, and
    walking an enum's members costs more than the rest of that check."""
    return tuple(member.value for member in choice)
