"""Byte paths: temporary names, containment in route roots, overlap checks.

Everything is ``bytes`` so names that are not valid UTF-8 survive; only
messages go through :func:`ketter.paths.readable`.
"""

from __future__ import annotations

import hashlib
import os
import stat

from ketter.errors import PathOutsideRoute, PermanentError
from ketter.paths import readable

NAME_MAX = 255
TEMP_PREFIX = b".ketter-"
#: The shared-storage marker of a route root (:mod:`ketter.jobs.shares`):
#: never a temporary, never swept.
SHARE_MARKER_PREFIX = b".ketter-share-"
#: Suffixes of the temporaries this engine creates (see :func:`temp_name`).
TEMP_KINDS = ("part", "dir", "zip", "old")


def temp_name(tag: str, name: bytes, kind: str) -> bytes:
    """``.ketter-<tag>-<name>.<kind>``, shortened to fit in 255 bytes.

    A too-long name keeps its head plus ``~`` and 12 hex digits of its
    SHA-256, so two long names sharing a head still get distinct temporaries.
    """
    if kind not in TEMP_KINDS:
        raise ValueError(kind)
    head = TEMP_PREFIX + tag.encode() + b"-"
    tail = b"." + kind.encode()
    full = head + name + tail
    if len(full) <= NAME_MAX:
        return full
    digest = b"~" + hashlib.sha256(name).hexdigest()[:12].encode()
    room = NAME_MAX - len(head) - len(tail) - len(digest)
    if room < 1:
        raise ValueError(f"tag {tag!r} is too long for a temporary name")
    return head + name[:room] + digest + tail


def join(parent: bytes, name: bytes) -> bytes:
    return os.path.join(parent, name)


def split(path: bytes) -> tuple[bytes, bytes]:
    """(parent, name) of a path without trailing slashes."""
    path = path.rstrip(b"/") or b"/"
    parent, name = os.path.split(path)
    return parent or b".", name


def real(path: bytes) -> bytes:
    """Absolute path with symlinks resolved in every component."""
    return os.path.realpath(os.path.abspath(path))


def is_within(path: bytes, root: bytes) -> bool:
    """True when ``path`` is ``root`` or below it (both already resolved)."""
    root = root.rstrip(b"/") or b"/"
    return path == root or path.startswith(root if root == b"/" else root + b"/")


def check_contained(path: bytes, root: bytes | None, what: str) -> bytes:
    """Resolve ``path`` (its parent, for a name that may not exist yet) and
    refuse it when it leaves ``root``; returns the resolved path."""
    parent, name = split(path)
    if name in (b".", b".."):
        raise PathOutsideRoute(f"{what} {show(path)} must name a file or folder")
    resolved = join(real(parent), name)
    if root is not None and not is_within(resolved, real(root)):
        raise PathOutsideRoute(
            f"{what} {show(path)} resolves to {show(resolved)}, outside its "
            f"route root {show(root)}; fix the route or the path"
        )
    return resolved


def check_no_overlap(src: bytes, final: bytes) -> None:
    """Refuse a destination that is the source or contains/is inside it.

    Copying a folder into itself never ends, and MOVE onto the source
    itself would delete the only copy.
    """
    a, b = check_contained(src, None, "source"), check_contained(final, None, "destination")
    if a == b or is_within(a, b) or is_within(b, a):
        raise PermanentError(
            f"source {show(src)} and destination {show(final)} overlap "
            "(one is or contains the other); choose another destination"
        )
    try:
        s, d = os.lstat(src), os.stat(final)
    except FileNotFoundError:
        return
    if (s.st_dev, s.st_ino) == (d.st_dev, d.st_ino):
        raise PermanentError(
            f"source {show(src)} and destination {show(final)} are the "
            "same file (hard link or bind mount); choose another destination"
        )


def rename_candidate(name: bytes, n: int, is_dir: bool) -> bytes:
    """``name (n).ext`` for files, ``name (n)`` for folders; a leading dot
    (``.bashrc``) is not an extension."""
    if n == 0:
        return name
    stem, ext = name, b""
    if not is_dir:
        dot = name.rfind(b".")
        if dot > 0:
            stem, ext = name[:dot], name[dot:]
    suffix = f" ({n})".encode()
    cut = NAME_MAX - len(suffix) - len(ext)
    return stem[:cut] + suffix + ext


def is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def show(path: bytes) -> str:
    """A quoted, one-line readable path for messages: invalid bytes as
    ``\\xNN``, control characters (a newline in a name) escaped."""
    text = readable(path)
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{text}'"


def safe_relpath(rel: bytes) -> bytes:
    """Refuse manifest paths that could leave the target folder."""
    parts = rel.split(b"/")
    if (
        not rel
        or rel.startswith(b"/")
        or any(p in (b"", b".", b"..") for p in parts)
        or b"\0" in rel
    ):
        raise PermanentError(f"manifest path {show(rel)} is not a plain relative path")
    return rel
