"""``folders: as_unit`` below the packaging threshold: file by file into a
hidden temporary folder, flushed once, verified from disk, renamed whole.

Small files are not fsynced one by one (about 1,500 fsyncs/s caps a stream
here); the filesystem is flushed with ``syncfs`` (every 1,024 small members
while the copy goes on, and once at the end) and every file is then evicted
and read back from the disk, so "verified" still means "on the disk". The
read-backs run while the copy goes on (:mod:`.members`); what is left is
read back by :func:`verify_tree` after the final flush.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
import unicodedata
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ketter.errors import PermanentError
from ketter.mounts import inodes_kept

from .beneath import open_dir, open_parent
from .context import TransferContext
from .hashing import ReadCancelled, fsync_dir, syncfs, thread_buffer
from .inline import SMALL_FILE
from .members import MemberCopy
from .openfile import Ident, open_regular, same_ident, swapped
from .oserrors import classify_oserror
from .paths import join, safe_relpath, show, split
from .progress import Progress
from .results import FileHashes
from .source import FileEntry, SourcePlan, check_unchanged
from .spec import TransferSpec
from .verify import read_back_file

VERIFY_THREADS = 8
#: Files per read-back task (fewer when they add up to 1 MiB).
VERIFY_BATCH_FILES = 32


def name_folding(folder: bytes) -> tuple[bool, bool]:
    """(case-insensitive, unicode-normalizing) for the filesystem of ``folder``.

    Probed with two throw-away files, because SMB shares, macOS volumes and
    casefolded ext4/tmpfs folders merge names that Linux keeps apart.
    """
    tag = uuid.uuid4().hex[:8].encode()
    base = join(folder, b".ketter-probe-" + tag)
    case = norm = False
    try:
        open(base + b"-Aa", "wb").close()
        case = os.path.lexists(base + b"-aA")
        nfc = "\u00e9".encode()
        open(base + b"-" + nfc, "wb").close()
        norm = os.path.lexists(base + b"-" + unicodedata.normalize("NFD", "\u00e9").encode())
    finally:
        for suffix in (b"-Aa", b"-" + "\u00e9".encode()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + suffix)
    return case, norm


def check_collisions(folder: bytes, relpaths: Sequence[bytes]) -> None:
    """Names the destination would merge (NFC/NFD, case) fail before copying."""
    case, norm = name_folding(folder)
    if not (case or norm):
        return
    seen: dict[bytes, bytes] = {}
    for rel in relpaths:
        text = rel.decode("utf-8", "surrogateescape")
        if norm:
            text = unicodedata.normalize("NFC", text)
        if case:
            text = text.casefold()
        key = text.encode("utf-8", "surrogateescape")
        if key in seen:
            raise PermanentError(
                f"{show(seen[key])} and {show(rel)} would become the same name on "
                f"the destination filesystem ({'case-insensitive' if case else ''}"
                f"{' and ' if case and norm else ''}{'unicode-normalizing' if norm else ''}); "
                "rename one at the source"
            )
        seen[key] = rel


def make_dirs(target: bytes, dirs: Sequence[FileEntry]) -> None:
    """Create the manifest's folders exactly (no exist_ok: a merge is a
    collision the filesystem made, reported as such)."""
    for d in dirs:
        path = join(target, safe_relpath(d.relpath))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise PermanentError(
                f"folder {show(d.relpath)} collides with another name "
                "on the destination filesystem (case or unicode "
                "normalization)"
            ) from None
        except OSError as e:
            raise classify_oserror(e, path, "create a folder in the destination") from e


def apply_dir_metadata(
    target: bytes, dirs: Sequence[FileEntry], *, root: bytes | None = None
) -> None:
    """Modes and mtimes of sub-folders, deepest first (creating entries
    inside a folder would change its mtime again).

    ``root``: the route's destination root, from which ``target`` itself is
    reached without following a link (a per_file delivery folder swapped for
    a link after its files were placed made a folder outside the route
    world-writable: #14 finding 1); None: ``target`` is opened by path."""
    for d in sorted(dirs, key=lambda d: -d.relpath.count(b"/")):
        # Each folder reached without following a link: a chmod by path
        # would change the target of a link planted in a per_file
        # destination tree since its folders were made.
        fd = open_dir(root or target, join(target, d.relpath))
        try:
            os.utime(fd, ns=(d.mtime_ns, d.mtime_ns))
            os.fchmod(fd, stat.S_IMODE(d.mode) & ~(stat.S_ISUID | stat.S_ISGID))
        finally:
            os.close(fd)


def flush_tree(target: bytes, files: Sequence[FileEntry], dirs: Sequence[FileEntry]) -> None:
    """Make everything below ``target`` durable: one syncfs, or per-file fsync."""
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd):
            return
    finally:
        os.close(fd)
    for e in files:
        # Never blocking on a FIFO put under a member's name (#14 finding 4).
        f = open_regular(join(target, e.relpath), "flush the copy", destination=True)
        try:
            os.fsync(f)
        finally:
            os.close(f)
    for d in [*dirs, FileEntry(b"", 0, 0, 0, 0)]:
        fsync_dir(join(target, d.relpath) if d.relpath else target)


