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
import errno
import hashlib
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator

from ketter.choices import Conflict, Kind
from ketter.errors import (
    DestinationConflict,
    PathOutsideRoute,
    PermanentError,
    TemporarySwapped,
    TransientError,
)

from .beneath import open_parent, step
from .cleanup import remove_path
from .context import STOP_SIGNALS, TransferContext
from .existing import matches_result
from .mounts import check_mounts
from .openfile import same_ident, swapped
from .oserrors import classify_oserror
from .paths import join, rename_candidate, show, split, temp_name
from .renameat import renameat2_noreplace
from .results import CopyResult, Placement
from .spec import TransferSpec

MODES = ("renameat2", "link", "rename")
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)
_probe_cache: dict[tuple[int, bool], str] = {}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
log = logging.getLogger("ketter.engine")


def placement_mode(parent: bytes, is_dir: bool, dir_fd: int | None = None) -> str:
    """The safest placement primitive ``parent``'s filesystem supports.

    ``dir_fd``: a descriptor of ``parent`` reached without following a link
    (``place`` has one); the probe files are then created, renamed and
    removed relative to it, and its ``fstat`` keys the cache. By name, a
    destination folder swapped for a link meanwhile made Ketter create and
    rename probe files in the link's target (and cache the target's
    filesystem): #14 finding 1."""
    forced = os.environ.get("KETTER_PLACEMENT")
    if forced:
        if forced not in MODES:
            raise PermanentError(f"KETTER_PLACEMENT={forced!r}: use one of {MODES}")
        return "rename" if (is_dir and forced == "link") else forced
    fd = dir_fd if dir_fd is not None else os.open(parent, _DIR_FLAGS)
    try:
        key = (os.fstat(fd).st_dev, is_dir)
        if key not in _probe_cache:
            _probe_cache[key] = _probe(fd, is_dir)
        return _probe_cache[key]
    finally:
        if dir_fd is None:
            os.close(fd)


def _probe(pfd: int, is_dir: bool) -> str:
    a = b".ketter-probe-" + uuid.uuid4().hex.encode() + b".part"
    b = a[:-5] + b".b.part"
    os.close(
        os.open(
            a,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=pfd,
        )
    )
    try:
        try:
            renameat2_noreplace(a, b, pfd, pfd)
            os.rename(b, a, src_dir_fd=pfd, dst_dir_fd=pfd)
            return "renameat2"
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
        if is_dir:
            return "rename"
        try:
            os.link(a, b, src_dir_fd=pfd, dst_dir_fd=pfd, follow_symlinks=False)
            os.unlink(b, dir_fd=pfd)
            return "link"
        except OSError:
            return "rename"
    finally:
        for p in (a, b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p, dir_fd=pfd)


def place_noreplace(
    tmp: bytes,
    final: bytes,
    mode: str,
    is_dir: bool,
    ctx: TransferContext,
    *,
    at: tuple[int | None, bytes, int | None, bytes] | None = None,
) -> str:
    """Move ``tmp`` to ``final``; ``FileExistsError`` if ``final`` exists.

    ``at`` = (tmp's folder fd, tmp name, final's folder fd, final name): the
    syscalls then work relative to folders reached without following a link
    (:mod:`.beneath`); ``tmp``/``final`` stay the paths shown in messages.
    Returns the mode actually used (a refused primitive falls back).
    """
    sfd, sname, dfd, dname = at if at is not None else (None, tmp, None, final)
    if mode == "renameat2":
        ctx.fault("before-rename")
        try:
            renameat2_noreplace(sname, dname, sfd, dfd)
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
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
        else:
            os.unlink(sname, dir_fd=sfd)
            return "link"
    # check-then-rename: the residual race is between lexists() and rename().
    # Between Ketter's own processes it is closed by a lock file next to the
    # final name (an exclusive create, atomic on SMB and SFTP servers too):
    # two deliveries to one name on smbnetfs both reported success, one
    # verified delivery silently replaced (2 of 65 real races, issue #15 §1).
    _warn_check_then_rename(dfd, final)
    with _name_lock(dfd, dname, final):
        if _lexists(dname, dfd):
            raise FileExistsError(errno.EEXIST, "exists", final)
        st = os.lstat(sname, dir_fd=sfd)
        ctx.fault("before-rename")
        try:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(errno.EEXIST, "exists", final) from e
            raise
        if is_dir and not same_ident(os.lstat(dname, dir_fd=dfd), (st.st_dev, st.st_ino)):
            raise PermanentError(
                f"after renaming into {show(final)} the name does not "
                "hold our folder; another writer raced us: check it by hand"
            )
    return "rename"


