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
(``mxFrame`` of the wal-index header in the ``-shm`` file).
"""

from __future__ import annotations

import os
import sys
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
    """The log of the SQLite database at ``db_path``, read from its files
    alone (no connection: a reader would take a snapshot of its own)."""
    try:
        file_bytes = os.stat(db_path + "-wal").st_size
    except FileNotFoundError:
        return WalState(0, 0)
    in_use = _in_use(db_path + "-shm")
    return WalState(file_bytes, None if in_use is None else min(file_bytes, in_use))


def _in_use(shm_path: str) -> int | None:
    # The wal-index header (SQLite's wal.c, WalIndexHdr), native byte order:
    # iVersion u32, unused u32, iChange u32, isInit u8, bigEndCksum u8,
    # szPage u16 (1 means 65536), mxFrame u32.
    try:
        with open(shm_path, "rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        return 0
    except PermissionError:
        return None
    if len(head) < 24 or not head[12]:
        return 0
    page = int.from_bytes(head[14:16], sys.byteorder)
    page = 65536 if page == 1 else page
    frames = int.from_bytes(head[16:20], sys.byteorder)
    return 32 + frames * (page + 24) if frames else 0


def holders(db_path: str, *, proc: str = "/proc") -> list[tuple[int, str]]:
    """``(pid, command line)`` of each process with the database or its log
    open (``/proc/PID/fd``; the processes this account may look into)."""
    wanted = {os.path.realpath(db_path + suffix) for suffix in ("", "-wal", "-shm")}
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fds = os.path.join(proc, entry, "fd")
        try:
            links = {os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)}
        except OSError:  # gone, or another account's
            continue
        if links & wanted:
            found.append((int(entry), _command(proc, entry)))
    return sorted(found)


def _command(proc: str, pid: str) -> str:
    try:
        with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"
