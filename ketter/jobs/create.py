"""Creating job rows, idempotently on the source's identity.

The ``source_key`` names one *version* of one source: for a file, route +
relative path + size + mtime_ns + inode; for a folder, route + relative path
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
import functools
import hashlib
from dataclasses import dataclass

from peewee import IntegrityError

from ketter.audit.chain import record_event
from ketter.jobs.states import State
from ketter.paths import readable
from ketter.store.models import TERMINAL_STATES, Job, database, select_jobs


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
    new: NewJob,
    *,
    node: str,
    now: float,
    event_details: dict | None = None,
    claim: str | None = None,
) -> Created:
    """Insert a ``detected`` job with its ``detect`` event, or return the
    active job that already has the same ``source_key``."""
    db = database.obj
    # Inside the caller's transaction when there is one (the watcher creates
    # a batch per transaction): no savepoint per job. No look first: the
    # partial unique index refuses a second active job with this key
    # (IntegrityError below, which then returns that job).
    with contextlib.nullcontext() if db.in_transaction() else db.atomic():
        row = {
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
        try:
            # Raw SQL: the watcher creates thousands of jobs in a burst and
            # peewee's builder cost more than the insert. A failed INSERT
            # aborts only itself in SQLite, not the transaction.
            job_id = db.execute_sql(_insert_sql(tuple(row)), tuple(row.values())).lastrowid
        except IntegrityError:
            existing = active_job(new.source_key)
            assert existing is not None
            return Created(existing.id, False, existing.state)
        details = {
            "source": readable(new.source_path),
            "size": new.size,
            "kind": new.kind,
            "files": new.file_count,
        }
        details.update(event_details or {})
        record_event(
            "detect",
            now=now,
            job_id=job_id,
            route=new.route,
            to_state=State.DETECTED.value,
            attempt=0,
            details=details,
        )
        return Created(job_id, True, State.DETECTED.value)


def active_job(source_key: str) -> Job | None:
    """The non-terminal job with this ``source_key``, if any (raw SQL)."""
    marks = ", ".join("?" for _ in TERMINAL_STATES)
    found = select_jobs(
        f"source_key = ? AND state NOT IN ({marks}) LIMIT 1", source_key, *TERMINAL_STATES
    )
    return found[0] if found else None


@functools.lru_cache(maxsize=4)
def _insert_sql(columns: tuple[str, ...]) -> str:
    known = {f.column_name for f in Job._meta.sorted_fields}  # guards the SQL against typos
    unknown = set(columns) - known
    if unknown:
        raise ValueError(f"not a jobs column: {', '.join(sorted(unknown))}")
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' for _ in columns)})"


def last_job(source_key: str) -> Job | None:
    """The newest job with this ``source_key`` in any state."""
    return Job.select().where(Job.source_key == source_key).order_by(Job.id.desc()).first()
