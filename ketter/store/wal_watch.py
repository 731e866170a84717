"""How much of the SQLite job store's write-ahead log is in use, and which
processes hold the store open: what ``ketter health`` reports when a long
read transaction keeps SQLite from starting the log again.

SQLite copies the WAL into the database at its automatic checkpoints and
starts it again from the beginning once no reader needs its frames. A read
transaction left open (a forgotten ``sqlite3`` shell inside ``BEGIN``, a
stuck report) pins every frame written after its snapshot: the log then
grows with the write rate (about 4 MiB a second at 50 files/s,
docs/performance-watcher.md) until the state disk is full, which pauses
every route. ``journal_size_limit`` cuts the file back only once the log is
started again, so the file's size says little: the part in use does
(``mxFrame`` of the wal-index header in the ``-shm`` file). The ``-shm``
file is read through one descriptor per process that is never closed
(:data:`_SHM`): see there why.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class WalState:
    """The log of one SQLite database."""

    #: Size of ``<db>-wal`` (0 when there is none).
    file_bytes: int
    #: Its header and the frames written since the log last started again;
    #: ``None`` when this account may not read the ``-shm`` file.
    in_use_bytes: int | None


def wal_state(db_path: str) -> WalState:
    """The log of the SQLite database at ``db_path`` (a symbolic link is
    followed, as SQLite does), read from its files alone: no connection (a
    reader would take a snapshot of its own)."""
    real = os.path.realpath(db_path)
    try:
        file_bytes = os.stat(real + "-wal").st_size
    except FileNotFoundError:
        return WalState(0, 0)
    except OSError:
        return WalState(0, None)
    in_use = _in_use(real + "-shm")
    return WalState(file_bytes, None if in_use is None else min(file_bytes, in_use))


#: ``-shm`` path → ``(fd, dev, ino)``: one descriptor per file, never closed.
#: SQLite's locks on the wal-index are POSIX record locks, which belong to the
#: process: closing *any* descriptor of the file drops every lock this
#: process holds on it (a read transaction's snapshot mark among them), so
#: a process with the store open (the API serving ``/metrics``) must not
#: open and close it at each look.
_SHM: dict[str, tuple[int, int, int]] = {}
_SHM_LOCK = threading.Lock()


def _in_use(shm_path: str) -> int | None:
    # The wal-index header (SQLite's wal.c, WalIndexHdr, 48 bytes, written
    # twice: copy 1 first, then copy 0; a reader trusts them when they
    # agree), native byte order: iVersion u32, unused u32, iChange u32,
    # isInit u8, bigEndCksum u8, szPage u16 (1 means 65536), mxFrame u32.
    fd = _shm_fd(shm_path)
    if fd is None:
        return None
    if fd < 0:
        return 0
    head = b""
    for _ in range(5):
        try:
            head = os.pread(fd, 96, 0)
        except OSError:
            return None
        if len(head) == 96 and head[:48] == head[48:]:
            break
    if len(head) < 24 or not head[12]:
        return 0
    page = int.from_bytes(head[14:16], sys.byteorder)
    page = 65536 if page == 1 else page
    frames = int.from_bytes(head[16:20], sys.byteorder)
    return 32 + frames * (page + 24) if frames else 0


def _shm_fd(shm_path: str) -> int | None:
    """This process's descriptor of ``shm_path`` (see :data:`_SHM`): ``-1``
    when there is no such file, ``None`` when it may not be read. A file
    replaced (a new store) gets a new descriptor; the old one stays open."""
    with _SHM_LOCK:
        try:
            st = os.stat(shm_path)
        except FileNotFoundError:
            return -1
        except OSError:
            return None
        known = _SHM.get(shm_path)
        if known is not None and known[1:] == (st.st_dev, st.st_ino):
            return known[0]
        try:
            fd = os.open(shm_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return -1
        except OSError:
            return None
        opened = os.fstat(fd)
        _SHM[shm_path] = (fd, opened.st_dev, opened.st_ino)
        return fd


def holders(db_path: str, *, proc: str = "/proc") -> list[tuple[int, str]]:
    """``(pid, command line)`` of each other process with the database or
    its log open (``/proc/PID/fd``; the processes this account may look
    into; not this one, which holds the ``-shm`` file to read it)."""
    real = os.path.realpath(db_path)
    wanted = {real + suffix for suffix in ("", "-wal", "-shm")}
    me = str(os.getpid())
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit() and entry != me]
    except OSError:
        return []
    found = []
    for pid in pids:
        fds = os.path.join(proc, pid, "fd")
        try:
            names = os.listdir(fds)
        except OSError:  # gone, or another account's
            continue
        for name in names:
            try:
                target = os.readlink(os.path.join(fds, name))
            except OSError:  # closed meanwhile
                continue
            if target.removesuffix(" (deleted)") in wanted:
                found.append((int(pid), _command(proc, pid)))
                break
    return sorted(found)


def _command(proc: str, pid: str) -> str:
    try:
        with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"
