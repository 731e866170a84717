"""One synchronous, verified transfer now: what ``ketter transfer`` does.

The jobs go through the same pipeline as the workers' (a job row, a claim,
:class:`~ketter.jobs.runner.JobRunner` and its :class:`~ketter.jobs.steps.Attempt`,
the same audit events) on a one-off route, :data:`ROUTE`, whose roots are
the source's folder and the destination's folder, so the result is in
``ketter jobs`` like any other. Nobody retries a one-shot job: one that did
not complete fails at once (:func:`abandon`). Entry points (the CLI today,
the HTTP API later) build the :class:`~ketter.node.Node`, call
:func:`run_oneshot` and format its :class:`OneshotResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ketter.choices import Folders, Mode
from ketter.config import Config, RouteConfig
from ketter.config.units import FreeSpace
from ketter.runtime.signals import Shutdown

if TYPE_CHECKING:
    from ketter.jobs.lease import ActiveJob
    from ketter.jobs.runner import JobRunner
    from ketter.node import Node
    from ketter.store.port import JobStore
    from ketter.store.rows import JobRow

#: The one-off route of every one-shot transfer (``ketter jobs --route``).
ROUTE = "cli-transfer"

#: Jobs of a per_file folder run side by side (up to this many) while their
#: copy buffers fit in :data:`BUFFER_BUDGET`: one file's final fsync (the
#: disk flushing its cache, ~20 ms for 8 MiB here) overlaps the next
#: file's copy. 200 × 8 MiB, two at a time: docs/performance.md.
PER_FILE_JOBS = 4
#: Keeps the peak RSS of ``ketter transfer`` under 100 MB (a 2 GiB file
#: alone takes 44 MiB of buffers and runs alone).
BUFFER_BUDGET = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class OneshotOptions:
    """How the one-off route behaves (the ``ketter transfer`` flags;
    docs/configuration.md for each)."""

    mode: str = "copy"
    verify: str = "sha256"
    conflict: str = "fail"
    folders: str = "as_unit"
    package_min_files: int = 0


class JobOutcome(NamedTuple):
    """One job's end, a light copy of its row: 10,000 job rows held to
    the end of a per_file folder weigh tens of MiB."""

    id: int
    state: str
    source_display: str
    dest_display: str | None
    size: int
    file_count: int
    sha256: str | None
    xxh128: str | None
    xxh64: str | None
    error: str | None
    kind: str = "file"


@dataclasses.dataclass(frozen=True)
class OneshotResult:
    """What a one-shot transfer did, job by job."""

    #: In the order of the files; a failure or a stop ends a per_file
    #: folder early, so there may be fewer than files.
    jobs: list[JobOutcome]
    #: Files of a per_file folder never started (after a failure or a stop).
    not_started: int
    #: From the first job's start to the last one's end.
    seconds: float
    #: Why the events did not reach the audit log (None: shipped).
    unshipped: str | None
    #: The job store (``ketter job ID`` reads the manifests there).
    store: str | None

    @property
    def ok(self) -> bool:
        """Every job completed and none was left out."""
        return all(j.state == "completed" for j in self.jobs) and not self.not_started


@dataclasses.dataclass(frozen=True)
class Progress:
    """The whole transfer's progress: the bytes of the finished jobs and of
    those running add up."""

    job_id: int
    phase: str
    done: int
    #: At least 1 (a rate or an ETA never divides by zero).
    total: int
    #: Since the jobs began.
    seconds: float


def final_path(source: bytes, destination: bytes) -> bytes:
    """Into an existing folder the source keeps its name; otherwise the
    destination is the new path itself (like ``cp``)."""
    if os.path.isdir(destination):
        return os.path.join(destination, os.path.basename(source))
    return destination


def oneshot_route(source: bytes, final: bytes, options: OneshotOptions) -> RouteConfig:
    """The one-off route from ``source``'s folder to ``final``'s folder."""
    return RouteConfig(
        name=ROUTE,
        source=os.fsdecode(os.path.dirname(source)),
        destination=os.fsdecode(os.path.dirname(final)),
        mode=options.mode,
        verify=options.verify,
        conflict=options.conflict,
        folders=options.folders,
        package_min_files=options.package_min_files,
        min_free=FreeSpace(),
    )


def oneshot_config(base: Config, route: RouteConfig) -> Config:
    """The node's config with the one-off route as its only route."""
    return dataclasses.replace(base, routes=(route,))


