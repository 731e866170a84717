"""Creating job rows, idempotently on the source's identity.

The ``source_key`` names one *version* of one source: for a file, route +
relative path + size + mtime_ns + inode (0 where the filesystem does not
keep inode numbers — sshfs, smbnetfs renumber files on every mount, and a
key with their numbers re-detected every delivered file after a server
restart, issue #15 §1; :func:`ketter.mounts.kept_inode`); for a folder, route + relative path
+ SHA-256 of its sorted (relpath, size, mtime_ns) listing. The partial unique
index ``jobs_active_source_key`` allows one active job per key, so the same
file enqueued twice (watcher rescan, a duplicate ``ketter enqueue``) yields
one job and one delivery.

The ctime is not part of the key (keys written before ctimes were kept must
keep naming their version); it is kept beside it in ``jobs.source_ctime_ns``
and the watcher treats a finished job whose stored ctime differs as another
version of the same key (:func:`ketter.watcher.enqueue.settled_keys`, issue
#14 finding 2).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ketter.jobs.states import State
from ketter.paths import readable

if TYPE_CHECKING:
    from ketter.store.port import JobStore
    from ketter.store.rows import JobRow


def file_source_key(route: str, relpath: bytes, size: int, mtime_ns: int, inode: int) -> str:
    """Identity of one version of a file on a route."""
    return _key(b"file", route.encode(), relpath, b"%d" % size, b"%d" % mtime_ns, b"%d" % inode)


def folder_source_key(route: str, relpath: bytes, listing_sha256: str) -> str:
    """Identity of one version of a folder (its listing's SHA-256) on a route."""
    return _key(b"folder", route.encode(), relpath, listing_sha256.encode())


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefixed so that no two different part lists hash alike.
        digest.update(b"%d:" % len(part) + part)
    return digest.hexdigest()


@dataclass(frozen=True)
class NewJob:
    """What the watcher (or ``ketter enqueue`` / ``ketter transfer``) knows."""

    route: str
    mode: str
    kind: str
    source_path: bytes
    source_key: str
    size: int
    file_count: int = 1
    source_size: int | None = None
    source_mtime_ns: int | None = None
    source_inode: int | None = None
    source_dev: int | None = None
    source_owner: str | None = None
    dest_path: bytes | None = None
    priority: int = 0


@dataclass(frozen=True)
class Created:
    """The outcome of :func:`create_job`."""

    job_id: int
    created: bool  # False: an active job already had this source_key
    state: str


def create_job(
    store: JobStore,
    new: NewJob,
    *,
    node: str,
    now: float,
    event_details: dict | None = None,
    claim: str | None = None,
) -> Created:
    """Insert a ``detected`` job with its ``detect`` event, or return the
    active job that already has the same ``source_key``."""
    # Inside the caller's transaction when there is one (the watcher creates
    # a batch per transaction): no savepoint per job. No look first: the
    # store refuses a second active job with this key (the partial unique
    # index), and the job that has it is returned.
    with contextlib.nullcontext() if store.in_transaction() else store.transaction():
        job_id = store.add_job(_job_row(new, node=node, now=now, claim=claim))
        if job_id is None:
            existing = store.active_job(new.source_key)
            assert existing is not None
            return Created(existing.id, False, existing.state)
        store.append_event(**_detect_event(new, job_id, now=now, details=event_details))
        return Created(job_id, True, State.DETECTED.value)


def create_new_jobs(
    store: JobStore, news: Sequence[NewJob], *, node: str, now: float
) -> list[int | None]:
    """:func:`create_job` for a burst (the watcher's), in the caller's
    transaction: each new job's id, ``None`` for a source whose key an
    active job holds already (nothing written for it). The rows go in together, and so
    do their ``detect`` events (:meth:`~ketter.store.ports.intake.IntakePort.add_jobs`,
    :meth:`~ketter.store.ports.core.CorePort.append_events`: a round trip
    each on PostgreSQL, not two per job, under the write turn)."""
    if not store.in_transaction():
        raise RuntimeError("create_new_jobs() must run inside the caller's transaction")
    ids = store.add_jobs([_job_row(new, node=node, now=now) for new in news])
    created = [(new, job_id) for new, job_id in zip(news, ids, strict=True) if job_id is not None]
    store.append_events([_detect_event(new, job_id, now=now) for new, job_id in created])
    return ids


def _job_row(new: NewJob, *, node: str, now: float, claim: str | None = None) -> dict[str, Any]:
    return {
        "route": new.route,
        "mode": new.mode,
        "kind": new.kind,
        "source_path": new.source_path,
        "source_display": readable(new.source_path),
        "dest_path": new.dest_path,
        "dest_display": readable(new.dest_path) if new.dest_path else None,
        "source_key": new.source_key,
        "size": new.size,
        "file_count": new.file_count,
        "source_size": new.source_size,
        "source_mtime_ns": new.source_mtime_ns,
        "source_inode": new.source_inode,
        "source_dev": new.source_dev,
        "source_owner": new.source_owner,
        "state": State.DETECTED.value,
        "priority": new.priority,
        "node": node,
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": now,
        "claim": claim,
        "attempt": 0,
        "bytes_done": 0,
    }


def _detect_event(
    new: NewJob, job_id: int, *, now: float, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``detect`` event's arguments (:meth:`append_event`)."""
    shown = {
        "source": readable(new.source_path),
        "size": new.size,
        "kind": new.kind,
        "files": new.file_count,
    }
    shown.update(details or {})
    return {
        "event": "detect",
        "now": now,
        "job_id": job_id,
        "route": new.route,
        "to_state": State.DETECTED.value,
        "attempt": 0,
        "details": shown,
    }


def active_job(store: JobStore, source_key: str) -> JobRow | None:
    """The non-terminal job with this ``source_key``, if any."""
    return store.active_job(source_key)


def last_job(store: JobStore, source_key: str) -> JobRow | None:
    """The newest job with this ``source_key`` in any state."""
    return store.last_job(source_key)
