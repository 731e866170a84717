"""``ketter transfer SRC DST``: one synchronous, verified transfer, like ``cp``.

It goes through the same job pipeline as the workers (a job row, a claim,
the same steps and audit events) on a one-off route whose roots are SRC's
folder and DST's folder, so its result is in ``ketter jobs`` like any other.
It needs only a ``state_dir``: ``--config`` (or $KETTER_CONFIG, or
/etc/ketter/ketter.yaml), or ``--state-dir DIR`` without a config file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple, TypeVar

from ketter.cli.common import add_config_arg
from ketter.config import Config, RouteConfig, find_config_path, load_config, parse_config
from ketter.config.units import FreeSpace
from ketter.paths import readable
from ketter.runtime.signals import Shutdown

ROUTE = "cli-transfer"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("transfer", help="copy or move one file or folder now, verified")
    add_config_arg(p)
    p.add_argument("src", metavar="SRC", help="the file or folder to transfer")
    p.add_argument(
        "dst",
        metavar="DST",
        help="an existing folder (SRC keeps its name inside it) or the new path itself",
    )
    p.add_argument(
        "--mode",
        choices=("copy", "move"),
        default="copy",
        help="move deletes SRC once the copy is verified (default copy)",
    )
    p.add_argument(
        "--verify",
        choices=("sha256", "xxh128"),
        default="sha256",
        help="the checksum the read-back is compared with (default sha256)",
    )
    p.add_argument(
        "--conflict",
        choices=("fail", "skip_identical", "rename", "overwrite"),
        default="fail",
        help="when the destination exists (default fail; see docs/configuration.md)",
    )
    p.add_argument(
        "--folders",
        choices=("per_file", "as_unit"),
        default="as_unit",
        help="a folder travels whole (as_unit, the default) or file by file",
    )
    p.add_argument(
        "--package-min-files",
        type=int,
        default=0,
        help="as_unit folders with at least this many files travel as one stored ZIP "
        "(default 0: never)",
    )
    p.add_argument("--state-dir", help="job store folder when there is no config file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_transfer)


def _config(args: argparse.Namespace) -> Config:
    if args.state_dir:
        return parse_config(
            f"state_dir: {json.dumps(os.path.abspath(args.state_dir))}\n", base_dir=os.getcwd()
        )
    return load_config(find_config_path(getattr(args, "config", None)))


def _final(src: bytes, dst: bytes) -> bytes:
    if os.path.isdir(dst):
        return os.path.join(dst, os.path.basename(src))
    return dst


class _ProgressLine:
    """A live progress line on a terminal: bytes, MB/s, ETA, phase. With
    several jobs (a per_file folder), the bytes of the finished ones and of
    those running add up."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0
        self._lock = threading.Lock()
        self._finished = 0
        self._running: dict[int, int] = {}

    def __call__(self, active: Any) -> None:
        with self._lock:
            self._running[active.job_id] = active.bytes_done
            now = time.monotonic()
            if not self.enabled or now - self.last < 0.2:
                return
            self.last = now
            done = self._finished + sum(self._running.values())
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 and active.phase == "copy" else 0
        sys.stdout.write(
            f"\r{active.phase:>7}  {done / 1e6:10.1f} / {self.total / 1e6:.1f} MB"
            f"  {rate / 1e6:7.1f} MB/s  ETA {eta:5.0f}s "
        )
        sys.stdout.flush()

    def finished(self, job_id: int, size: int) -> None:
        with self._lock:
            self._running.pop(job_id, None)
            self._finished += size

    def done(self) -> None:
        if self.enabled:
            sys.stdout.write("\r" + " " * 72 + "\r")


#: Jobs of a per_file folder run side by side (up to this many) while their
#: copy buffers fit in :data:`BUFFER_BUDGET`: one file's final fsync (the
#: disk flushing its cache, ~20 ms for 8 MiB here) overlaps the next
#: file's copy. 200 × 8 MiB, two at a time: docs/performance.md.
PER_FILE_JOBS = 4
#: Keeps the peak RSS of ``ketter transfer`` under 100 MB (a 2 GiB file
#: alone takes 44 MiB of buffers and runs alone).
BUFFER_BUDGET = 64 * 1024 * 1024

T = TypeVar("T")
R = TypeVar("R")


