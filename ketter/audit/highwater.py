"""The audit chain's high-water mark: the last sequence number (and its hash)
the node is known to have reached, kept where a cut of the chain's tail does
not reach it.

A tail cut *consistently* from the job store's ``events`` and from the log
(the last N rows and the last N lines) leaves a chain that verifies on its
own: nothing in the chain can witness its own end. So every shipment also
writes the last shipped sequence and hash to two places outside the chain:

* ``<state_dir>/audit.highwater``: a small JSON file, replaced atomically
  (only ever raised, never lowered);
* the ``audit`` row of ``heartbeats`` in the job store (with the shipper's
  last error, which ``ketter health`` reports).

Rotated log files carry their last sequence in their name as well
(:mod:`ketter.audit.logfile`). ``ketter audit verify`` fails when the chain
ends before any of these marks, or when the record at a mark's sequence has
another hash (the tail was cut and rewritten). Someone who can edit the job
store, the log, this file and the heartbeat row together still cuts the tail
unseen: that needs an off-node witness (the SIEM's copy; signed checkpoints).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.audit.logfile import fsync_dir

if TYPE_CHECKING:
    from ketter.store.port import JobStore

#: The file in ``state_dir``.
HIGHWATER_NAME = "audit.highwater"
#: The ``heartbeats.component`` of the shipper.
COMPONENT = "audit"


@dataclass(frozen=True)
class Mark:
    """A sequence the chain is known to have reached, and where that is said."""

    seq: int
    digest: str | None  # the record's hash, when the witness keeps it
    where: str


def highwater_path(state_dir: str) -> str:
    return os.path.join(state_dir, HIGHWATER_NAME)


def set_aside(state_dir: str, now: float) -> str | None:
    """Rename the mark of an old chain to ``audit.highwater.<UTC stamp>.old``
    (kept as evidence: it names how far the old chain reached) before a new
    store starts a new chain at 1. Left in place, the shipper kept the old
    mark for ever and ``audit verify`` failed on the new chain for good
    (review of #14 finding 9). Returns the new name, or None without a mark."""
    path = highwater_path(state_dir)
    if not os.path.exists(path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = f"{path}.{stamp}.old"
    os.rename(path, target)
    fsync_dir(state_dir)
    return target


def read_file(path: str) -> Mark | None:
    """The mark in ``path``; None when there is none. Raises ``ValueError``
    when the file is there but not a mark (edited or damaged)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(data)
        seq, digest = value["seq"], value["hash"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a high-water mark (damaged or edited)") from exc
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError(f"{path} is not a high-water mark (damaged or edited)")
    return Mark(seq, digest, path)


def write_file(path: str, seq: int, digest: str, ts: float) -> None:
    """Replace the mark atomically (a crash leaves the old one or the new one)."""
    tmp = f"{path}.tmp"
    data = json.dumps({"seq": seq, "hash": digest, "ts": ts}).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        # A full state disk: no half-written temporary left behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def beat_marks(store: JobStore) -> list[Mark]:
    """The marks of the ``audit`` heartbeat rows (one per node that shipped)."""
    marks = []
    for row in store.list_heartbeats():
        if row.component != COMPONENT:
            continue
        node = row.node
        try:
            value = json.loads(row.details)
        except ValueError:
            continue
        seq = value.get("shipped_seq") if isinstance(value, dict) else None
        if isinstance(seq, int) and seq > 0:
            digest = value.get("shipped_hash")
            where = f"the job store's audit heartbeat of node {node}"
            marks.append(Mark(seq, digest if isinstance(digest, str) else None, where))
    return marks
