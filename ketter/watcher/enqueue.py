"""Turning ready candidates into ``detected`` jobs and queue messages (R-W6).

The watcher only inserts the job row (idempotent on ``source_key``) and
rings the queue with its id: no copy, no hash, no delete. The job store
answers "was this version already handled?": any job with the key — active,
completed, or failed — means the version is settled. A completed copy is not
delivered again; a failed one waits for ``ketter requeue`` or for the file
to change (a new version, a new key); a moved-away source that reappears has
a new inode/mtime and so a new key.

The key leaves the ctime out (a key names a version in the job store and
must not change under rows written before ctimes were kept). A file
rewritten in place with its size and mtime restored keeps its key, so a
finished job whose stored ``source_ctime_ns`` differs from the file's
ctime does not settle it: that is a new version, delivered by a new job
under the route's conflict policy (issue #14 finding 2, review). A stored
ctime of ``NULL``/0 (rows from before migration 0003, folders, jobs that
ended before validation) is unknown and counts as the same version.

A ctime also moves on ``chmod``, ``chown`` or a new hard link: a permission
fixer sweeping a copy route's zone would otherwise deliver every file again
(and, with ``conflict: rename``, a second copy of each). So a ctime-only
change of a *completed* delivery of the same size is settled by content: the
file is hashed once and compared with the job's recorded SHA-256; the same
bytes settle the key (remembered per (key, ctime) so rescans do not hash
again), other bytes are the new version. Only files whose ctime moved while
size and mtime did not are ever hashed here.

A folder of a move route whose job is still active is not a new version,
whatever its listing says now (:func:`held_by_a_move`): after a crash in the
middle of the source deletion the half-deleted folder is a new listing, and
the job created for it failed on the conflict with the delivery (#15 §1).
Once that job has ended, a folder still there is detected by a later scan.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, MutableSet, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ketter.choices import Kind, Mode
from ketter.config.schema import RouteConfig
from ketter.engine.openfile import sha256_of_file
from ketter.jobs.create import NewJob, create_new_jobs, file_source_key, folder_source_key
from ketter.paths import owner_name, readable
from ketter.runtime.logs import job_fields
from ketter.watcher.identity import Version

if TYPE_CHECKING:
    from ketter.store.port import JobStore

log = logging.getLogger(__name__)

#: Candidates looked up in the job store at a time (the route's watch
#: batches its discoveries by it; the store splits its own queries).
KEY_BATCH = 500
#: Jobs created per transaction: one commit (one WAL write) per batch, short
#: enough that the workers are not kept off the write lock.
JOB_BATCH = 200


class Ringer(Protocol):
    def ring_many(self, job_ids: list[int]) -> None: ...


@dataclass(frozen=True, slots=True)
class Ready:
    """A candidate found ready: what the job row needs."""

    relpath: bytes
    kind: str
    version: Version

    def key(self, route: str) -> str:
        if self.kind == Kind.FOLDER:
            assert self.version.listing_sha256 is not None
            return folder_source_key(route, self.relpath, self.version.listing_sha256)
        v = self.version
        return file_source_key(route, self.relpath, v.size, v.mtime_ns, v.key_inode)


def settled_keys(
    store: JobStore,
    keys: Iterable[str],
    ctimes: Mapping[str, int] | None = None,
    *,
    paths: Mapping[str, bytes] | None = None,
    confirmed: MutableSet[tuple[str, int]] | None = None,
) -> set[str]:
    """The keys that already have a job for this version.

    Any job with the key settles it, except a finished one whose stored
    ctime is known and differs from ``ctimes[key]`` (the file's ctime now):
    the file may have been rewritten in place since (module docstring). Such
    a key is still settled when the job completed and the file at
    ``paths[key]`` holds the same bytes (``confirmed`` remembers the
    (key, ctime) pairs checked so). An active job always settles its key
    (one active job per key, the unique index).
    """
    ctimes = ctimes or {}
    found: set[str] = set()
    # (key, ctime now) -> SHA-256 of the completed deliveries of that key
    to_compare: dict[str, set[str]] = {}
    for key, finished, stored, state, sha256 in store.jobs_by_source_keys(keys):
        now = ctimes.get(key)
        same_ctime = not stored or not now or stored == now
        if not finished or same_ctime or (confirmed is not None and (key, now) in confirmed):
            found.add(key)
        elif state == "completed" and sha256:
            to_compare.setdefault(key, set()).add(sha256)
    for key, digests in to_compare.items():
        path = (paths or {}).get(key)
        if key in found or path is None:
            continue
        if sha256_of_file(path) in digests:
            found.add(key)
            if confirmed is not None:
                if len(confirmed) >= CONFIRMED_MAX:
                    confirmed.clear()  # a bound, not a cache policy: at worst one more hash
                confirmed.add((key, ctimes[key]))
    return found


#: (key, ctime) pairs remembered as "same bytes, only the metadata moved".
CONFIRMED_MAX = 100_000


def enqueue_ready(
    store: JobStore,
    route: RouteConfig,
    root: bytes,
    ready: Sequence[Ready],
    *,
    queue: Ringer,
    node: str,
    now: float | None = None,
    confirmed: MutableSet[tuple[str, int]] | None = None,
) -> list[int]:
    """Create the jobs of ``ready`` candidates not settled yet and ring the
    queue for each; returns the new job ids."""
    if not ready:
        return []
    keyed = [(item, item.key(route.name)) for item in ready]
    settled = settled_keys(
        store,
        (key for _, key in keyed),
        {key: item.version.ctime_ns for item, key in keyed},
        paths={key: os.path.join(root, item.relpath) for item, key in keyed},
        confirmed=confirmed,
    )
    held = held_by_a_move(store, route, root, ready)
    todo = [(item, key) for item, key in keyed if key not in settled and item.relpath not in held]
    created: list[int] = []
    for i in range(0, len(todo), JOB_BATCH):
        stamp = time.time() if now is None else now
        chunk = todo[i : i + JOB_BATCH]
        news = [_new_job(route, root, item, key) for item, key in chunk]
        with store.transaction():
            ids = create_new_jobs(store, news, node=node, now=stamp)
        batch = [
            (job_id, item)
            for (item, _), job_id in zip(chunk, ids, strict=True)
            if job_id is not None
        ]
        # Ring only after the commit: a worker woken earlier would not find
        # the row. If the watcher dies between the two, the job sits in
        # `detected` without a message; the workers' recovery sweep rings
        # for it (the row is the truth, the message only a doorbell).
        queue.ring_many([job_id for job_id, _ in batch])
        if batch:
            # One line per batch: a line per file cost a fifth of the time to
            # enqueue a burst. Each file's path is in its ``detect`` audit
            # event (and in this log at DEBUG).
            ids = [job_id for job_id, _ in batch]
            log.info("detected", extra={"ketter.route": route.name, "ketter.job_ids": ids})
            if log.isEnabledFor(logging.DEBUG):
                for job_id, item in batch:
                    log.debug(
                        "detected %s",
                        readable(os.path.join(root, item.relpath)),
                        **job_fields(job_id, route.name, **{"file.size": item.version.size}),
                    )
        created.extend(job_id for job_id, _ in batch)
    return created


def held_by_a_move(
    store: JobStore, route: RouteConfig, root: bytes, ready: Sequence[Ready]
) -> set[bytes]:
    """The relpaths of the ready folders that a move job of ``route`` still
    active holds (it may be deleting them after its placement, or waiting to
    retry that): no new job for them while it runs (module docstring)."""
    if route.mode != Mode.MOVE:
        return set()
    folders = {
        os.path.join(root, item.relpath): item.relpath for item in ready if item.kind == Kind.FOLDER
    }
    if not folders:
        return set()
    return {
        folders[bytes(job.source_path)]
        for job in store.active_jobs_by_source_path(route.name, folders)
        if job.mode == Mode.MOVE and job.kind == Kind.FOLDER
    }


def _new_job(route: RouteConfig, root: bytes, item: Ready, key: str) -> NewJob:
    v = item.version
    return NewJob(
        route=route.name,
        mode=route.mode,
        kind=item.kind,
        source_path=os.path.join(root, item.relpath),
        source_key=key,
        size=v.size,
        file_count=v.file_count,
        source_size=v.size,
        source_mtime_ns=v.mtime_ns,
        source_inode=v.key_inode,  # 0 where the filesystem does not keep it (#15)
        source_dev=v.dev,
        source_owner=owner_name(v.uid),
        dest_path=None,
        priority=route.priority,
    )
