"""The helper process of a folder's small members (started and fed by
:class:`.member_helper.MemberHelper`). Two jobs, both off the copying
process's core and interpreter lock:

* **read the sources ahead**: ``posix_fadvise(WILLNEED)`` on the members
  the copy will reach next, so that their bytes are in the page cache
  when it gets there (a cold 4 KiB file is one wait on the disk, and the
  copy thread waited for them one after the other). A hint only: a source
  that cannot be opened is skipped here and the copy reports it;
* **read the copies back** from the disk and compare each with the
  source's checksum (:func:`~ketter.engine.verify.read_back_file`, the
  same function the threads use).

Run as ``python -P -m ketter.engine.member_helper_child PROTOCOL PARENT
DIR_FD IN_FD OUT_FD`` (``-I`` instead of ``-P`` when the parent runs
isolated, as the units do; ``-E``/``-s`` as the parent has them):
``PROTOCOL`` the parent's message protocol (another one: it exits at
once, before ``READY``), ``PARENT`` is the pid that started it,
``DIR_FD`` the temporary folder (members are opened relative to it, below Ketter's own
``0700`` folder whatever its name holds), ``IN_FD`` / ``OUT_FD`` the two
pipes of :class:`multiprocessing.connection.Connection` messages:

* in: ``(batch, algo, [FileHashes, ...])`` to read back, or
  ``(WARM, "", [source path, ...])`` to read ahead (no answer);
* out: ``(READY, 0, None)`` first, once it runs; then for each batch
  ``(batch, bytes_read, None)``, or ``(batch, bytes_read, failure)``
  for the first member that failed, ``failure`` being ``(index, "os",
  errno, strerror)`` or ``(index, "error", KetterError)``.

It never outlives the process that started it: it exits at the end of its
input, and the kernel kills it when its parent dies
(``PR_SET_PDEATHSIG``). Stop signals are the parent's business: it
ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a ``systemctl stop`` is
for the parent, which stops it).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection

from ketter.errors import KetterError
from ketter.runtime.lifeline import die_with

from .hashing import thread_buffer
from .member_helper import PROTOCOL, READY, WARM
from .results import FileHashes
from .verify import read_back_file

#: The first member that failed: ``(index, "os", errno, strerror)`` or
#: ``(index, "error", KetterError)``.
Failure = tuple[int, str, object, object] | tuple[int, str, object]


def _ignore(_: int) -> None:
    return None


def check_batch(
    dir_fd: int, algo: str, files: Sequence[FileHashes], buf: bytearray
) -> tuple[int, Failure | None]:
    """Read ``files`` back, in order, until the first that fails."""
    done = 0
    for i, f in enumerate(files):
        try:
            done += read_back_file(
                f.relpath, f, algo, buf, _ignore, wait_write_back=True, dir_fd=dir_fd
            )
        except OSError as exc:
            return done, (i, "os", exc.errno, exc.strerror)
        except KetterError as exc:
            return done, (i, "error", exc)
    return done, None


def warm(paths: Sequence[bytes]) -> None:
    """Start reading ``paths`` into the page cache (never blocking on a
    special file, never through a link)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def main(argv: Sequence[str]) -> int:
    protocol, parent, dir_fd, in_fd, out_fd = (int(a) for a in argv)
    if protocol != PROTOCOL:  # started by a worker of another version
        return 3
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the parent stops it
    die_with(parent)
    inbox = Connection(in_fd, writable=False)
    outbox = Connection(out_fd, readable=False)
    buf = thread_buffer()
    outbox.send((READY, 0, None))
    while True:
        try:
            batch, algo, files = inbox.recv()
        except EOFError:
            return 0
        if batch == WARM:
            warm(files)
            continue
        try:
            outbox.send((batch, *check_batch(dir_fd, algo, files, buf)))
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
