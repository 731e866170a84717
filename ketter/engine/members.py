"""Copy the members of an ``as_unit`` folder into its temporary folder.

Three sizes, three ways (all end verified from the disk before the folder
is placed):

* **small** (under 1 MiB): copied in batches by one copy thread, not
  fsynced one by one. Every :data:`FLUSH_FILES` members, one ``syncfs`` in
  a background thread writes them back, and they are read back from the
  disk while the next ones are copied: by the helper process
  (:mod:`.member_helper`, which also reads the sources ahead of the copy)
  from :data:`HELPER_FILES` small members on, else by a
  :class:`FileTrail` of one thread. On a network or FUSE destination,
  where every create and read is a round trip, two copy threads and a
  :class:`FileTrail` of six readers instead (:data:`NETWORK_COPY_THREADS`).
  Copying in one thread, then one ``syncfs``, then reading back took
  2.35 s + 1.53 s for 10,000 × 4 KiB: the read-back waits on the disk, the
  copy on the CPU, so they overlap (docs/performance.md). A write-back
  started per file (``sync_file_range``) cost more CPU than the copy
  itself. On a local disk more threads cost more than they bring
  (measured, see :data:`COPY_THREADS`);
* **mid-size** (1 MiB up to 64 MiB: image-sequence frames, audio stems):
  copied one after the other in this thread, each file's write-back started
  as soon as it is written, and read back by a :class:`FileTrail` of
  :data:`TRAIL_THREADS` once that write-back is done. Copying, flushing and
  verifying one after the other left the CPU idle during the flush and the
  disk idle during the hashing (200 × 8 MiB: 7.2–7.6 s against 6.0–6.3 s,
  docs/performance.md);
* **big** (64 MiB and up): :func:`~ketter.engine.copyfile.copy_durable`,
  with its own fsync and trailing verification.

Durability still comes from the caller's final ``syncfs`` (after the
folders' metadata) before placement; the early flushes only move the disk
work forward. A read-back starts only once its file is written back (the
early ``syncfs`` returned, or the caller's final flush), and still waits
for the file's write-back and evicts it first, so it reads the disk
(``read_back_file(wait_write_back=True)``). Without ``syncfs`` the small
members are read back after the caller's flush, as before.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ketter.errors import PermanentError
from ketter.mounts import attributes_current

from .context import TransferContext
from .copyfile import copy_durable
from .copyio import FileCopy
from .hashing import ReadCancelled, syncfs, thread_buffer
from .inline import SMALL_FILE, copy_small
from .member_helper import MemberHelper, Trail
from .oserrors import classify_oserror
from .paths import join, safe_relpath, show
from .progress import Progress
from .results import FileHashes
from .source import FileEntry, SourcePlan
from .spec import TransferSpec
from .verify import read_back_file

#: Members from this size up are read back while the copy goes on.
MID_FILE = SMALL_FILE
#: Members at least this big get their own fsync and trailing verification.
BIG_FILE = 64 * SMALL_FILE
TRAIL_THREADS = 2
#: Threads copying small members, and reading them back. One of each: two
#: copy threads wait for each other on the folder's lock (every create takes
#: it; ``perf`` showed 6 % of the run spinning on it) and, like more
#: readers, pass the interpreter lock back and forth at every syscall (17 %
#: of the run in ``futex``). 10,000 × 4 KiB, alternated cold runs: 1 + 1
#: took 3.37 s against 3.84 s for 2 + 6 (quiet host) and 5.78 s against
#: 6.10 s (two CPU hogs running), with a quarter less CPU
#: (docs/performance.md, session 15). On a local destination
#: (:func:`~ketter.mounts.attributes_current`).
COPY_THREADS = 1
SMALL_TRAIL_THREADS = 1
#: On a network or FUSE destination every create and every read is a round
#: trip to the server, and more threads keep more of them in flight (no
#: helper process there): sshfs, 1,200 × 4 KiB, 2 copy and 6 read-back
#: threads took 2.08 s against 2.58 s for one copy thread and the helper.
NETWORK_COPY_THREADS = 2
NETWORK_TRAIL_THREADS = 6
#: Small members per copy (and read-back) task: one task per file cost more
#: Python (futures, GIL hand-offs) than copying a 4 KiB file.
COPY_BATCH_FILES = 32
#: Copy batches queued ahead of the one recorded, per copy thread (bounds
#: what is in flight).
COPY_AHEAD = 2
#: Small members copied per early ``syncfs``, after which they are read back.
FLUSH_FILES = 1024
#: Folders with at least this many small members get the helper process
#: (:mod:`.member_helper`); fewer are read back by one thread after the
#: final flush: the helper takes ~0.1 s to start, about what one thread
#: takes to read back this many.
HELPER_FILES = 1024
#: How far ahead of the copy the helper reads small sources into the page
#: cache: at most this many members and bytes. 10,000 cold 4 KiB sources,
#: alternated runs: 32 members ahead 2.72 s, 1,024 ahead 2.47 s (the
#: helper starts ~0.1 s after the copy and catches up in bulk).
WARM_FILES = 1024
WARM_BYTES = 64 * SMALL_FILE


class FileTrail:
    """Reads finished mid-size members back from the disk while the copy
    goes on: waits for each file's write-back, evicts it, re-reads and
    compares it. :meth:`finish` raises the first mismatch or read error."""

    def __init__(self, target: bytes, algo: str, threads: int = TRAIL_THREADS) -> None:
        self.target = target
        self.algo = algo
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ketter-trail")
        self._futures: deque[Future[int]] = deque()
        self._lock = threading.Lock()
        #: Bytes read back so far (reported while the caller waits).
        self.read = 0

    def submit(self, f: FileHashes) -> None:
        self.submit_batch([f])

    def submit_batch(self, files: Sequence[FileHashes]) -> None:
        """Read ``files`` back one after the other in one task."""
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()  # an early mismatch ends the copy early
        self._futures.append(self._pool.submit(self._check_batch, files))

    def _check_batch(self, files: Sequence[FileHashes]) -> int:
        return sum(self._check(f) for f in files)

    def _check(self, f: FileHashes) -> int:
        if self.stop.is_set():
            raise ReadCancelled()

        def cancel(_: int) -> None:
            if self.stop.is_set():
                raise ReadCancelled()

        path = join(self.target, f.relpath)
        try:
            n = read_back_file(path, f, self.algo, thread_buffer(), cancel, wait_write_back=True)
        except OSError as exc:
            raise classify_oserror(exc, path, "read the copy back") from exc
        with self._lock:
            self.read += n
        return n

    def warm(self, paths: list[bytes]) -> None:
        """Nothing: threads of this process would take the copy's
        interpreter lock to read ahead (:mod:`.member_helper`)."""

    def wait(self, timeout: float) -> bool:
        """True once every submitted file has been read back (or failed)."""
        return not wait(self._futures, timeout).not_done

    def finish(self) -> None:
        while self._futures:
            self._futures.popleft().result()

    def close(self) -> None:
        """Cancel what has not started and wait for the rest (always call)."""
        self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class MemberCopy:
    """Copies ``plan.files`` into ``tmpdir`` in manifest order (see the
    module doc). After :meth:`run`: ``out`` holds every file's checksums,
    ``verified`` the members already read back from disk."""

    def __init__(
        self,
        spec: TransferSpec,
        ctx: TransferContext,
        plan: SourcePlan,
        tmpdir: bytes,
        progress: Progress,
    ) -> None:
        self.spec, self.ctx, self.plan, self.tmpdir = spec, ctx, plan, tmpdir
        self.progress = progress
        self.trail = FileTrail(tmpdir, spec.verify)

        local = attributes_current(os.stat(tmpdir).st_dev)
        self._copy_threads = COPY_THREADS if local else NETWORK_COPY_THREADS
        trail_threads = SMALL_TRAIL_THREADS if local else NETWORK_TRAIL_THREADS

        def threads() -> FileTrail:
            return FileTrail(tmpdir, spec.verify, trail_threads)

        small = sum(1 for e in plan.files if e.size < MID_FILE)
        self.small_trail: Trail = (
            MemberHelper(tmpdir, spec.verify, threads)
            if local and small >= HELPER_FILES
            else threads()
        )
        self._stop = threading.Event()
        self._copiers: ThreadPoolExecutor | None = None
        #: Small-member batches being copied, oldest first.
        self._pending: deque[tuple[list[FileEntry], Future[list[FileCopy]]]] = deque()
        #: Small members copied, not yet flushed (batches of the read-back).
        self._unflushed: list[list[FileHashes]] = []
        self._unflushed_files = 0
        #: Early flushes asked for, oldest first, with the batches each covers.
        self._flushing: deque[tuple[Future[bool], list[list[FileHashes]]]] = deque()
        self._flusher: ThreadPoolExecutor | None = None
        #: Batches to read back only after the caller's final flush.
        self._late: list[list[FileHashes]] = []
        #: The next of ``plan.files`` to read ahead, and the bytes read
        #: ahead and not copied yet.
        self._warm_next = 0
        self._warm_bytes = 0
        self.out: list[FileHashes] = []
        self.verified: set[bytes] = set()
        self.done = 0

    def run(self) -> None:
        batch: list[FileEntry] = []
        for i, e in enumerate(self.plan.files):
            if e.size < MID_FILE:
                if not batch:
                    self._warm_ahead(i)
                batch.append(e)
                if i < self._warm_next:
                    self._warm_bytes -= e.size
                if len(batch) >= COPY_BATCH_FILES:
                    self._copy_batch(batch)
                    batch = []
                continue
            # Mid-size and big members in this thread, in manifest order.
            self._copy_batch(batch)
            batch = []
            self._drain(0)
            if e.size >= BIG_FILE:
                self.progress.base = self.done
                fc = copy_durable(
                    self.spec, self.ctx, self.plan.entry_path(e), e, self._dst(e),
                    progress=self.progress,
                )  # fmt: skip
                self.progress.base = 0
                self.verified.add(e.relpath)
                self._record(e, fc)
                continue
            fc = self._copy_small(e)
            self.trail.submit(FileHashes(e.relpath, fc.size, fc.hashes, ident=fc.ident))
            self.verified.add(e.relpath)
            self._record(e, fc)
        self._copy_batch(batch)
        self._drain(0)

    def _warm_ahead(self, at: int) -> None:
        """Have the helper read the small sources from ``plan.files[at]`` on
        into the page cache, up to :data:`WARM_FILES` / :data:`WARM_BYTES`
        ahead of the copy."""
        files = self.plan.files
        self._warm_next = max(self._warm_next, at)
        paths = []
        while (
            self._warm_next < len(files)
            and self._warm_next - at < WARM_FILES
            and self._warm_bytes < WARM_BYTES
        ):
            e = files[self._warm_next]
            if e.size < MID_FILE:
                paths.append(self.plan.entry_path(e))
                self._warm_bytes += e.size
            self._warm_next += 1
        if paths:
            self.small_trail.warm(paths)

    def _copy_batch(self, batch: list[FileEntry]) -> None:
        """Queue ``batch`` (small members) for the copy threads; record the
        oldest batches while more than :data:`COPY_AHEAD` are in flight."""
        if not batch:
            return
        if self._copiers is None:
            self._copiers = ThreadPoolExecutor(self._copy_threads, thread_name_prefix="ketter-copy")
        self._pending.append((batch, self._copiers.submit(self._copy_many, batch)))
        self._drain(COPY_AHEAD * self._copy_threads)

    def _copy_many(self, batch: list[FileEntry]) -> list[FileCopy]:
        out = []
        for e in batch:
            if self._stop.is_set():
                raise ReadCancelled()
            out.append(self._copy_small(e, start_write_back=False))
        return out

    def _drain(self, keep: int) -> None:
        """Record copied batches, in order, until ``keep`` are left in flight;
        each one's read-back is queued as soon as it is recorded."""
        while len(self._pending) > keep:
            batch, fut = self._pending[0]
            copies = fut.result()  # the first failure ends the copy
            self._pending.popleft()
            hashes = [
                FileHashes(e.relpath, fc.size, fc.hashes, ident=fc.ident)
                for e, fc in zip(batch, copies, strict=True)
            ]
            for e, fc in zip(batch, copies, strict=True):
                self.verified.add(e.relpath)
                self._record(e, fc)
            self._unflushed.append(hashes)
            self._unflushed_files += len(hashes)
            if self._unflushed_files >= FLUSH_FILES:
                self._flush_early()
            self._read_flushed(block=False)

    def _flush_early(self) -> None:
        """Flush the members copied so far in the background (one ``syncfs``
        for the lot: per-file write-back cost more CPU than the copy), so
        they can be read back from the disk while the next are copied."""
        if self._flusher is None:
            self._flusher = ThreadPoolExecutor(1, thread_name_prefix="ketter-flush")
        self._flushing.append((self._flusher.submit(self._syncfs), self._unflushed))
        self._unflushed, self._unflushed_files = [], 0

    def _syncfs(self) -> bool:
        if self._stop.is_set():
            raise ReadCancelled()
        fd = os.open(self.tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return syncfs(fd)
        finally:
            os.close(fd)

    def _read_flushed(self, *, block: bool) -> None:
        """Queue the read-back of the batches an early flush has written."""
        while self._flushing and (block or self._flushing[0][0].done()):
            fut, batches = self._flushing.popleft()
            if not fut.result():  # no syncfs here: read back after the final flush
                self._late.extend(batches)
                continue
            for b in batches:
                self.small_trail.submit_batch(b)

    def finish(self) -> None:
        """After the tree is flushed: the trailing read-backs all passed.

        Reports phase ``verify`` with the bytes read back (those read while
        the copy went on first, a checkpoint per ``progress.step``, as
        :func:`~ketter.engine.folders.verify_tree` reports them)."""
        self._read_flushed(block=True)
        for b in (*self._late, *self._unflushed):
            self.small_trail.submit_batch(b)
        self._late, self._unflushed = [], []
        report = self.progress.reads("verify")
        reported = 0

        def catch_up() -> None:
            nonlocal reported
            done = self.small_trail.read + self.trail.read
            while done - reported >= self.progress.step:
                reported += self.progress.step
                report(reported)
            report(done)

        for trail in (self.small_trail, self.trail):
            while not trail.wait(0.25):
                catch_up()
            trail.finish()
        catch_up()

    def close(self) -> None:
        """Stop and wait for the copy and read-back threads (always call,
        also on an error)."""
        self._stop.set()
        for pool in (self._copiers, self._flusher):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.small_trail.close()
        self.trail.close()

    def _dst(self, e: FileEntry) -> bytes:
        return join(self.tmpdir, safe_relpath(e.relpath))

    def _copy_small(self, e: FileEntry, *, start_write_back: bool = True) -> FileCopy:
        try:
            return copy_small(
                self.plan.entry_path(e), e, self._dst(e), self.spec.algorithms,
                start_write_back=start_write_back,
            )  # fmt: skip
        except FileExistsError:
            raise PermanentError(
                f"{show(e.relpath)} collides with another name on the destination filesystem"
            ) from None

    def _record(self, e: FileEntry, fc: FileCopy) -> None:
        # With the inode written: the read-back checks it reads that file,
        # not one put in a swapped temporary folder.
        self.out.append(FileHashes(e.relpath, fc.size, fc.hashes, ident=fc.ident))
        self.done += fc.size
        if len(self.out) == 1:
            self.ctx.fault("mid-copy")
        self.progress(self.done, "copy")
