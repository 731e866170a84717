"""``ketter cancel``, ``ketter pause`` and ``ketter resume``: an operator's
control of jobs and routes. They only parse and print: the work is
:mod:`ketter.jobs.cancel` and :mod:`ketter.jobs.hold`, which the HTTP API
calls too."""

from __future__ import annotations

import argparse
import sys
import time

from ketter.cli.common import add_config_arg, config_from


def register(commands: argparse._SubParsersAction) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="cancel jobs before their placement (rolled back, ended cancelled)",
    )
    add_config_arg(cancel)
    cancel.add_argument("job_ids", type=int, nargs="+", metavar="ID", help="job ids")
    cancel.set_defaults(func=cancel_jobs)

    pause = commands.add_parser(
        "pause", help="hold a route: no new work starts until `ketter resume`"
    )
    add_config_arg(pause)
    pause.add_argument("route", metavar="ROUTE", help="the route's name")
    pause.add_argument(
        "--reason", required=True, help="why (shown in `ketter status` and the audit trail)"
    )
    pause.set_defaults(func=hold)

    resume = commands.add_parser("resume", help="release a route held by `ketter pause`")
    add_config_arg(resume)
    resume.add_argument("route", metavar="ROUTE", help="the route's name")
    resume.set_defaults(func=release)


def cancel_jobs(args: argparse.Namespace) -> int:
    from ketter.jobs.cancel import cancel_job
    from ketter.node import Node

    config = config_from(args)
    # The key before the store: refused (exit 2) with nothing written.
    node = Node.from_config(config, "cancel")
    assert node.store is not None
    refused = 0
    for job_id in args.job_ids:
        result = cancel_job(node.store, job_id, now=time.time(), actor=node.chain.actor)
        print(result.message, file=sys.stdout if result.accepted else sys.stderr)
        refused += 0 if result.accepted else 1
    return 1 if refused else 0


def hold(args: argparse.Namespace) -> int:
    from ketter.jobs.hold import UnknownRoute, check_route, hold_route
    from ketter.node import Node

    config = config_from(args)
    try:
        check_route(config, args.route)
    except UnknownRoute as exc:
        print(f"ketter: {exc}", file=sys.stderr)
        return 2
    if not args.reason.strip():
        print("ketter: --reason must say why the route is held", file=sys.stderr)
        return 2
    node = Node.from_config(config, "pause")
    assert node.store is not None
    if hold_route(
        node.store, args.route, reason=args.reason, now=time.time(), actor=node.chain.actor
    ):
        print(
            f"route {args.route}: held ({args.reason.strip()}); running jobs finish, "
            "no new job starts until `ketter resume`"
        )
        return 0
    status = node.store.route_status(args.route)
    by = f" by {status.held_by}" if status is not None and status.held_by else ""
    why = status.held_reason if status is not None else ""
    print(f"route {args.route}: already held{by} ({why})", file=sys.stderr)
    return 1


def release(args: argparse.Namespace) -> int:
    from ketter.jobs.hold import UnknownRoute, check_route, release_route
    from ketter.node import Node

    config = config_from(args)
    try:
        check_route(config, args.route)
    except UnknownRoute as exc:
        print(f"ketter: {exc}", file=sys.stderr)
        return 2
    node = Node.from_config(config, "resume")
    assert node.store is not None
    if release_route(node.store, args.route, now=time.time(), actor=node.chain.actor):
        print(f"route {args.route}: released; its waiting jobs start again")
        return 0
    status = node.store.route_status(args.route)
    note = ""
    if status is not None and status.paused:
        note = f"; it is paused by Ketter itself ({status.reason}) and resumes by itself"
    print(f"route {args.route}: not held, nothing to resume{note}", file=sys.stderr)
    return 1
