"""Who still holds a source open for writing (issue #14, finding 15).

A render or a DAW export that stalls longer than ``stable_seconds`` looks
finished to a size/mtime readiness test: its partial file was delivered,
"verified", and on a move route unlinked while the writer still had it open
(everything written afterwards went into an unlinked inode). On a local
filesystem the kernel knows better: a file is not ready while any process
holds a descriptor on it open for writing.

This reads ``/proc/PID/fd`` and ``/proc/PID/fdinfo`` (the access mode of
each descriptor) once per call. A write lease (``F_SETLEASE F_WRLCK``) was
considered and not used: it also fails for mere readers, and a lease broken
by another process's ``open`` sends the holder ``SIGIO``, whose default
action ends the process.

Limits (docs/watcher.md, docs/guarantees.md):

* descriptors of processes Ketter may not inspect (another user's, without
  ``CAP_SYS_PTRACE``) are invisible — the service runs as root or as the
  writers' user;
* a writer on another host of a network share is invisible (nfs, cifs, smb,
  fuse): there only a ``ready_marker`` proves a file complete, and
  ``ketter config check`` warns for move and ``as_unit`` routes without one;
* a shared writable ``mmap`` whose descriptor was closed is not seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True, slots=True)
class OpenWriter:
    """One descriptor open for writing on a watched file."""

    pid: int
    fd: int
    path: bytes  # what /proc says the descriptor points at (may end " (deleted)")
    dev: int
    ino: int

    def describe(self) -> str:
        return f"pid {self.pid} ({_comm(self.pid)}), fd {self.fd}"


def _comm(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/comm", "rb") as f:
            return f.read().strip().decode(errors="replace")
    except OSError:
        return "?"


def _write_access(pid: str, fd: str) -> bool:
    """The descriptor's access mode (``flags:`` in fdinfo, octal) writes."""
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return (int(line.split()[1], 8) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        pass  # the process or descriptor went away meanwhile
    return False


def open_writers(
    files: Iterable[tuple[int, int]] = (), under: Iterable[bytes] = ()
) -> list[OpenWriter]:
    """Descriptors open for writing on one of ``files`` (``(dev, ino)``
    pairs) or on a path below one of the folders ``under``.

    One pass over every process's descriptors: call it once for many files.
    """
    targets = frozenset(files)
    prefixes = tuple(p.rstrip(b"/") + b"/" for p in under)
    found: list[OpenWriter] = []
    if not targets and not prefixes:
        return found
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{PROC}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to inspect (module docstring)
        for fd in fds:
            link = os.fsencode(f"{fd_dir}/{fd}")
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if not target.startswith(b"/"):
                continue  # pipe:[…], socket:[…], anon_inode:…
            below = bool(prefixes) and target.startswith(prefixes)
            try:
                st = os.stat(link)  # the open file itself, even if renamed or unlinked
            except OSError:
                continue
            if not below and (st.st_dev, st.st_ino) not in targets:
                continue
            if _write_access(pid, fd):
                found.append(OpenWriter(int(pid), int(fd), target, st.st_dev, st.st_ino))
    return found


def describe(writers: list[OpenWriter], limit: int = 3) -> str:
    """``pid 123 (blender), fd 4; …`` for messages."""
    text = "; ".join(w.describe() for w in writers[:limit])
    return text + (f" and {len(writers) - limit} more" if len(writers) > limit else "")
