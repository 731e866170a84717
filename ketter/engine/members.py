"""Copy the members of an ``as_unit`` folder into its temporary folder.

Three sizes, three ways (all end verified from the disk before the folder
is placed):

* **small** (under 1 MiB): copied one after the other in this thread, not
  fsynced; the caller flushes the whole tree once (``syncfs``) and reads
  them back in batches (:func:`~ketter.engine.folders.verify_tree`);
* **mid-size** (1 MiB up to 64 MiB: image-sequence frames, audio stems):
  copied the same way, but each file's write-back starts as soon as it is
  written, and a :class:`FileTrail` reads it back from the disk once that
  write-back is done, while the next files are being copied. Copying,
  flushing and verifying one after the other left the CPU idle during the
  flush and the disk idle during the hashing (200 × 8 MiB: 7.2–7.6 s
  against 6.0–6.3 s, docs/performance.md);
* **big** (64 MiB and up): :func:`~ketter.engine.copyfile.copy_durable`,
  with its own fsync and trailing verification.

Durability still comes from the caller's one ``syncfs`` before placement;
the early write-back only moves the disk work forward.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ketter.errors import PermanentError

from .context import TransferContext
from .copyfile import copy_durable
from .copyio import FileCopy
from .hashing import ReadCancelled, thread_buffer
from .inline import SMALL_FILE, copy_small
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


class FileTrail:
    """Reads finished mid-size members back from the disk while the copy
    goes on: waits for each file's write-back, evicts it, re-reads and
    compares it. :meth:`finish` raises the first mismatch or read error."""

    def __init__(self, target: bytes, algo: str) -> None:
        self.target = target
        self.algo = algo
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(TRAIL_THREADS, thread_name_prefix="ketter-trail")
        self._futures: deque[Future[int]] = deque()
        self._lock = threading.Lock()
        #: Bytes read back so far (reported while the caller waits).
        self.read = 0

    def submit(self, f: FileHashes) -> None:
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()  # an early mismatch ends the copy early
        self._futures.append(self._pool.submit(self._check, f))

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
        self.out: list[FileHashes] = []
        self.verified: set[bytes] = set()
        self.done = 0

    def run(self) -> None:
        for e in self.plan.files:
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
            if e.size >= MID_FILE:
                self.trail.submit(FileHashes(e.relpath, fc.size, fc.hashes, ident=fc.ident))
                self.verified.add(e.relpath)
            self._record(e, fc)

    def finish(self) -> None:
        """After the tree is flushed: the trailing read-backs all passed."""
        while not self.trail.wait(0.5):
            self.progress(self.trail.read, "verify")
        self.trail.finish()

    def close(self) -> None:
        """Stop and wait for the read-back threads (always call, also on an error)."""
        self.trail.close()

    def _dst(self, e: FileEntry) -> bytes:
        return join(self.tmpdir, safe_relpath(e.relpath))

    def _copy_small(self, e: FileEntry) -> FileCopy:
        try:
            return copy_small(
                self.plan.entry_path(e), e, self._dst(e), self.spec.algorithms,
                start_write_back=e.size >= MID_FILE,
            )  # fmt: skip
        except FileExistsError:
            raise PermanentError(
                f"{show(e.relpath)} collides with another name on the destination filesystem"
            ) from None

    def _record(self, e: FileEntry, fc: FileCopy) -> None:
        # With the inode written: the batch read-back (verify_tree) checks
        # it reads that file, not one put in a swapped temporary folder.
        self.out.append(FileHashes(e.relpath, fc.size, fc.hashes, ident=fc.ident))
        self.done += fc.size
        if len(self.out) == 1:
            self.ctx.fault("mid-copy")
        self.progress(self.done, "copy")