#: A name lock older than this is a dead process's (a placement takes
#: milliseconds): it is taken over.
LOCK_STALE_SECONDS = 60.0
_warned_rename: set[int] = set()


def _warn_check_then_rename(dfd: int | None, final: bytes) -> None:
    """Once per destination filesystem: placement there cannot refuse an
    existing name atomically (no ``renameat2`` NOREPLACE, no ``link``)."""
    try:
        dev = os.fstat(dfd).st_dev if dfd is not None else os.stat(split(final)[0]).st_dev
    except OSError:
        return
    if dev in _warned_rename:
        return
    _warned_rename.add(dev)
    log.warning(
        "placement onto %s is check-then-rename (the filesystem has neither renameat2 "
        "NOREPLACE nor hard links): Ketter's own processes take a lock file per name, "
        "but another program creating the same name at the same instant can be replaced",
        show(split(final)[0]),
    )


#: How long an unlink of a name lock is tried again while the share refuses
#: it as busy (:func:`_unlink_lock`).
LOCK_UNLINK_SECONDS = 10.0


@contextlib.contextmanager
def _name_lock(dfd: int | None, dname: bytes, final: bytes) -> Iterator[None]:
    """Hold ``.ketter-probe-lock-<name hash>`` (``O_EXCL``) next to the final
    name while checking and renaming: another Ketter process (or thread)
    placing the same name waits for it. Named like a placement probe, so the
    orphan sweep removes one a killed process left (after an hour), and a
    lock older than :data:`LOCK_STALE_SECONDS` is taken over at once."""
    lock = b".ketter-probe-lock-" + hashlib.sha256(split(dname)[1]).hexdigest()[:24].encode()
    deadline = time.monotonic() + 2 * LOCK_STALE_SECONDS
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            os.close(os.open(lock, flags, 0o600, dir_fd=dfd))
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                age = time.time() - os.lstat(lock, dir_fd=dfd).st_mtime
                if age > LOCK_STALE_SECONDS or time.monotonic() > deadline:
                    failed = _unlink_lock(lock, dfd)  # a dead process's lock
                    if failed is not None:
                        raise classify_oserror(
                            failed, final, "take over a stale name lock"
                        ) from failed
                    continue
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        time.sleep(0.02)
    try:
        yield
    finally:
        failed = _unlink_lock(lock, dfd)
        if failed is not None:
            log.warning(
                "could not remove the name lock %s beside %s (%s); it is taken over "
                "after %d s and removed by the orphan sweep",
                show(lock),
                show(final),
                failed.strerror,
                LOCK_STALE_SECONDS,
            )


def _unlink_lock(lock: bytes, dfd: int | None) -> OSError | None:
    """Remove a name lock, trying again while the share says it is busy.

    On smbnetfs an unlink fails with ``EBUSY`` (an SMB sharing violation)
    when another client holds the file open at that instant, as every
    ``stat`` of a waiting process briefly does: about one unlink in a
    thousand with three processes contending, and it succeeds a few
    milliseconds later. The failure used to be ignored and left the lock
    behind until it was stale (#15 §1). Returns the error when it is still
    there after :data:`LOCK_UNLINK_SECONDS` (or failed otherwise), else
    None (removed, or already gone)."""
    deadline = time.monotonic() + LOCK_UNLINK_SECONDS
    while True:
        try:
            os.unlink(lock, dir_fd=dfd)
            return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return exc
            time.sleep(0.01)


def _check_temp(sname: bytes, sfd: int | None, tmp: bytes, want: tuple[int, int]) -> None:
    """The temporary's name still holds the inode written (else nothing is
    renamed; the stray entry is not Ketter's to remove)."""
    try:
        st = os.lstat(sname, dir_fd=sfd)
    except FileNotFoundError:
        raise swapped(tmp) from None
    if not same_ident(st, want):  # the inode only where the filesystem keeps it (#15)
        raise swapped(tmp)


