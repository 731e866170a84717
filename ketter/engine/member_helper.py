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
here as the threads raise it; a helper that dies once it has started is a
transient error (the job is retried); one that dies or hangs before it
says it is ready hands its batches to the fallback. The read-ahead is a
hint: it changes no byte and no check.

Where the helper cannot be started (no fork allowed, out of processes) or
``KETTER_MEMBER_HELPER=0``, the read-back runs in the fallback given
(a :class:`~ketter.engine.members.FileTrail`) and nothing is read ahead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

from ketter.errors import KetterError, TransientError

from .oserrors import classify_oserror
from .paths import join
from .results import FileHashes

log = logging.getLogger(__name__)

#: The batch number of a read-ahead message, and of the helper's first
#: answer once it has started (the child imports them from here: nothing
#: imports the child, which runs as ``python -m``).
WARM = -1
READY = -2
#: The message protocol between this module and the child, passed on its
#: command line: a child from another version (a package upgraded in place
#: under a running worker) exits before ``READY``, and the fallback reads
#: back instead.
PROTOCOL = 1
#: A helper not ready after this long is stopped and the fallback reads back.
READY_SECONDS = 60.0


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


def _interpreter_flags() -> list[str]:
    """As isolated as this process (the units run ``python -I``), and never
    the working folder's modules (``-P``)."""
    if sys.flags.isolated:
        return ["-I"]
    flags = ["-P"]
    if sys.flags.ignore_environment:
        flags.append("-E")
    if sys.flags.no_user_site:
        flags.append("-s")
    return flags


def _above_stdio(fds: list[int]) -> None:
    """Move any of ``fds`` numbered 0-2 above them, in place: the child's
    stdin and stdout are put on 0 and 1, over a descriptor that a process
    started with them closed would have got there."""
    for i, fd in enumerate(fds):
        if fd < 3:
            fds[i] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)


class MemberHelper:
    """A :class:`Trail` in a helper process, started at the first batch to
    read ahead or back. Start, feed and close it from one thread that lives
    as long as it: ``PR_SET_PDEATHSIG`` kills the helper when the *thread*
    that started it ends.

    A helper that dies before it said it was ready (``READY``: it could not
    import Ketter, the interpreter is not usable) hands what it was given
    to the fallback; one that dies later is a transient error."""

    def __init__(self, target: bytes, algo: str, fallback: Callable[[], Trail]) -> None:
        self.target = target
        self.algo = algo
        self._fallback_factory = fallback
        self._fallback: Trail | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._started = 0.0
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
        return self._read + (self._fallback.read if self._fallback is not None else 0)

    def submit_batch(self, files: Sequence[FileHashes]) -> None:
        """Read ``files`` back, one after the other, in the helper."""
        self._start_once()
        if self._fallback is None:
            self._collect(0)  # an early mismatch ends the copy early
        if self._fallback is not None:
            self._fallback.submit_batch(files)
            return
        self._pending[self._next] = files
        self._outbox.put((self._next, self.algo, list(files)))
        self._next += 1

    def warm(self, paths: list[bytes]) -> None:
        """Have the helper start reading these sources into the page cache
        (nothing without a helper process)."""
        self._start_once()
        if self._fallback is None:
            self._outbox.put((WARM, "", paths))

    def wait(self, timeout: float) -> bool:
        """True once every batch submitted has been read back."""
        if self._fallback is None and self._pending:
            self._collect(timeout)
        if self._fallback is not None:
            return self._fallback.wait(timeout)
        return not self._pending

    def finish(self) -> None:
        """Wait for every batch; raise the first failure."""
        while self._fallback is None and self._pending:
            self._collect(1.0)
        if self._fallback is not None:
            self._fallback.finish()

    def close(self) -> None:
        """Stop the helper (always call, also on an error)."""
        if self._fallback is not None:
            self._fallback.close()
        self._stop()

    def _start_once(self) -> None:
        if self._fallback is not None or self._proc is not None:
            return
        if not enabled():
            self._fall_back(None)
            return
        try:
            self._spawn()
        except (OSError, RuntimeError) as exc:  # no fd, no process, no thread
            self._stop()
            self._fall_back(f"cannot start the member helper process ({exc})")

    def _spawn(self) -> None:
        theirs: list[int] = []
        ours: list[int] = []
        try:
            theirs.append(os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            r, w = os.pipe()
            theirs.append(r)
            ours.append(w)
            r, w = os.pipe()
            ours.append(r)
            theirs.append(w)
            _above_stdio(theirs)
            _above_stdio(ours)
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    *_interpreter_flags(),
                    "-m",
                    f"{__package__}.member_helper_child",
                    str(PROTOCOL),
                    str(os.getpid()),
                    *(str(fd) for fd in theirs),
                ],
                pass_fds=theirs,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self._out = Connection(ours[0], readable=False)
        self._in = Connection(ours[1], writable=False)
        self._started = time.monotonic()
        sender = threading.Thread(target=self._send, name="ketter-member-feed", daemon=True)
        sender.start()
        self._sender = sender

    def _send(self) -> None:
        """Feed the helper without ever making the copy wait on the pipe."""
        assert self._out is not None and self._proc is not None
        try:
            while (item := self._outbox.get()) is not None:
                self._out.send(item)
        except OSError:
            return  # the helper is gone: _collect says so
        except BaseException:
            log.exception("feeding the member helper process failed; stopping it")
            self._proc.kill()  # _collect sees its end
            raise

    def _stop(self) -> None:
        """Stop and reap the helper, its feed and its pipes (idempotent)."""
        self._outbox.put(None)
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            self._proc.wait()
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        for conn in (self._out, self._in):
            if conn is not None:
                conn.close()
        self._out = self._in = None

    def _fall_back(self, why: str | None) -> None:
        if why is not None:
            log.warning("%s; reading back in one thread", why)
        self._fallback = self._fallback_factory()

    def _collect(self, timeout: float) -> None:
        """Take the helper's answers (waiting up to ``timeout`` for the
        first); raise the first failure."""
        assert self._in is not None
        while self._pending:
            if not self._in.poll(timeout):
                if not self._ready and time.monotonic() - self._started > READY_SECONDS:
                    assert self._proc is not None
                    self._proc.kill()  # stuck at its start: the fallback reads back
                    self._ended()
                return
            timeout = 0
            try:
                batch, n, failure = self._in.recv()
            except (EOFError, OSError):
                self._ended()
                return
            if batch == READY:
                self._ready = True
                continue
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

    def _ended(self) -> None:
        """The helper's answers ended: before it was ready, what it was
        given goes to the fallback; after, the job is retried."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its pipe closed, itself still there
            self._proc.kill()
            code = self._proc.wait()
        self._stop()
        if not self._ready:
            self._fall_back(f"the member helper process exited at its start (status {code})")
            assert self._fallback is not None
            for batch in sorted(self._pending):
                self._fallback.submit_batch(self._pending[batch])
            self._pending.clear()
            return
        raise TransientError(
            f"the member helper process ended unexpectedly (exit status {code}) "
            "while the copy was read back from the disk; nothing was placed, "
            "the job is retried"
        )
