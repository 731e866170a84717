"""``ketter workers``, ``ketter requeue`` and ``ketter enqueue``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from ketter.cli.common import add_config_arg, config_from
from ketter.config import parse_duration
from ketter.runtime.faults import fault
from ketter.runtime.logs import setup_logging


def register(commands: argparse._SubParsersAction) -> None:
    workers = commands.add_parser(
        "workers", help="run the worker pool (systemd: ketter-workers.service)"
    )
    add_config_arg(workers)
    workers.add_argument(
        "-w", "--workers", type=int, help="worker threads (default: `workers` in the config)"
    )
    workers.add_argument(
        "-p",
        "--processes",
        type=int,
        help="workers processes, each with that many threads "
        "(default: `worker_processes` in the config)",
    )
    workers.set_defaults(func=run_workers)

    requeue = commands.add_parser("requeue", help="re-queue failed jobs (or jobs by id)")
    add_config_arg(requeue)
    requeue.add_argument("job_ids", nargs="*", type=int, metavar="ID")
    requeue.add_argument("--failed", action="store_true", help="every failed job")
    requeue.add_argument("--route", help="only this route (with --failed)")
    requeue.add_argument(
        "--since", help="only jobs that failed since: a duration ago (2h, 1d) or an ISO date/time"
    )
    requeue.set_defaults(func=requeue_jobs)

    enqueue = commands.add_parser("enqueue", help="submit a path on a route by hand")
    add_config_arg(enqueue)
    enqueue.add_argument("path")
    enqueue.add_argument("--route", required=True)
    enqueue.set_defaults(func=enqueue_path)


def run_workers(args: argparse.Namespace) -> int:
    from workers.consumer import run_workers as run

    setup_logging()
    config = config_from(args)
    for name in ("workers", "processes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"ketter: --{name} must be at least 1", file=sys.stderr)
            return 2
    return run(config, workers=args.workers, processes=args.processes)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"ketter: --since {text!r}: give a duration (2h, 1d) or an ISO "
            "date (2026-11-24 or 2026-11-24T08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def requeue_jobs(args: argparse.Namespace) -> int:
    from ketter.jobs.requeue import failed_jobs, requeue_job
    from ketter.store import open_store
    from workers.app import build_queue

    config = config_from(args)
    if not args.failed and not args.job_ids:
        print("ketter: name job ids or use --failed", file=sys.stderr)
        return 2
    open_store(config.db_path)
    ids = list(args.job_ids)
    if args.failed:
        ids += failed_jobs(route=args.route, since=_since(args.since))
    queue = build_queue(config)
    count = 0
    for job_id in ids:
        outcome = requeue_job(job_id, now=time.time())
        print(outcome)
        if "re-queued" in outcome or "due now" in outcome:
            queue.ring(job_id)
            count += 1
    print(f"{count} job(s) re-queued")
    return 0


def enqueue_path(args: argparse.Namespace) -> int:
    from ketter.audit import chain
    from ketter.jobs.submit import submit_path
    from ketter.store import open_store
    from workers.app import build_queue

    config = config_from(args)
    route = config.route(args.route)
    open_store(config.db_path)
    chain.configure(node=config.node)
    queue = build_queue(config)
    results = submit_path(config, route, os.fsencode(os.path.abspath(args.path)), now=time.time())
    for result in results:
        if result.created:
            fault("after-commit-before-enqueue")
            queue.ring(result.job_id)
        print(result.message)
    return 0 if results else 1
