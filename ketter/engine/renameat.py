"""``renameat2(RENAME_NOREPLACE)``: a rename that never replaces its target.

Its own module because both the placement and the cleanup of set-aside
versions (``cleanup._restore_old``) need it, and ``placement`` imports
``cleanup``: with the call in ``placement`` the two imported each other
(#16 item 8; tests/unit/test_import_graph.py keeps such circles out).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from .hashing import _lib

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
#: The syscall number, for a glibc older than 2.28 (no ``renameat2`` wrapper).
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "ppc64le": 357}


def renameat2_noreplace(
    old: bytes, new: bytes, old_dir: int | None = None, new_dir: int | None = None
) -> None:
    """rename(2) that fails with EEXIST instead of replacing ``new``; names
    relative to the folder descriptors ``old_dir``/``new_dir`` when given."""
    ofd = _AT_FDCWD if old_dir is None else old_dir
    nfd = _AT_FDCWD if new_dir is None else new_dir
    lib = _lib()
    fn = getattr(lib, "renameat2", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        rc = fn(ofd, old, nfd, new, _RENAME_NOREPLACE)
    else:  # glibc < 2.28
        nr = _SYSCALL_RENAMEAT2.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2 unavailable")
        lib.syscall.restype = ctypes.c_long
        rc = lib.syscall(
            ctypes.c_long(nr),
            ofd,
            ctypes.c_char_p(old),
            nfd,
            ctypes.c_char_p(new),
            ctypes.c_uint(_RENAME_NOREPLACE),
        )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, None, new)
