"""Atomic placement under the final name, with the route's conflict policy.

``fail`` and ``rename`` must never overwrite a name, even if another writer
creates it between our check and our rename. Each destination is probed
for the best primitive it supports:

* files: ``renameat2(RENAME_NOREPLACE)`` -> ``link`` + ``unlink`` ->
  check-then-rename (residual race: see docs/engine.md);
* folders: ``renameat2`` -> check-then-rename plus an inode check (a plain
  rename silently replaces an *empty* folder; NFS rejects rename flags).

``KETTER_PLACEMENT=renameat2|link|rename`` forces a mode (tests, odd shares).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
import uuid
from typing import Literal

from ketter.errors import DestinationConflict, PermanentError

from .cleanup import remove_path
from .context import STOP_SIGNALS, TransferContext
from .existing import matches_result
from .hashing import _lib, fsync_dir
from .mounts import check_mounts
from .oserrors import classify_oserror
from .paths import join, rename_candidate, show, split, temp_name
from .results import CopyResult, Placement
from .spec import TransferSpec

MODES = ("renameat2", "link", "rename")
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "ppc64le": 357}
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)
_probe_cache: dict[tuple[int, bool], str] = {}


def renameat2_noreplace(old: bytes, new: bytes) -> None:
    """rename(2) that fails with EEXIST instead of replacing ``new``."""
    lib = _lib()
    fn = getattr(lib, "renameat2", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        rc = fn(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_NOREPLACE)
    else:  # glibc < 2.28
        nr = _SYSCALL_RENAMEAT2.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2 unavailable")
        lib.syscall.restype = ctypes.c_long
        rc = lib.syscall(
            ctypes.c_long(nr),
            _AT_FDCWD,
            ctypes.c_char_p(old),
            _AT_FDCWD,
            ctypes.c_char_p(new),
            ctypes.c_uint(_RENAME_NOREPLACE),
        )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, None, new)


def placement_mode(parent: bytes, is_dir: bool) -> str:
    """The safest placement primitive ``parent``'s filesystem supports."""
    forced = os.environ.get("KETTER_PLACEMENT")
    if forced:
        if forced not in MODES:
            raise PermanentError(f"KETTER_PLACEMENT={forced!r}: use one of {MODES}")
        return "rename" if (is_dir and forced == "link") else forced
    key = (os.stat(parent).st_dev, is_dir)
    if key not in _probe_cache:
        _probe_cache[key] = _probe(parent, is_dir)
    return _probe_cache[key]


def _probe(parent: bytes, is_dir: bool) -> str:
    a = join(parent, b".ketter-probe-" + uuid.uuid4().hex.encode() + b".part")
    b = a[:-5] + b".b.part"
    with open(a, "wb"):
        pass
    try:
        try:
            renameat2_noreplace(a, b)
            os.rename(b, a)
            return "renameat2"
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
        if is_dir:
            return "rename"
        try:
            os.link(a, b)
            os.unlink(b)
            return "link"
        except OSError:
            return "rename"
    finally:
        for p in (a, b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def place_noreplace(tmp: bytes, final: bytes, mode: str, is_dir: bool, ctx: TransferContext) -> str:
    """Move ``tmp`` to ``final``; ``FileExistsError`` if ``final`` exists.

    Returns the mode actually used (a refused primitive falls back).
    """
    if mode == "renameat2":
        ctx.fault("before-rename")
        try:
            renameat2_noreplace(tmp, final)
            return mode
        except OSError as e:
            if e.errno == errno.EEXIST or e.errno == errno.ENOTEMPTY:
                raise FileExistsError(errno.EEXIST, "exists", final) from e
            if e.errno not in _UNSUPPORTED:
                raise
            mode = "rename" if is_dir else "link"
    if mode == "link" and not is_dir:
        ctx.fault("before-rename")
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
        else:
            os.unlink(tmp)
            return "link"
    # check-then-rename: the residual race is between lexists() and rename().
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, "exists", final)
    ino = os.lstat(tmp).st_ino
    ctx.fault("before-rename")
    try:
        os.rename(tmp, final)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "exists", final) from e
        raise
    if is_dir and os.lstat(final).st_ino != ino:
        raise PermanentError(
            f"after renaming into {show(final)} the name does not "
            "hold our folder; another writer raced us: check it by hand"
        )
    return "rename"