def run_oneshot(
    node: Node,
    source: bytes,
    destination: bytes,
    options: OneshotOptions,
    *,
    progress: Callable[[Progress], None] | None = None,
    shutdown: Shutdown | None = None,
) -> OneshotResult:
    """Transfer ``source`` (a file or folder that exists, absolute) to
    ``destination`` (an existing folder, or the new path itself) now, and
    ship the events to the audit log. ``node`` is built for the
    ``transfer`` role (it holds the audit key on a keyed node); its store is
    the one the jobs are recorded in. ``shutdown`` stops between files and
    at the engine's safe points (not installed here: signals are the entry
    point's business)."""
    from ketter.engine.copyfile import buffer_bytes
    from ketter.engine.source import scan_tree
    from ketter.jobs.lease import LeaseKeeper
    from ketter.jobs.routes import resume_route
    from ketter.jobs.runner import JobRunner

    store = node.store
    assert store is not None, "a one-shot transfer records its jobs in the node's store"
    source = source.rstrip(b"/")
    final = final_path(source, destination.rstrip(b"/"))
    route = oneshot_route(source, final, options)
    config = oneshot_config(node.config, route)
    # A one-off route is never paused for the next run: each run checks anew.
    resume_route(store, ROUTE, now=time.time())
    os.makedirs(route.destination, exist_ok=True)

    # A folder on a per_file route is one job per file (the tree is kept).
    items: list[tuple[bytes, bytes, str]] = []
    if os.path.isdir(source) and options.folders == Folders.PER_FILE:
        for entry in scan_tree(source)[0]:
            items.append(
                (os.path.join(source, entry.relpath), os.path.join(final, entry.relpath), "file")
            )
    else:
        items.append((source, final, "folder" if os.path.isdir(source) else "file"))
    total = sum(os.lstat(s).st_size for s, _, k in items if k == "file") or 0
    tally = _Tally(total, progress)
    shutdown = shutdown or Shutdown()
    keeper = LeaseKeeper(config, shutdown, store=store)
    runner = JobRunner(config, store=store, shutdown=shutdown, keeper=keeper, on_progress=tally)

    def run_one(item: tuple[bytes, bytes, str]) -> JobOutcome:
        outcome = _run_job(store, config, runner, shutdown, item, options.mode)
        tally.finished(outcome.id, outcome.size)
        return outcome

    def weight(item: tuple[bytes, bytes, str]) -> int:
        try:
            return buffer_bytes(os.lstat(item[0]).st_size)
        except OSError:  # gone: it runs alone and its job says why
            return BUFFER_BUDGET

    t0 = time.monotonic()
    outcomes = list(
        side_by_side(
            items,
            run_one,
            PER_FILE_JOBS,
            weight,
            BUFFER_BUDGET,
            stopping=lambda: shutdown.requested,
        )
    )
    if options.mode == Mode.MOVE and len(items) > 1 and all(_completed(j) for j in outcomes):
        remove_empty_dirs(source)
    seconds = time.monotonic() - t0
    # A one-shot transfer is a transfer: its events reach the audit log now,
    # not when `ketter workers` next runs (`ketter audit verify` right after).
    from ketter.audit.shipper import ship_now

    unshipped = ship_now(store, config)
    return OneshotResult(
        jobs=outcomes,
        not_started=len(items) - len(outcomes),
        seconds=seconds,
        unshipped=unshipped,
        store=store.path,
    )


def _run_job(
    store: JobStore,
    config: Config,
    runner: JobRunner,
    shutdown: Shutdown,
    item: tuple[bytes, bytes, str],
    mode: str,
) -> JobOutcome:
    """One job, start to end: created, claimed, run, failed if it did not
    complete."""
    from ketter.jobs.claim import claim_job, owner_name, release
    from ketter.jobs.create import NewJob, create_job

    source, destination, kind = item
    created = create_job(
        store,
        NewJob(
            route=ROUTE,
            mode=mode,
            kind=kind,
            source_path=source,
            source_key=f"transfer:{os.getpid()}:{time.time_ns()}",
            size=0,
            dest_path=destination,
        ),
        node=config.node,
        now=time.time(),
        event_details={"by": "ketter transfer"},
    )
    try:
        claimed = claim_job(
            store, config, hint=created.job_id, owner=owner_name(config.node), now=time.time()
        )
        if claimed is not None and claimed.job_id != created.job_id:
            # Another file's job (its own thread claims it): give it back.
            release(store, claimed.job_id, claimed.claim, now=time.time(), reason="not this file")
            claimed = None
        if claimed is None:
            # The route was paused by a job that failed meanwhile (a share
            # gone): this one fails too, rather than wait for nobody.
            job = abandon(
                store,
                store.get_job(created.job_id),
                "not started: another file of this transfer failed and paused the route",
            )
        else:
            runner.run(claimed)
            job = store.get_job(created.job_id)
    except Exception as exc:  # the job store itself failed: say so on the job
        job = abandon(store, store.get_job(created.job_id), f"{type(exc).__name__}: {exc}")
    if job.state != "completed":
        reason = "interrupted" if shutdown.requested else (job.error or job.state)
        job = abandon(store, job, reason)
    return JobOutcome(
        job.id,
        job.state,
        job.source_display,
        job.dest_display,
        job.size,
        job.file_count,
        job.sha256,
        job.xxh128,
        job.xxh64,
        job.error,
        job.kind,
    )


