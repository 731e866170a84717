"""The helper process of a folder's small members
(:mod:`.member_helper_child`): it reads the sources ahead of the copy and
reads the copies back from the disk while the copy goes on.

Why a process: a 4 KiB member's read-back is a handful of syscalls, and a
thread of the copying process gives the interpreter lock back at each one.
With the copy in one thread and the read-back in another, the two took the
lock from each other thousands of times a second (``futex`` was 17 % of a
10,000-file run in ``perf``), and reading back beside the copy was no
faster than reading back after it. In a process of its own the helper runs
on the other core and the copy's thread keeps its lock. The same process
reads the sources ahead: the copy thread read each cold 4 KiB source with
one wait on the disk (a third of its time).

The read-back makes the same checks as the threads (it runs the same
:func:`~ketter.engine.verify.read_back_file`): each member is opened below
the temporary folder Ketter created, without blocking and only if it is a
regular file and the inode written; its write-back waited for, its pages
evicted, re-read from the disk and compared. The first failure is raised
here as the threads raise it; a helper that dies is a transient error
(the job is retried). The read-ahead is a hint: it changes no byte and no
check.

Where the helper cannot be started (no fork allowed, out of processes) or
``KETTER_MEMBER_HELPER=0``, the read-back runs in the fallback given
(a :class:`~ketter.engine.members.FileTrail`) and nothing is read ahead.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

from ketter.errors import KetterError, TransientError

from .oserrors import classify_oserror
from .paths import join
from .results import FileHashes

log = logging.getLogger(__name__)

#: The batch number of a read-ahead message (the child imports it from
#: here: nothing imports the child, which runs as ``python -m``).
WARM = -1


class Trail(Protocol):
    """What :class:`~ketter.engine.members.MemberCopy` asks of a read-back."""

    @property
    def read(self) -> int: ...

    def submit_batch(self, files: Sequence[FileHashes]) -> None: ...
    def warm(self, paths: list[bytes]) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


def enabled() -> bool:
    return os.environ.get("KETTER_MEMBER_HELPER", "1") != "0"


class MemberHelper:
    """A :class:`Trail` in a helper process, started at the first batch to
    read ahead or back."""

    def __init__(self, target: bytes, algo: str, fallback: Callable[[], Trail]) -> None:
        self.target = target
        self.algo = algo
        self._fallback_factory = fallback
        self._fallback: Trail | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Connection | None = None
        self._in: Connection | None = None
        self._outbox: queue.SimpleQueue[tuple[int, str, list[Any]] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        #: Batches sent and not answered yet, by number.
        self._pending: dict[int, Sequence[FileHashes]] = {}
        self._next = 0
        self._read = 0

    @property
    def read(self) -> int:
        """Bytes read back so far."""
        return self._fallback.read if self._fallback is not None else self._read

    def submit_batch(self, files: Sequence[FileHashes]) -> None:
        """Read ``files`` back, one after the other, in the helper."""
        if self._fallback is None and self._proc is None:
            self._start()
        if self._fallback is not None:
            self._fallback.submit_batch(files)
            return
        self._collect(0)  # an early mismatch ends the copy early
        self._pending[self._next] = files
        self._outbox.put((self._next, self.algo, list(files)))
        self._next += 1

    def warm(self, paths: list[bytes]) -> None:
        """Have the helper start reading these sources into the page cache
        (nothing without a helper process)."""
        if self._fallback is None and self._proc is None:
            self._start()
        if self._fallback is None:
            self._outbox.put((WARM, "", paths))

    def wait(self, timeout: float) -> bool:
        """True once every batch submitted has been read back."""
        if self._fallback is not None:
            return self._fallback.wait(timeout)
        self._collect(timeout)
        return not self._pending

    def finish(self) -> None:
        """Wait for every batch; raise the first failure."""
        if self._fallback is not None:
            self._fallback.finish()
            return
        while self._pending:
            self._collect(1.0)

    def close(self) -> None:
        """Stop the helper (always call, also on an error)."""
        if self._fallback is not None:
            self._fallback.close()
        if self._proc is None:
            return
        self._outbox.put(None)
        self._proc.kill()
        self._proc.wait()
        if self._sender is not None:
            self._sender.join()
        for conn in (self._out, self._in):
            if conn is not None:
                conn.close()

    def _start(self) -> None:
        if not enabled():
            self._fallback = self._fallback_factory()
            return
        dir_fd = os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        to_child, from_child = os.pipe(), os.pipe()
        theirs = (dir_fd, to_child[0], from_child[1])
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    # As isolated as this process (the units run `python -I`);
                    # never the working folder's modules.
                    "-I" if sys.flags.isolated else "-P",
                    "-m",
                    f"{__package__}.member_helper_child",
                    str(os.getpid()),
                    *(str(fd) for fd in theirs),
                ],
                pass_fds=theirs,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            for fd in (to_child[1], from_child[0]):
                os.close(fd)
            log.warning(
                "cannot start the read-back helper process (%s); reading back in threads",
                exc,
            )
            self._fallback = self._fallback_factory()
            return
        finally:
            for fd in theirs:
                os.close(fd)
        self._out = Connection(to_child[1], readable=False)
        self._in = Connection(from_child[0], writable=False)
        self._sender = threading.Thread(target=self._send, name="ketter-readback-send", daemon=True)
        self._sender.start()

    def _send(self) -> None:
        """Feed the helper without ever making the copy wait on the pipe."""
        assert self._out is not None
        while (item := self._outbox.get()) is not None:
            try:
                self._out.send(item)
            except OSError:
                return  # the helper is gone: _collect says so

    def _collect(self, timeout: float) -> None:
        """Take the helper's answers (waiting up to ``timeout`` for the
        first); raise the first failure."""
        assert self._in is not None
        while self._pending and self._in.poll(timeout):
            timeout = 0
            try:
                batch, n, failure = self._in.recv()
            except (EOFError, OSError):
                raise self._ended() from None
            files = self._pending.pop(batch)
            self._read += n
            if failure is not None:
                raise self._failure(files, failure)

    def _failure(self, files: Sequence[FileHashes], failure: tuple[Any, ...]) -> KetterError:
        index, kind = failure[0], failure[1]
        path = join(self.target, files[index].relpath)
        if kind == "os":
            exc = OSError(failure[2], failure[3])
            return classify_oserror(exc, path, "read the copy back")
        err: KetterError = failure[2]
        return err

    def _ended(self) -> TransientError:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its pipe closed, itself still there
            self._proc.kill()
            code = self._proc.wait()
        return TransientError(
            f"the read-back helper process ended unexpectedly (exit status {code}) "
            "while the copy was read back from the disk; nothing was placed, "
            "the job is retried"
        )
