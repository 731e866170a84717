"""``ketter workers``, ``ketter requeue`` and ``ketter enqueue``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from ketter.cli.common import add_config_arg, config_from
from ketter.config import Config, parse_duration
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

    requeue = commands.add_parser(
        "requeue", help="re-queue failed jobs (or failed and cancelled jobs by id)"
    )
    add_config_arg(requeue)
    requeue.add_argument(
        "job_ids", nargs="*", type=int, metavar="ID", help="job ids to re-queue (see ketter jobs)"
    )
    requeue.add_argument("--failed", action="store_true", help="every failed job")
    requeue.add_argument("--route", metavar="NAME", help="only this route (with --failed)")
    requeue.add_argument(
        "--since", help="only jobs that failed since: a duration ago (2h, 1d) or an ISO date/time"
    )
    requeue.set_defaults(func=requeue_jobs)

    enqueue = commands.add_parser("enqueue", help="submit a path on a route by hand")
    add_config_arg(enqueue)
    enqueue.add_argument("path", help="a file or folder inside the route's source")
    enqueue.add_argument(
        "--route", required=True, metavar="NAME", help="the route to submit it on (see the config)"
    )
    enqueue.set_defaults(func=enqueue_path)


def run_workers(args: argparse.Namespace) -> int:
    from ketter.workers.consumer import run_workers as run

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


def _unknown_route(config: Config, name: str) -> str:
    known = ", ".join(r.name for r in config.routes) or "none"
    return f"no route named {name!r} in {config.path} (routes: {known})"


def requeue_jobs(args: argparse.Namespace) -> int:
    from ketter.jobs.requeue import failed_jobs, requeue_job
    from ketter.node import Node

    config = config_from(args)
    if not args.failed and not args.job_ids:
        print("ketter: name job ids or use --failed", file=sys.stderr)
        return 2
    if args.route is not None and args.route not in {r.name for r in config.routes}:
        print(f"ketter: --route: {_unknown_route(config, args.route)}", file=sys.stderr)
        return 2
    # The key before the store: refused (exit 2) with nothing written.
    node = Node.from_config(config, "requeue")
    store = node.store
    assert store is not None
    ids = list(args.job_ids)
    if args.failed:
        ids += failed_jobs(store, route=args.route, since=_since(args.since))
    queue = node.queue
    count = 0
    refused = 0
    for job_id in ids:
        outcome = requeue_job(store, job_id, now=time.time())
        # "job 7: not re-queued, it is completed" also holds "re-queued":
        # look at what the outcome starts with, not at what it contains.
        what = outcome.split(": ", 1)[1] if ": " in outcome else outcome
        if what.startswith(("re-queued", "due now")):
            print(outcome)
            queue.ring(job_id)
            count += 1
        else:
            print(outcome, file=sys.stderr)
            refused += 1
    print(f"{count} job(s) re-queued" + (f", {refused} not" if refused else ""))
    # A job named on the command line that could not be re-queued (no such
    # job, completed, running) is a failed request: exit 1 for scripts.
    return 1 if refused else 0


def enqueue_path(args: argparse.Namespace) -> int:
    from ketter.jobs.submit import submit_path
    from ketter.node import Node

    config = config_from(args)
    try:
        route = config.route(args.route)
    except KeyError as exc:
        print(f"ketter: --route: {exc.args[0]}", file=sys.stderr)
        return 2
    path = os.path.abspath(args.path)
    if not os.path.lexists(path):
        # submit_path would call it "vanished during the transfer"
        print(f"ketter: {path} does not exist", file=sys.stderr)
        return 1
    # The key before the store: its events were written unkeyed on a keyed
    # node, and `audit verify --db` called them altered (#16 item 1).
    node = Node.from_config(config, "enqueue")
    assert node.store is not None
    queue = node.queue
    results = submit_path(node.store, config, route, os.fsencode(path), now=time.time())
    for result in results:
        if result.created:
            fault("after-commit-before-enqueue", store=node.store)
            queue.ring(result.job_id)
        print(result.message)
    return 0 if results else 1
