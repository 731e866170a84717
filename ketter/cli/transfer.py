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
import time
from typing import Any, NamedTuple

from ketter.cli.common import add_config_arg
from ketter.config import Config, RouteConfig, find_config_path, load_config, parse_config
from ketter.config.units import FreeSpace
from ketter.paths import readable

ROUTE = "cli-transfer"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("transfer", help="copy or move one file or folder now, verified")
    add_config_arg(p)
    p.add_argument("src", metavar="SRC")
    p.add_argument(
        "dst",
        metavar="DST",
        help="an existing folder (SRC keeps its name inside it) or the new path itself",
    )
    p.add_argument("--mode", choices=("copy", "move"), default="copy")
    p.add_argument("--verify", choices=("sha256", "xxh128"), default="sha256")
    p.add_argument(
        "--conflict", choices=("fail", "skip_identical", "rename", "overwrite"), default="fail"
    )
    p.add_argument("--folders", choices=("per_file", "as_unit"), default="as_unit")
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
    """A live progress line on a terminal: bytes, MB/s, ETA, phase."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, active: Any) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        done = active.bytes_done
        rate = done / max(now - self.start, 1e-6)
        eta = (self.total - done) / rate if rate > 0 and active.phase == "copy" else 0
        sys.stdout.write(
            f"\r{active.phase:>7}  {done / 1e6:10.1f} / {self.total / 1e6:.1f} MB"
            f"  {rate / 1e6:7.1f} MB/s  ETA {eta:5.0f}s "
        )
        sys.stdout.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stdout.write("\r" + " " * 72 + "\r")


def run_transfer(args: argparse.Namespace) -> int:
    from ketter.audit import chain
    from ketter.engine.source import scan_tree
    from ketter.jobs.claim import claim_job, owner_name
    from ketter.jobs.create import NewJob, create_job
    from ketter.jobs.lease import LeaseKeeper
    from ketter.jobs.routes import resume_route
    from ketter.jobs.runner import JobRunner
    from ketter.runtime.signals import Shutdown
    from ketter.store import Job, open_store

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
    open_store(config.db_path)
    chain.configure(node=config.node)
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
    t0 = time.monotonic()
    outcomes = []
    for source, destination, kind in items:
        now = time.time()
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
            now=now,
            event_details={"by": "ketter transfer"},
        )
        claimed = claim_job(
            config, hint=created.job_id, owner=owner_name(config.node), now=time.time()
        )
        if claimed is None or claimed.job_id != created.job_id:
            print(f"ketter: job {created.job_id} could not be claimed", file=sys.stderr)
            return 1
        runner.run(claimed)
        job = Job.get_by_id(created.job_id)
        if job.state != "completed":
            reason = "interrupted" if shutdown.requested else (job.error or job.state)
            job = _abandon(job, reason)
        # A light copy: 10,000 peewee rows held to the end weigh tens of MiB.
        outcomes.append(
            _Outcome(
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
            )
        )
        if job.state != "completed":
            break
    line.done()
    if args.mode == "move" and len(items) > 1 and all(j.state == "completed" for j in outcomes):
        _remove_empty_dirs(src)
    seconds = time.monotonic() - t0
    return _report(outcomes, seconds, args.json)


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


def _report(jobs: list[Any], seconds: float, as_json: bool) -> int:
    ok = all(j.state == "completed" for j in jobs)
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
        }
        for j in jobs
    ]
    summary = {
        "ok": ok,
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
                print(
                    f"{row['destination']}\n  sha256 {row['sha256']}\n  xxh128 {row['xxh128']}"
                    f"  xxh64 {row['xxh64']}\n  {row['bytes']} bytes, {row['files']} file(s)"
                )
        print(
            f"{size} bytes in {seconds:.2f} s ({summary['mb_per_s']} MB/s)"
            if ok
            else "transfer failed"
        )
    if not ok:
        failed = jobs[-1]
        print(f"ketter: job {failed.id} {failed.state}: {failed.error}", file=sys.stderr)
        return 1
    return 0
