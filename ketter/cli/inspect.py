"""Read-only commands: ``ketter jobs``, ``ketter job ID``, ``ketter status``.

They open the job store read-only, so a monitoring or operator account that
may read the state directory (group ``ketter``) can use them while the
service runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from ketter.cli.common import add_config_arg, config_from, print_json, table
from ketter.jobs.states import State
from ketter.node import Node
from ketter.runtime.identity import nodes_view
from ketter.store.port import JobFilter
from ketter.store.sql_read import SqlReadStore, iso

HISTORY_COLUMNS = [
    "job_id",
    "route",
    "state",
    "attempt",
    "source",
    "destination",
    "bytes",
    "updated",
    "error",
]


def register(commands: argparse._SubParsersAction) -> None:
    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    add_config_arg(jobs)
    jobs.add_argument("--state", choices=[s.value for s in State], help="only jobs in this state")
    jobs.add_argument("--route", metavar="NAME", help="only jobs of this route")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    jobs.set_defaults(func=list_jobs)

    job = commands.add_parser("job", help="one job with its events")
    add_config_arg(job)
    job.add_argument("job_id", type=int, metavar="ID", help="the job id (see ketter jobs)")
    job.add_argument("--json", action="store_true", help="print JSON instead of text")
    job.set_defaults(func=show_job)

    status = commands.add_parser(
        "status", help="job counts per state and route, paused and held routes, heartbeats"
    )
    add_config_arg(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(func=show_status)


def _read(config: Any) -> SqlReadStore:
    """The read model of ``config``'s job store, whichever backend holds it."""
    return Node.from_config(config, "read", open_store=False).open_read()


def list_jobs(args: argparse.Namespace) -> int:
    config = config_from(args)
    store = _read(config)
    page = store.list_jobs(JobFilter(state=args.state, route=args.route), args.limit)
    rows = [job.as_dict() for job in page.jobs]
    if args.route and args.route not in {r.name for r in config.routes}:
        # `(none)` alone read as "no jobs yet" for a mistyped route name.
        known = ", ".join(r.name for r in config.routes) or "none"
        print(
            f"ketter: --route: no route named {args.route!r} in {config.path} (routes: {known})"
            + ("; showing the jobs it had before it was removed" if rows else ""),
            file=sys.stderr,
        )
        if not rows:
            return 2
    if args.json:
        print_json(rows)
    else:
        print(table(rows, HISTORY_COLUMNS))
    return 0


def show_job(args: argparse.Namespace) -> int:
    store = _read(config_from(args))
    detail = store.job_detail(args.job_id)
    if detail is None:
        print(f"no job {args.job_id}")
        return 1
    job = detail.job.as_dict()
    events = [event.as_dict() for event in detail.events]
    files = [entry.as_dict() for entry in detail.files]
    if args.json:
        print_json({"job": job, "events": events, "files": files})
        return 0
    for key, value in job.items():
        print(f"{key:>13}: {'-' if value is None else value}")
    if files:
        print(f"\nfiles ({len(files)}):")
        print(table(files, ["path", "size", "sha256"]))
    print("\nevents:")
    for event in events:
        move = f"{event['from_state'] or ''}→{event['to_state']}" if event["to_state"] else ""
        detail_text = json.dumps(event["details"], ensure_ascii=False) if event["details"] else ""
        print(
            f"  #{event['seq']} {event['time']} {event['event']:<13} {move:<26} "
            f"attempt={event['attempt']} {detail_text}"
        )
    return 0


def show_status(args: argparse.Namespace) -> int:
    config = config_from(args)
    store = _read(config)
    now = time.time()
    view = store.status(now)
    by_state = [asdict(row) for row in view.states]
    by_route = [asdict(row) for row in view.routes]
    running = [asdict(job) for job in view.running]
    paused = [{**asdict(row), "since": iso(row.since)} for row in view.paused]
    held = [{**asdict(row), "since": iso(row.since)} for row in view.held]
    # Every node sharing the store, and who watches each route (issue #18):
    # heartbeat ages on the heartbeats' clock (the database's on PostgreSQL).
    beat_now = store.clock(now)
    nodes = nodes_view(view.heartbeats, now=beat_now, live_for=config.lease.ttl)
    watchers = [
        {"route": r.name, "watched_by": nodes["route_watchers"].get(r.name, "-")}
        for r in config.routes
    ]
    beats = [
        {
            "component": beat.component,
            "node": beat.node,
            "pid": beat.pid,
            "details": beat.details,
            "age_s": round(beat_now - beat.ts, 1),
        }
        for beat in view.heartbeats
    ]
    if args.json:
        print_json(
            {
                "states": by_state,
                "routes": by_route,
                "running": running,
                "paused": paused,
                "held": held,
                "heartbeats": beats,
                "nodes": nodes["nodes"],
                "route_watchers": nodes["route_watchers"],
            }
        )
        return 0
    print("jobs by state:")
    print(table(by_state, ["state", "jobs", "bytes"]))
    print("\njobs by route:")
    print(table(by_route, ["route", "state", "jobs"]))
    print("\nrunning jobs:")
    for job in running:
        job["progress"] = progress_text(job["bytes_done"], job["size"], job["rate"])
    print(table(running, ["job_id", "route", "state", "progress", "source"]))
    print("\npaused routes:")
    print(table(paused, ["route", "reason", "since"]))
    print("\nheld routes (`ketter pause`: until `ketter resume`):")
    print(table(held, ["route", "reason", "by", "since"]))
    print("\nheartbeats:")
    for beat in beats:
        beat["details"] = heartbeat_text(beat["details"])
    print(table(beats, ["component", "node", "pid", "age_s", "details"]))
    if config.store.backend != "postgresql":
        return 0  # one node: the heartbeats say it all
    print("\nnodes:")
    for entry in nodes["nodes"]:
        processes = ", ".join(
            f"{p['component']} pid {p['pid']} {p['age_s']}s ago ({p['state']})"
            for p in entry["processes"]
        )
        print(f"  {entry['node']} on {entry['host'] or '?'}: {processes}")
    print("\nroute watchers:")
    print(table(watchers, ["route", "watched_by"]))
    return 0


def size_text(n: float) -> str:
    """Bytes for people: ``512 B``, ``3.4 KiB``, ``768.0 MiB``, ``1.50 GiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.{2 if unit in ('GiB', 'TiB') else 1}f} {unit}"
    return f"{int(n)} B"


def progress_text(done: int | None, total: int | None, rate: float | None = None) -> str:
    """``384.0 MiB / 768.0 MiB (50%), 120.5 MB/s``."""
    done = done or 0
    text = size_text(done)
    if total:
        text += f" / {size_text(total)} ({min(100, 100 * done // total)}%)"
    if rate:
        text += f", {rate / 1e6:.1f} MB/s"
    return text


def heartbeat_text(details: Any) -> str:
    """A heartbeat's details as one line for people (``--json`` keeps them raw)."""
    if not isinstance(details, dict):
        return str(details)
    if details.get("stopped"):
        clean = details.get("clean", True)
        return "stopped cleanly" if clean else "stopped"
    parts = []
    for key, value in details.items():
        if key == "origin":  # the writer's host and boot (the nodes table shows the host)
            continue
        if key == "running" and isinstance(value, list):
            jobs = [
                f"job {r.get('job_id')} {r.get('phase', '')} {size_text(r.get('bytes') or 0)}"
                if isinstance(r, dict)
                else str(r)
                for r in value
            ]
            parts.append("running: " + ("; ".join(jobs) if jobs else "none"))
        elif key == "started_at" and isinstance(value, int | float):
            parts.append(f"started {iso(value)}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)