class _Tally:
    """The runner's per-job progress, added up for the whole transfer."""

    def __init__(self, total: int, progress: Callable[[Progress], None] | None) -> None:
        self.total = max(total, 1)
        self.progress = progress
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._finished = 0
        self._running: dict[int, int] = {}

    def __call__(self, active: ActiveJob) -> None:
        with self._lock:
            self._running[active.job_id] = active.bytes_done
            if self.progress is None:
                return
            done = self._finished + sum(self._running.values())
        now = time.monotonic()
        self.progress(Progress(active.job_id, active.phase, done, self.total, now - self.start))

    def finished(self, job_id: int, size: int) -> None:
        with self._lock:
            self._running.pop(job_id, None)
            self._finished += size


T = TypeVar("T")
R = TypeVar("R")


def side_by_side(
    items: list[T],
    run: Callable[[T], R],
    jobs: int,
    weight: Callable[[T], int],
    budget: int,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[R]:
    """``run`` over ``items``, results in order, at most ``jobs`` at a time
    and, beyond the first, only while the running items' ``weight`` adds up
    to at most ``budget``. No new item starts once any result is not a
    completed outcome (a failure, an interruption) or ``stopping()`` says
    so; the ones already running finish, and their results come too. An
    exception out of ``run`` also stops new starts; it is raised in its
    turn, after the running ones have finished."""
    results: dict[int, Future[R]] = {}
    running: dict[Future[R], tuple[int, int]] = {}
    started = emitted = held = 0
    stop = False
    with ThreadPoolExecutor(max(jobs, 1), thread_name_prefix="ketter-transfer") as pool:
        while True:
            stop = stop or stopping()
            while not stop and started < len(items) and len(running) < jobs:
                w = weight(items[started])
                if running and held + w > budget:
                    break
                # Signals go to the main thread, which waits below (see
                # Shutdown.spawn_threads_without_signals).
                with Shutdown.spawn_threads_without_signals():
                    fut = pool.submit(run, items[started])
                results[started] = fut
                running[fut] = (started, w)
                started += 1
                held += w
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                held -= running.pop(fut)[1]
                if fut.exception() is not None or not _completed(fut.result()):
                    stop = True
            while emitted < started and results[emitted].done():
                if results[emitted] in running:
                    break
                yield results.pop(emitted).result()
                emitted += 1
        while emitted < started:
            yield results.pop(emitted).result()
            emitted += 1


def _completed(out: Any) -> bool:
    return getattr(out, "state", None) == "completed"


#: What a route job's error promises about its retry ("free space, the
#: route resumes by itself", "… the job is retried"): not true of a one-shot
#: transfer, whose message said "retried later" and "does not retry" at
#: once (issue #15 §1).
_RETRY_PROMISES = ("resumes by itself", "is retried", "retried later", "resumes when")


def without_retry_promise(reason: str) -> str:
    """``reason`` without its trailing clauses (``; …``) that promise a retry."""
    clauses = reason.split("; ")
    while len(clauses) > 1 and any(p in clauses[-1] for p in _RETRY_PROMISES):
        clauses.pop()
    return "; ".join(clauses)


def abandon(store: JobStore, job: JobRow, reason: str) -> JobRow:
    """A one-shot job that did not complete fails now (nobody would retry
    it): its temporaries go, and the row says why. A placed delivery is kept."""
    from ketter.engine.cleanup import rollback
    from ketter.jobs.states import State
    from ketter.jobs.transitions import transition

    now = time.time()
    if job.dest_path is not None and job.placed_at is None:
        rollback(os.path.dirname(bytes(job.dest_path)), f".ketter-{job.id}-")
    state = State(job.state)
    if state in (State.COMPLETED, State.FAILED):
        return job
    error = f"{without_retry_promise(reason)} (ketter transfer does not retry; run it again)"
    fields: dict[str, Any] = {
        "error": error,
        "lease_owner": None,
        "lease_expires_at": None,
        "completed_at": now,
    }
    if job.placed_at is None and state is not State.ROLLING_BACK:
        transition(
            store,
            job.id,
            state,
            State.ROLLING_BACK,
            claim=job.claim,
            now=now,
            rollback_to=State.FAILED.value,
            details={"error": error},
        )
        state = State.ROLLING_BACK
    if state is State.DETECTED:  # placed and re-queued: cannot happen here
        return store.get_job(job.id)
    transition(
        store,
        job.id,
        state,
        State.FAILED,
        claim=job.claim,
        now=now,
        rollback_to=None,
        details={"error": error},
        **fields,
    )
    return store.get_job(job.id)


def remove_empty_dirs(root: bytes) -> None:
    """After a per-file move, the emptied folders of the source go too."""
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda w: -len(w[0])):
        # Not empty: something was kept (a changed file) or added; leave it.
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