def _side_by_side(
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


def run_transfer(args: argparse.Namespace) -> int:
    from ketter.engine.copyfile import buffer_bytes
    from ketter.engine.source import scan_tree
    from ketter.jobs.claim import claim_job, owner_name, release
    from ketter.jobs.create import NewJob, create_job
    from ketter.jobs.lease import LeaseKeeper
    from ketter.jobs.routes import resume_route
    from ketter.jobs.runner import JobRunner
    from ketter.node import Node
    from ketter.store import Job

    # The result is printed; operational log lines would only repeat it.
    logging.disable(logging.ERROR)
    src = os.fsencode(os.path.abspath(args.src)).rstrip(b"/")
    dst = os.fsencode(os.path.abspath(args.dst)).rstrip(b"/")
    if not os.path.lexists(src):
        print(f"ketter: {readable(src)}: no such file or folder", file=sys.stderr)
        return 1
    final = _final(src, dst)
    base = _config(args)
    route = RouteConfig(
        name=ROUTE,
        source=os.fsdecode(os.path.dirname(src)),
        destination=os.fsdecode(os.path.dirname(final)),
        mode=args.mode,
        verify=args.verify,
        conflict=args.conflict,
        folders=args.folders,
        package_min_files=args.package_min_files,
        min_free=FreeSpace(),
    )
    config = dataclasses.replace(base, routes=(route,))
    # The key before anything is written: on a keyed node, events recorded
    # without it are shipped and then flagged "altered" by `audit verify`
    # (review of #14 finding 18). A key this user cannot read refuses the
    # transfer (exit 2) instead of writing an unkeyed chain.
    Node.from_config(config, "transfer")
    # A one-off route is never paused for the next run: each run checks anew.
    resume_route(ROUTE, now=time.time())
    os.makedirs(route.destination, exist_ok=True)

    # A folder on a per_file route is one job per file (the tree is kept).
    items: list[tuple[bytes, bytes, str]] = []
    if os.path.isdir(src) and args.folders == "per_file":
        for entry in scan_tree(src)[0]:
            items.append(
                (os.path.join(src, entry.relpath), os.path.join(final, entry.relpath), "file")
            )
    else:
        items.append((src, final, "folder" if os.path.isdir(src) else "file"))
    total = sum(os.lstat(s).st_size for s, _, k in items if k == "file") or 0
    line = _ProgressLine(total, enabled=sys.stdout.isatty() and not args.json)
    shutdown = Shutdown().install()
    keeper = LeaseKeeper(config, shutdown)
    runner = JobRunner(config, shutdown=shutdown, keeper=keeper, on_progress=line)

    def run_one(item: tuple[bytes, bytes, str]) -> _Outcome:
        """One job, start to end."""
        source, destination, kind = item
        created = create_job(
            NewJob(
                route=ROUTE,
                mode=args.mode,
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
                config, hint=created.job_id, owner=owner_name(config.node), now=time.time()
            )
            if claimed is not None and claimed.job_id != created.job_id:
                # Another file's job (its own thread claims it): give it back.
                release(claimed.job_id, claimed.claim, now=time.time(), reason="not this file")
                claimed = None
            if claimed is None:
                # The route was paused by a job that failed meanwhile (a share
                # gone): this one fails too, rather than wait for nobody.
                job = _abandon(
                    Job.get_by_id(created.job_id),
                    "not started: another file of this transfer failed and paused the route",
                )
            else:
                runner.run(claimed)
                job = Job.get_by_id(created.job_id)
        except Exception as exc:  # the job store itself failed: say so on the job
            job = _abandon(Job.get_by_id(created.job_id), f"{type(exc).__name__}: {exc}")
        if job.state != "completed":
            reason = "interrupted" if shutdown.requested else (job.error or job.state)
            job = _abandon(job, reason)
        line.finished(job.id, job.size)
        # A light copy: 10,000 peewee rows held to the end weigh tens of MiB.
        return _Outcome(
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

    t0 = time.monotonic()

    def weight(item: tuple[bytes, bytes, str]) -> int:
        try:
            return buffer_bytes(os.lstat(item[0]).st_size)
        except OSError:  # gone: it runs alone and its job says why
            return BUFFER_BUDGET

    outcomes = list(
        _side_by_side(
            items,
            run_one,
            PER_FILE_JOBS,
            weight,
            BUFFER_BUDGET,
            stopping=lambda: shutdown.requested,
        )
    )
    line.done()
    if args.mode == "move" and len(items) > 1 and all(j.state == "completed" for j in outcomes):
        _remove_empty_dirs(src)
    seconds = time.monotonic() - t0
    # A one-shot transfer is a transfer: its events reach the audit log now,
    # not when `ketter workers` next runs (`ketter audit verify` right after).
    from ketter.audit.shipper import ship_now

    unshipped = ship_now(config)
    if unshipped is not None:
        print(
            f"ketter: the audit events are in the job store but not in the audit log "
            f"({unshipped}); `ketter audit ship` or the workers ship them",
            file=sys.stderr,
        )
    return _report(
        outcomes,
        seconds,
        args.json,
        not_started=len(items) - len(outcomes),
        store=config.db_path,
    )


def _abandon(job: Any, reason: str) -> Any:
    """A one-shot transfer that did not complete fails now (nobody would retry
    it): its temporaries go, and the row says why. A placed delivery is kept."""
    from ketter.engine.cleanup import rollback
    from ketter.jobs.states import State
    from ketter.jobs.transitions import transition
    from ketter.store import Job

    now = time.time()
    if job.dest_path is not None and job.placed_at is None:
        rollback(os.path.dirname(bytes(job.dest_path)), f".ketter-{job.id}-")
    state = State(job.state)
    if state in (State.COMPLETED, State.FAILED):
        return job
    error = f"{reason} (ketter transfer does not retry; run it again)"
    fields: dict[str, Any] = {
        "error": error,
        "lease_owner": None,
        "lease_expires_at": None,
        "completed_at": now,
    }
    if job.placed_at is None and state is not State.ROLLING_BACK:
        transition(
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
        return Job.get_by_id(job.id)
    transition(
        job.id,
        state,
        State.FAILED,
        claim=job.claim,
        now=now,
        rollback_to=None,
        details={"error": error},
        **fields,
    )
    return Job.get_by_id(job.id)


def _remove_empty_dirs(root: bytes) -> None:
    """After a per-file move, the emptied folders of the source go too."""
    for dirpath, _dirnames, _filenames in sorted(os.walk(root), key=lambda w: -len(w[0])):
        # Not empty: something was kept (a changed file) or added; leave it.
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _delivered_text(row: dict[str, Any], store: str | None) -> str:
    """One delivery for people. A folder has no checksum of its own (each
    file has its own, in the job's manifest): printing its ``sha256`` gave
    ``sha256 None`` (issue #14 finding 19)."""
    if row["kind"] == "folder":
        where = f" in {store}" if store else ""
        return (
            f"{row['destination']}\n  folder: {row['files']} file(s), {row['bytes']} bytes, "
            "each file's checksums verified\n"
            f"  manifest: `ketter job {row['job_id']}` lists each file with its sha256 "
            f"(job store{where})"
        )
    return (
        f"{row['destination']}\n  sha256 {row['sha256']}\n  xxh128 {row['xxh128']}"
        f"  xxh64 {row['xxh64']}\n  {row['bytes']} bytes, {row['files']} file(s)"
    )


class _Outcome(NamedTuple):
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


def _report(
    jobs: list[Any],
    seconds: float,
    as_json: bool,
    *,
    not_started: int = 0,
    store: str | None = None,
) -> int:
    """Print the outcome; 1 unless every job completed and none was left
    out (a failure or a stop ends a per_file folder before its last file)."""
    ok = all(j.state == "completed" for j in jobs) and not not_started
    size = sum(j.size for j in jobs)
    rows = [
        {
            "job_id": j.id,
            "state": j.state,
            "source": j.source_display,
            "destination": j.dest_display,
            "bytes": j.size,
            "files": j.file_count,
            "sha256": j.sha256,
            "xxh128": j.xxh128,
            "xxh64": j.xxh64,
            "error": j.error,
            "kind": getattr(j, "kind", "file"),
        }
        for j in jobs
    ]
    summary = {
        "ok": ok,
        "not_started": not_started,
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds / 1e6, 1) if seconds > 0 else None,
        "jobs": rows,
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            if row["state"] == "completed":
                print(_delivered_text(row, store))
        print(
            f"{size} bytes in {seconds:.2f} s ({summary['mb_per_s']} MB/s)"
            if ok
            else "transfer failed"
        )
    if not ok:
        failed = next((j for j in jobs if j.state != "completed"), None)
        if failed is not None:
            print(f"ketter: job {failed.id} {failed.state}: {failed.error}", file=sys.stderr)
        if not_started:
            why = "after a failure" if failed is not None else "interrupted"
            print(f"ketter: {not_started} file(s) not started ({why})", file=sys.stderr)
        return 1
    return 0