def _check_placed(
    pfd: int,
    name: bytes,
    sfd: int | None,
    sname: bytes,
    tmp: bytes,
    want: tuple[int, int],
    old_dir: bytes | None,
    final: bytes,
) -> None:
    """After the rename the final name must hold the inode written. If the
    temporary was swapped between :func:`_check_temp` and the rename, the
    impostor is renamed back under the temporary's name (never left
    delivered), an old version set aside is restored, and the job fails."""
    st = os.lstat(name, dir_fd=pfd)
    if same_ident(st, want):  # the inode only where the filesystem keeps it (#15)
        return
    try:
        renameat2_noreplace(name, sname, pfd, sfd)
        back = True
    except OSError:  # no renameat2 here, or the name was taken again
        back = False
    if old_dir is not None and back:
        _restore(pfd, old_dir, final)
    with contextlib.suppress(OSError):
        os.fsync(pfd)
    exc = swapped(tmp)
    if not back:
        raise TemporarySwapped(
            f"{exc.message}; {show(final)} now holds that other content and could not "
            "be moved back: remove it by hand"
        )
    raise exc


def _lexists(name: bytes, dir_fd: int | None) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


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

    The final folder is reached from ``spec.destination_root`` without
    following a link (:mod:`.beneath`) and every rename, link and flush is
    done relative to it, so a link planted in the destination tree fails the
    job (:class:`~ketter.errors.DestinationLinkError`) instead of moving the
    delivery (or an old version set aside) outside the route.
    """
    final = result.final_path
    if result.skipped:
        return _skipped_placement(spec, result)
    check_mounts(spec, ctx.expected_devs)
    parent, name = split(final)
    try:
        pfd, _ = open_parent(spec.destination_root, final)
    except OSError as e:
        if own_temp:
            remove_path(result.temp_path)
        raise classify_oserror(e, parent, "open the destination folder") from e
    except PathOutsideRoute:
        if own_temp:
            remove_path(result.temp_path)
        raise
    try:
        return _place_at(spec, result, ctx, pfd, parent, name, own_temp, sync_later)
    finally:
        os.close(pfd)


def _place_at(
    spec: TransferSpec,
    result: CopyResult,
    ctx: TransferContext,
    pfd: int,
    parent: bytes,
    name: bytes,
    own_temp: bool,
    sync_later: set[bytes] | None,
) -> Placement:
    final = result.final_path
    is_dir = result.plan.kind == Kind.FOLDER
    tmp = result.temp_path
    tmp_parent, tmp_name = split(tmp)
    # A temporary beside the final name is renamed by its name in the same
    # descriptor: if the folder was swapped for a link while copying, the
    # temporary is not found there and nothing is placed.
    sfd: int | None = pfd if tmp_parent == parent else None
    sname = tmp_name if sfd is not None else tmp
    mode = placement_mode(parent, is_dir, pfd)
    replaced = False
    old_dir: bytes | None = None
    # The temporary sits in a folder others may write to: only the inode
    # Ketter wrote and verified is renamed (#14). Checked here, and again
    # under the final name after the rename (a swap between the two). The
    # same-filesystem rename's "temporary" is the source: the inode hashed.
    want = result.temp_id
    if want is not None:
        _check_temp(sname, sfd, tmp, want)
    try:
        if spec.conflict == Conflict.RENAME:
            for n in range(10_000):
                cand_name = rename_candidate(name, n, is_dir)
                cand = join(parent, cand_name)
                try:
                    mode = place_noreplace(
                        tmp, cand, mode, is_dir, ctx, at=(sfd, sname, pfd, cand_name)
                    )
                    final, name = cand, cand_name
                    break
                except FileExistsError:
                    continue
            else:
                raise DestinationConflict(f"no free name like {show(final)} (10,000 tried)")
        else:
            at = (sfd, sname, pfd, name)
            try:
                mode = place_noreplace(tmp, final, mode, is_dir, ctx, at=at)
            except FileExistsError:
                if spec.conflict == Conflict.FAIL:
                    raise DestinationConflict(
                        f"destination {show(final)} already exists and the route's "
                        "conflict policy is 'fail'; remove it or change the policy, then "
                        "re-queue the job"
                    ) from None
                if spec.conflict == Conflict.SKIP_IDENTICAL:
                    if matches_result(
                        final, result, ctx=ctx, step=spec.checkpoint_bytes, dir_fd=pfd
                    ):
                        if own_temp:
                            remove_path(tmp)
                        return _stat_placement(final, True, "none", False)
                    raise DestinationConflict(
                        f"destination {show(final)} already exists with different "
                        "content (policy 'skip_identical'); resolve it by hand"
                    ) from None
                old_dir = _set_aside(pfd, final, ctx)
                try:
                    mode = place_noreplace(tmp, final, mode, is_dir, ctx, at=at)
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
    except (DestinationConflict, PathOutsideRoute, OSError) as e:
        if old_dir is not None and not replaced:
            _restore(pfd, old_dir, final)
        if own_temp:
            remove_path(tmp)
        if isinstance(e, OSError):
            raise classify_oserror(e, final, "place the delivery") from e
        raise
    if want is not None:
        _check_placed(pfd, name, sfd, sname, tmp, want, old_dir, final)
    try:
        if sync_later is not None and not is_dir and old_dir is None:
            sync_later.add(parent)
        else:
            os.fsync(pfd)
        if is_dir:
            _apply_root_dir_meta(pfd, name, parent, result.plan.mode, result.plan.mtime_ns)
    except OSError as e:
        raise classify_oserror(e, final, "flush the destination folder") from e
    st = os.lstat(name, dir_fd=pfd)
    placement = Placement(final, st.st_ino, st.st_dev, False, mode, replaced)
    ctx.fault("after-place")
    if old_dir is not None:
        # The new version is in place and durable: only now does the old go.
        # The old version may be a link or hold links: they are removed as
        # links, never followed (finding 13).
        remove_path(old_dir)
        os.fsync(pfd)
    return placement


def _restore(pfd: int, old_dir: bytes, final: bytes) -> None:
    old_name, name = split(old_dir)[1], split(final)[1]
    try:
        ofd = step(pfd, old_name, split(final)[0], create=False)
        try:
            renameat2_noreplace(name, name, ofd, pfd)
        finally:
            os.close(ofd)
        os.rmdir(old_name, dir_fd=pfd)
    except (OSError, PathOutsideRoute):
        pass  # left for rollback / the orphan sweep, which retry the restore


def _set_aside(pfd: int, final: bytes, ctx: TransferContext) -> bytes:
    """Move an existing ``final`` (a link as the link itself) into
    ``.ketter-<tag>-<name>.old/<name>``, all relative to its folder ``pfd``."""
    parent, name = split(final)
    old_name = temp_name(ctx.tag, name, "old")
    with contextlib.suppress(FileExistsError):
        os.mkdir(old_name, 0o700, dir_fd=pfd)
    # A link planted under the set-aside name must not carry the old version away.
    ofd = step(pfd, old_name, parent, create=False)
    try:
        os.rename(name, name, src_dir_fd=pfd, dst_dir_fd=ofd)
    finally:
        os.close(ofd)
    return join(parent, old_name)


def _stat_placement(final: bytes, skipped: bool, mode: str, replaced: bool) -> Placement:
    st = os.lstat(final)
    return Placement(final, st.st_ino, st.st_dev, skipped, mode, replaced)


def _skipped_placement(spec: TransferSpec, result: CopyResult) -> Placement:
    """An identical destination found by ``skip_identical``: reached again
    from the route's root without following a link, and accepted only if
    the name still holds what was compared (a folder swapped for a link to
    an identical copy outside the route is not a delivery: a move would
    delete the source while the only copy sits elsewhere; #14 finding 1)."""
    final = result.final_path
    try:
        pfd, name = open_parent(spec.destination_root, final)
        try:
            st = os.lstat(name, dir_fd=pfd)
        finally:
            os.close(pfd)
    except OSError as e:
        raise classify_oserror(e, final, "check the identical destination") from e
    if result.existing is not None and (st.st_ino, st.st_dev) != result.existing:
        raise TransientError(
            f"the identical destination {show(final)} was replaced after it was "
            "compared (skip_identical); the job compares it again on its next attempt"
        )
    return Placement(final, st.st_ino, st.st_dev, True, "none", False)


def _apply_root_dir_meta(pfd: int, name: bytes, parent: bytes, mode: int, mtime_ns: int) -> None:
    # Applied after the rename: a read-only folder mode would otherwise make
    # the rename itself fail for a non-root service user (".." update).
    # Through a descriptor opened without following a link: chmod on a path
    # would change the target of a link swapped in since the rename.
    fd = step(pfd, name, parent, create=False)
    try:
        os.fchmod(fd, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        os.fsync(fd)
    finally:
        os.close(fd)
