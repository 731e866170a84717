"""Read-only commands: ``ketter jobs``, ``ketter job ID``, ``ketter status``.

They open the job store read-only, so a monitoring or operator account that
may read the state directory (group ``ketter``) can use them while the
service runs.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ketter.cli.common import add_config_arg, config_from, print_json, table
from ketter.jobs.states import State
from ketter.store import open_readonly

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
    jobs.add_argument("--state", choices=[s.value for s in State])
    jobs.add_argument("--route")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=list_jobs)

    job = commands.add_parser("job", help="one job with its events")
    add_config_arg(job)
    job.add_argument("job_id", type=int, metavar="ID")
    job.add_argument("--json", action="store_true")
    job.set_defaults(func=show_job)

    status = commands.add_parser(
        "status", help="job counts per state and route, paused routes, heartbeats"
    )
    add_config_arg(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=show_status)


def _rows(db: Any, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = db.execute_sql(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def list_jobs(args: argparse.Namespace) -> int:
    db = open_readonly(config_from(args).db_path)
    where, params = [], []
    if args.state:
        where.append("state = ?")
        params.append(args.state)
    if args.route:
        where.append("route = ?")
        params.append(args.route)
    sql = "SELECT * FROM job_history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY job_id DESC LIMIT ?"
    rows = _rows(db, sql, (*params, args.limit))
    if args.json:
        print_json(rows)
    else:
        print(table(rows, HISTORY_COLUMNS))
    return 0


def show_job(args: argparse.Namespace) -> int:
    db = open_readonly(config_from(args).db_path)
    rows = _rows(db, "SELECT * FROM job_history WHERE job_id = ?", (args.job_id,))
    if not rows:
        print(f"no job {args.job_id}")
        return 1
    events = _rows(
        db,
        "SELECT id AS seq, ts, event, from_state, to_state, attempt, node, "
        "pid, user, details FROM events WHERE job_id = ? ORDER BY id",
        (args.job_id,),
    )
    for event in events:
        event["time"] = _iso(event.pop("ts"))
        event["details"] = json.loads(event["details"])
    files = _rows(
        db,
        "SELECT relpath_display AS path, size, sha256 FROM job_files WHERE job_id = ? ORDER BY id",
        (args.job_id,),
    )
    if args.json:
        print_json({"job": rows[0], "events": events, "files": files})
        return 0
    for key, value in rows[0].items():
        print(f"{key:>13}: {'-' if value is None else value}")
    if files:
        print(f"\nfiles ({len(files)}):")
        print(table(files, ["path", "size", "sha256"]))
    print("\nevents:")
    for event in events:
        move = f"{event['from_state'] or ''}→{event['to_state']}" if event["to_state"] else ""
        detail = json.dumps(event["details"], ensure_ascii=False) if event["details"] else ""
        print(
            f"  #{event['seq']} {event['time']} {event['event']:<13} {move:<26} "
            f"attempt={event['attempt']} {detail}"
        )
    return 0


def show_status(args: argparse.Namespace) -> int:
    config = config_from(args)
    db = open_readonly(config.db_path)
    by_state = _rows(
        db,
        "SELECT state, COUNT(*) AS jobs, SUM(size) AS bytes FROM jobs "
        "GROUP BY state ORDER BY state",
    )
    by_route = _rows(
        db,
        "SELECT route, state, COUNT(*) AS jobs FROM jobs "
        "GROUP BY route, state ORDER BY route, state",
    )
    paused = _rows(db, "SELECT route, reason, since FROM route_status WHERE paused = 1")
    beats = _rows(db, "SELECT component, node, pid, ts, details FROM heartbeats ORDER BY component")
    now = time.time()
    for beat in beats:
        beat["age_s"] = round(now - beat.pop("ts"), 1)
        beat["details"] = json.loads(beat["details"])
    for row in paused:
        row["since"] = _iso(row["since"])
    if args.json:
        print_json({"states": by_state, "routes": by_route, "paused": paused, "heartbeats": beats})
        return 0
    print("jobs by state:")
    print(table(by_state, ["state", "jobs", "bytes"]))
    print("\njobs by route:")
    print(table(by_route, ["route", "state", "jobs"]))
    print("\npaused routes:")
    print(table(paused, ["route", "reason", "since"]))
    print("\nheartbeats:")
    print(table(beats, ["component", "node", "pid", "age_s", "details"]))
    return 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
