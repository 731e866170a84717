"""A path submitted relative to a route's source (the HTTP API's ``POST
/transfers``), checked before anything is read or enqueued.

The text must be a plain relative path: no NUL byte, not absolute, no
empty, ``.`` or ``..`` component, each component within ``NAME_MAX`` and the
whole within ``PATH_MAX``. It is then reached from the route's root one
folder at a time without following a link (:func:`ketter.engine.beneath.open_dir`,
the engine's own walk), and the entry itself must not be a link: a symbolic
link planted in a source zone cannot make Ketter read outside the route.
"""

from __future__ import annotations

import os
import stat

from ketter.engine.beneath import open_dir
from ketter.engine.paths import join, show
from ketter.errors import DestinationLinkError, PathOutsideRoute

NAME_MAX = 255
PATH_MAX = 4096


class BadPath(ValueError):
    """The submitted path is not acceptable; the message says why."""


class NoSuchPath(LookupError):
    """Nothing exists at the submitted path."""


def resolve_submitted(root: str, rel: str) -> bytes:
    """The absolute path of ``rel`` under ``root``; :class:`BadPath` or
    :class:`NoSuchPath` with the reason."""
    if "\0" in rel:
        raise BadPath("the path contains a NUL byte")
    if rel.startswith("/"):
        raise BadPath("the path must be relative to the route's source, not absolute")
    raw = os.fsencode(rel).rstrip(b"/")
    if len(raw) >= PATH_MAX:
        raise BadPath(f"the path is {len(raw)} bytes long; the limit is {PATH_MAX - 1}")
    parts = raw.split(b"/")
    for part in parts:
        if part in (b"", b".", b".."):
            raise BadPath(
                f"the path has an empty, '.' or '..' component ({show(raw)}); give a plain "
                "path below the route's source"
            )
        if len(part) > NAME_MAX:
            raise BadPath(f"a component of the path is {len(part)} bytes; the limit is {NAME_MAX}")
    base = os.fsencode(root)
    parent = join(base, b"/".join(parts[:-1])) if len(parts) > 1 else base
    try:
        fd = open_dir(base, parent)
    except FileNotFoundError:
        raise NoSuchPath(f"{show(raw)} does not exist in the route's source") from None
    except NotADirectoryError:
        raise NoSuchPath(f"{show(raw)} does not exist in the route's source") from None
    except (DestinationLinkError, PathOutsideRoute):
        raise BadPath(
            f"{show(raw)} goes through a symbolic link; Ketter does not follow links "
            "in a route's source"
        ) from None
    try:
        st = os.lstat(parts[-1], dir_fd=fd)
    except FileNotFoundError:
        raise NoSuchPath(f"{show(raw)} does not exist in the route's source") from None
    finally:
        os.close(fd)
    if stat.S_ISLNK(st.st_mode):
        raise BadPath(f"{show(raw)} is a symbolic link; Ketter does not follow links")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise BadPath(f"{show(raw)} is neither a file nor a folder")
    return join(base, raw)
