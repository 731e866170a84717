"""Paths are bytes: studio shares hold names that are not valid UTF-8.

Binding such a name as text raises ``UnicodeEncodeError`` (Python 3.11) and
would stall a route forever, so Ketter keeps every path as ``bytes``
(``os.fsencode``) and derives a readable form only for people: invalid bytes
are shown as ``\\xNN``.
"""

from __future__ import annotations

import functools
import os
import pwd


def to_bytes(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> bytes:
    """The exact bytes of ``path`` (``os.fsencode``)."""
    return os.fsencode(path)


def readable(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str:
    """A printable form of ``path``: valid UTF-8 as is, other bytes as ``\\xNN``."""
    if path is None:
        return ""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def is_utf8(path: bytes) -> bool:
    """True when ``path`` decodes as UTF-8 (its readable form is exact)."""
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def owner_name(uid: int) -> str:
    """The user name of ``uid``, or the number when it has no passwd entry
    (the audit's ``file.owner``; on CIFS mounts, the mount's uid)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
