"""Resuming a large partial left by an earlier claim of the same job (R-T9).

A partial is only trusted as far as it can be proven: it is cut back to the
last checkpoint (the part that was fdatasynced), its prefix is read back
from the disk and compared with the source prefix (xxh128), and the hash
state of the source is rebuilt from that same prefix read. Anything that
does not match is thrown away and the copy starts over.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

from ketter.paths import readable

from .context import TransferContext
from .hashing import BUF_SIZE, MultiHash, ReadCancelled, _Hasher, evict, new_hasher
from .paths import TEMP_PREFIX, join, split, temp_name
from .progress import Progress
from .source import FileEntry
from .spec import TransferSpec


def find_partials(out: bytes, name: bytes, ctx: TransferContext) -> list[bytes]:
    """Partials of ``name`` from any claim of this job, in ``out``'s folder."""
    parent = split(out)[0]
    prefix = ctx.job_prefix.encode()
    found = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(b".part")):
            continue
        claim = entry[len(prefix) :].split(b"-", 1)[0].decode("ascii", "replace")
        if entry == temp_name(f"{ctx.job_id}-{claim}", name, "part"):
            found.append(join(parent, entry))
    return found


def adopt_partial(spec: TransferSpec, ctx: TransferContext, out: bytes, name: bytes) -> bool:
    """Rename the largest partial of this job to ``out``; remove the others.

    Returns True when a partial big enough to resume now sits at ``out``.
    """
    partials = find_partials(out, name, ctx)
    best: tuple[int, bytes] | None = None
    for p in partials:
        try:
            size = os.lstat(p).st_size
        except FileNotFoundError:
            continue
        if best is None or size > best[0]:
            best = (size, p)
    for p in partials:
        if best is None or p != best[1]:
            _unlink(p)
    if best is None:
        return False
    if best[0] < max(spec.resume_min_bytes, 1):
        _unlink(best[1])
        return False
    if best[1] != out:
        os.rename(best[1], out)
        ctx.warn("resume_adopted", partial=readable(best[1]), bytes=best[0])
    return True


def _unlink(p: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)


def adopt_prefix(
    spec: TransferSpec,
    ctx: TransferContext,
    src: bytes,
    sfd: int,
    e: FileEntry,
    out: bytes,
    ofd: int,
    mh: MultiHash,
    progress: Progress | None,
) -> tuple[int, _Hasher]:
    """Check the partial's prefix against the source; returns (offset, hasher
    of the verify algorithm over the partial prefix read from disk).

    ``mh`` is fed the source prefix; on a mismatch the partial is emptied
    and (0, fresh hasher) is returned — the caller must reset ``mh``.

    Both prefixes are read in full (the source in a second thread), so the
    mean of the bytes read on both sides is reported as ``resume-check``
    every ``progress.step`` bytes and at least once a second. A stop signal
    raised there cancels the source reader; the partial, already cut back to
    its last checkpoint, is kept for the next claim.
    """
    size = os.fstat(ofd).st_size
    keep = size if size == e.size else size - size % spec.checkpoint_bytes
    keep = min(keep, e.size)
    vh = new_hasher(spec.verify)
    if keep < max(spec.resume_min_bytes, 1):
        os.ftruncate(ofd, 0)
        return 0, vh
    os.ftruncate(ofd, keep)
    os.fdatasync(ofd)
    evict(ofd, 0, keep)
    src_check = new_hasher("xxh128")
    errors: list[BaseException] = []
    stop = threading.Event()
    src_done = part_done = 0
    report = progress.reads("resume-check") if progress is not None else None

    def src_tick(n: int) -> None:
        nonlocal src_done
        src_done = n
        if stop.is_set():
            raise ReadCancelled()

    def part_tick(n: int) -> None:
        nonlocal part_done
        part_done = n
        if report is not None:
            report((src_done + part_done) // 2)

    def read_source() -> None:
        try:
            _read_range(sfd, keep, (mh, src_check), src_tick)
        except ReadCancelled:
            pass
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=read_source, name="ketter-resume-src", daemon=True)
    t.start()
    part_check = new_hasher("xxh128")
    try:
        _read_range(ofd, keep, (part_check, vh) if spec.verify != "xxh128" else (vh,), part_tick)
        while t.is_alive():
            t.join(0.25)
            if report is not None and not errors:
                report((src_done + part_done) // 2)
    except BaseException:
        stop.set()
        raise
    finally:
        t.join()
    if errors:
        raise errors[0]
    if spec.verify == "xxh128":
        part_check = vh
    if part_check.hexdigest() != src_check.hexdigest():
        ctx.warn("resume_mismatch", partial=readable(out), bytes=keep)
        os.ftruncate(ofd, 0)
        return 0, new_hasher(spec.verify)
    if progress is not None:
        progress(keep, "resume-check", checkpoint=True)
    ctx.warn("resumed", partial=readable(out), offset=keep)
    return keep, vh


def _read_range(
    fd: int, length: int, sinks: tuple[object, ...], tick: Callable[[int], None] | None = None
) -> None:
    buf = bytearray(BUF_SIZE)
    mv = memoryview(buf)
    pos = 0
    while pos < length:
        n = os.preadv(fd, [mv[: min(len(buf), length - pos)]], pos)
        if n == 0:
            raise EOFError("file shorter than expected")
        for s in sinks:
            s.update(mv[:n])  # type: ignore[attr-defined]
        pos += n
        if tick is not None:
            tick(pos)


__all__ = ["TEMP_PREFIX", "adopt_partial", "adopt_prefix", "find_partials"]