def verify_tree(
    target: bytes,
    files: Sequence[FileHashes],
    algo: str,
    skip: set[bytes],
    progress: Progress,
) -> None:
    """Read every (flushed) file back from disk and compare its checksum.

    Eight reader threads: thousands of small files are bound by the disk's
    latency, not by hashing, so overlapping the reads is what makes the
    batch fast (``preadv`` and the hashes release the GIL).

    The readers count the bytes they read (inside a file too, so one huge
    member still reports); this thread reports them as phase ``verify``
    every ``progress.step`` bytes and at least once a second. A stop signal
    raised there cancels the readers and waits for them before it leaves.
    """
    stop = threading.Event()
    lock = threading.Lock()
    read = 0
    mark = progress.step
    #: Finished futures, and the byte count each time the readers pass
    #: another step (reported one by one: a busy main thread coalesces none).
    events: queue.Queue[Future[int] | int] = queue.Queue()

    def check(f: FileHashes) -> int:
        last = 0

        def tick(n: int) -> None:
            nonlocal read, last, mark
            with lock:
                read += n - last
                if read >= mark:
                    mark = read + progress.step
                    events.put(read)
            last = n
            if stop.is_set():
                raise ReadCancelled()

        return read_back_file(join(target, f.relpath), f, algo, thread_buffer(), tick)

    def check_batch(batch: Sequence[FileHashes]) -> int:
        total = 0
        for f in batch:
            if stop.is_set():
                raise ReadCancelled()
            total += check(f)
        return total

    todo = [f for f in files if f.relpath not in skip]
    # Neighbouring files in batches: one task per file cost more Python
    # (futures, callbacks, GIL hand-offs) than reading a 4 KiB file.
    batches: list[list[FileHashes]] = []
    size = 0
    for f in todo:
        if not batches or len(batches[-1]) >= VERIFY_BATCH_FILES or size >= SMALL_FILE:
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += f.size
    report = progress.reads("verify")
    pool = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="ketter-vfy")
    try:
        for b in batches:
            pool.submit(check_batch, b).add_done_callback(events.put)
        remaining = len(batches)
        high = 0
        while remaining:
            try:
                item = events.get(timeout=0.25)
            except queue.Empty:
                item = read
            if isinstance(item, int):
                high = max(high, item)
            else:
                remaining -= 1
                item.result()  # a mismatch or a read error ends the batch
            report(high)
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def make_temp_dir(path: bytes, root: bytes | None = None) -> tuple[int, Ident]:
    """Create the temporary folder ``path``; returns (a descriptor of it,
    its (st_dev, st_ino)). Close the descriptor.

    The ``.dir`` sits in the shared destination folder, where anyone who can
    write there can rename it away and put their own folder under its name
    (#14): its identity, taken from a descriptor opened without following a
    link, is what :func:`check_temp_dir` and the placement check.

    It is made relative to its folder reached from ``root`` (the route's
    destination root; None: ``path``'s folder by name) without following a
    link: the package path makes it only after the whole zip is written, and
    a destination folder swapped for a link meanwhile made ``mkdir`` by name
    create the ``.dir`` (and extract the members) outside the route."""
    pfd, name = open_parent(root, path)
    try:
        os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    finally:
        os.close(pfd)
    try:
        st = os.fstat(fd)
        # A FUSE network client (smbnetfs) shows the server's modes (its
        # "directory mask"), not the 0700 asked for: not a swap there (#15).
        private = not stat.S_IMODE(st.st_mode) & 0o077 or not inodes_kept(st.st_dev)
        if st.st_uid != os.geteuid() or not private:
            raise swapped(path, "temporary folder")  # swapped between mkdir and open
    except BaseException:
        os.close(fd)
        raise
    return fd, (st.st_dev, st.st_ino)


def through(fd: int, path: bytes) -> bytes:
    """A path that reaches the folder open as ``fd`` whatever its name holds
    now: ``/proc/self/fd/N`` (``path`` where ``/proc`` is not mounted).

    Members are created, read back, flushed and given their metadata below
    it, so a ``.dir`` renamed away mid-copy and replaced by a folder of links
    cannot make Ketter create members through those links (outside the
    route): everything below our own ``0700`` folder is ours."""
    proc = b"/proc/self/fd/%d" % fd
    return proc if os.path.isdir(proc) else path


def check_temp_dir(path: bytes, ident: Ident) -> None:
    """The temporary folder's name still holds the folder Ketter created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise swapped(path, "temporary folder") from None
    if not same_ident(st, ident):  # the inode only where the filesystem keeps it (#15)
        raise swapped(path, "temporary folder")


def copy_folder(
    spec: TransferSpec, plan: SourcePlan, tmpdir: bytes, ctx: TransferContext, progress: Progress
) -> tuple[list[FileHashes], int, Ident]:
    """Copy the manifest into ``tmpdir`` (created here), flush, verify from
    disk and check the source did not change. Returns (hashes, bytes, the
    folder's identity)."""
    tfd, ident = make_temp_dir(tmpdir, spec.destination_root)
    try:
        target = through(tfd, tmpdir)
        check_collisions(target, [e.relpath for e in (*plan.dirs, *plan.files)])
        make_dirs(target, plan.dirs)
        members = MemberCopy(spec, ctx, plan, target, progress)
        try:
            members.run()
            apply_dir_metadata(target, plan.dirs)
            flush_tree(target, plan.files, plan.dirs)
            members.finish()
        finally:
            members.close()
        verify_tree(target, members.out, spec.verify, members.verified, progress)
    finally:
        os.close(tfd)
    check_unchanged(plan)
    check_temp_dir(tmpdir, ident)
    return members.out, members.done, ident


def temp_parent(final: bytes) -> bytes:
    return split(final)[0]