def place(
    spec: TransferSpec,
    result: CopyResult,
    ctx: TransferContext,
    *,
    own_temp: bool = True,
    sync_later: set[bytes] | None = None,
) -> Placement:
    """Put a verified copy under its final name, following ``spec.conflict``.

    On a conflict that fails the job the temporary is removed, so nothing is
    left behind; a placed delivery is fsynced in its folder before returning.
    ``own_temp=False`` (the same-filesystem rename, whose "temporary" is the
    source itself) never removes it. ``sync_later``: a file placed without
    setting an old version aside adds its folder to this set instead, and
    the caller fsyncs each folder once before recording the placements (a
    batch of small files, one flush per folder).
    """
    final = result.final_path
    if result.skipped:
        return _stat_placement(final, True, "none", False)
    check_mounts(spec, ctx.expected_devs)
    is_dir = result.plan.kind == "folder"
    tmp = result.temp_path
    parent, name = split(final)
    mode = placement_mode(parent, is_dir)
    replaced = False
    old_dir: bytes | None = None
    try:
        if spec.conflict == "rename":
            for n in range(10_000):
                cand = join(parent, rename_candidate(name, n, is_dir))
                try:
                    mode = place_noreplace(tmp, cand, mode, is_dir, ctx)
                    final = cand
                    break
                except FileExistsError:
                    continue
            else:
                raise DestinationConflict(f"no free name like {show(final)} (10,000 tried)")
        else:
            try:
                mode = place_noreplace(tmp, final, mode, is_dir, ctx)
            except FileExistsError:
                if spec.conflict == "fail":
                    raise DestinationConflict(
                        f"destination {show(final)} already exists and the route's "
                        "conflict policy is 'fail'; remove it or change the policy, then "
                        "re-queue the job"
                    ) from None
                if spec.conflict == "skip_identical":
                    if matches_result(final, result, ctx=ctx, step=spec.checkpoint_bytes):
                        if own_temp:
                            remove_path(tmp)
                        return _stat_placement(final, True, "none", False)
                    raise DestinationConflict(
                        f"destination {show(final)} already exists with different "
                        "content (policy 'skip_identical'); resolve it by hand"
                    ) from None
                old_dir = _set_aside(final, ctx)
                try:
                    mode = place_noreplace(tmp, final, mode, is_dir, ctx)
                except FileExistsError:
                    raise DestinationConflict(
                        f"destination {show(final)} was re-created by another writer "
                        "while it was being replaced; the old version is kept"
                    ) from None
                replaced = True
    except STOP_SIGNALS:
        # Stopped while comparing with an existing destination: a file
        # temporary is a complete partial a later claim resumes; a folder
        # one cannot be resumed, so it goes.
        if is_dir and own_temp:
            with contextlib.suppress(OSError):
                remove_path(tmp)
        raise
    except (DestinationConflict, OSError) as e:
        if old_dir is not None and not replaced:
            _restore(old_dir, final)
        if own_temp:
            remove_path(tmp)
        if isinstance(e, OSError):
            raise classify_oserror(e, final, "place the delivery") from e
        raise
    try:
        if sync_later is not None and not is_dir and old_dir is None:
            sync_later.add(parent)
        else:
            fsync_dir(parent)
        if is_dir:
            _apply_root_dir_meta(final, result.plan.mode, result.plan.mtime_ns)
            fsync_dir(final)
    except OSError as e:
        raise classify_oserror(e, final, "flush the destination folder") from e
    placement = _stat_placement(final, False, mode, replaced)
    ctx.fault("after-place")
    if old_dir is not None:
        # The new version is in place and durable: only now does the old go.
        remove_path(old_dir)
        fsync_dir(parent)
    return placement


def _restore(old_dir: bytes, final: bytes) -> None:
    name = split(final)[1]
    try:
        renameat2_noreplace(join(old_dir, name), final)
        os.rmdir(old_dir)
    except OSError:
        pass  # left for rollback / the orphan sweep, which retry the restore


def _set_aside(final: bytes, ctx: TransferContext) -> bytes:
    """Move an existing ``final`` into ``.ketter-<tag>-<name>.old/<name>``."""
    parent, name = split(final)
    old_dir = join(parent, temp_name(ctx.tag, name, "old"))
    with contextlib.suppress(FileExistsError):
        os.mkdir(old_dir, 0o700)
    os.rename(final, join(old_dir, name))
    return old_dir


Kind = Literal["file", "folder"]


def _stat_placement(final: bytes, skipped: bool, mode: str, replaced: bool) -> Placement:
    st = os.lstat(final)
    return Placement(final, st.st_ino, st.st_dev, skipped, mode, replaced)


def _apply_root_dir_meta(final: bytes, mode: int, mtime_ns: int) -> None:
    # Applied after the rename: a read-only folder mode would otherwise make
    # the rename itself fail for a non-root service user (".." update).
    os.chmod(final, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    os.utime(final, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
