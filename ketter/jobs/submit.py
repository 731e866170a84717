"""Submitting a path by hand (``ketter enqueue``) under the watcher's identity rules.

An in-flight version is not enqueued twice; on a copy route an already
delivered version is not delivered again (the file must change first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketter.choices import Folders, Kind, Mode
from ketter.config import Config, RouteConfig
from ketter.engine.openfile import sha256_of_file
from ketter.engine.paths import join
from ketter.engine.source import inspect_source, scan_tree
from ketter.errors import PathOutsideRoute, PermanentError
from ketter.jobs.create import (
    NewJob,
    active_job,
    create_job,
    file_source_key,
    folder_source_key,
    last_job,
)
from ketter.jobs.spec import spec_for
from ketter.jobs.states import State
from ketter.paths import owner_name, readable

if TYPE_CHECKING:
    from ketter.store.port import JobStore
    from ketter.store.rows import JobRow


@dataclass(frozen=True)
class Submitted:
    job_id: int
    created: bool
    message: str


def submit_path(
    store: JobStore, config: Config, route: RouteConfig, path: bytes, *, now: float
) -> list[Submitted]:
    """Create the job(s) for ``path`` on ``route``: one for a file or an
    ``as_unit`` folder, one per file for a folder on a ``per_file`` route."""
    root = os.fsencode(route.source)
    rel = os.path.relpath(path, root)
    if rel == b".":  # the whole route: every top-level entry
        out: list[Submitted] = []
        for name in sorted(os.listdir(path)):
            if not name.startswith(b".") and not os.path.islink(join(path, name)):
                out += submit_path(store, config, route, join(path, name), now=now)
        return out
    if rel.startswith(b".."):
        raise PathOutsideRoute(
            f"{readable(path)!r} is not inside route {route.name}'s source {route.source}"
        )
    spec = spec_for(route, config)
    plan = inspect_source(spec, path)
    if plan.kind == Kind.FOLDER and route.folders == Folders.PER_FILE:
        files, _dirs, _skipped = scan_tree(path)
        found: list[Submitted] = []
        for entry in files:
            found += submit_path(store, config, route, join(path, entry.relpath), now=now)
        return found
    if plan.kind == Kind.FOLDER:
        key = folder_source_key(route.name, rel, plan.listing_sha256)
    else:
        key = file_source_key(route.name, rel, plan.size, plan.mtime_ns, plan.ino)
    shown = readable(path)
    running = active_job(store, key)
    if running is not None:
        return [
            Submitted(
                running.id, False, f"{shown}: already queued as job {running.id} ({running.state})"
            )
        ]
    previous = last_job(store, key)
    if (
        previous is not None
        and previous.state == State.COMPLETED.value
        and route.mode == Mode.COPY
        and not _rewritten_since(previous, path)
    ):
        return [
            Submitted(
                previous.id,
                False,
                f"{shown}: this version was delivered by job "
                f"{previous.id}; change the file to send it "
                "again",
            )
        ]
    if plan.kind == Kind.FOLDER and not plan.files:
        raise PermanentError(f"{shown}: the folder holds no files")
    st = os.lstat(path)
    created = create_job(
        store,
        NewJob(
            route=route.name,
            mode=route.mode,
            kind=plan.kind,
            source_path=path,
            source_key=key,
            size=plan.size,
            file_count=len(plan.files) if plan.kind == Kind.FOLDER else 1,
            source_size=plan.size,
            source_mtime_ns=plan.mtime_ns,
            source_inode=plan.ino,
            source_dev=None,
            source_owner=owner_name(st.st_uid),
            priority=route.priority,
        ),
        node=config.node,
        now=now,
        event_details={"by": "ketter enqueue"},
    )
    return [Submitted(created.job_id, created.created, f"{shown}: queued as job {created.job_id}")]


def _rewritten_since(previous: JobRow, path: bytes) -> bool:
    """A file whose key names a delivered version but whose ctime moved and
    whose bytes differ from that delivery was rewritten in place with its
    size and mtime restored: a new version (as the watcher sees it,
    ``ketter/watcher/enqueue.py``). A metadata-only change is not."""
    if not previous.source_ctime_ns or not previous.sha256:
        return False
    try:
        ctime = os.stat(path).st_ctime_ns
    except OSError:
        return False
    if ctime == previous.source_ctime_ns:
        return False
    return sha256_of_file(path) not in (None, previous.sha256)
