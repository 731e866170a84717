"""Read-only commands: ``ketter jobs``, ``ketter job ID``, ``ketter status``.

They open the job store read-only, so a monitoring or operator account that
may read the state directory (group ``ketter``) can use them while the
service runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from ketter.cli.common import add_config_arg, config_from, print_json, table
from ketter.jobs.states import TERMINAL, State
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
        "status", help="job counts per state and route, paused routes, heartbeats"
    )
    add_config_arg(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(func=show_status)


def _rows(db: Any, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = db.execute_sql(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def list_jobs(args: argparse.Namespace) -> int:
    config = config_from(args)
    db = open_readonly(config.db_path)
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
    running = _running(db, now)
    terminal = _terminal_ids(db, beats)
    for beat in beats:
        beat["age_s"] = round(now - beat.pop("ts"), 1)
        beat["details"] = json.loads(beat["details"])
        _drop_finished(beat["details"], terminal)
    for row in paused:
        row["since"] = _iso(row["since"])
    if args.json:
        print_json(
            {
                "states": by_state,
                "routes": by_route,
                "running": running,
                "paused": paused,
                "heartbeats": beats,
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
    print("\nheartbeats:")
    for beat in beats:
        beat["details"] = heartbeat_text(beat["details"])
    print(table(beats, ["component", "node", "pid", "age_s", "details"]))
    return 0


#: States in which a job with a live lease is being worked on.
_IN_FLIGHT = tuple(s.value for s in State if s not in TERMINAL and s is not State.RETRY_WAIT)


def _running(db: Any, now: float) -> list[dict[str, Any]]:
    """Jobs a worker holds right now (live lease, not terminal), with the
    rate since the claim that is running them."""
    marks = ",".join("?" * len(_IN_FLIGHT))
    rows = _rows(
        db,
        "SELECT j.id AS job_id, j.route, j.state, j.bytes_done, j.size, j.progress_at, "
        "j.source_display AS source, "
        "(SELECT MAX(e.ts) FROM events AS e WHERE e.job_id = j.id "
        " AND e.event IN ('claim', 'resume', 'recover')) AS claimed_at "
        f"FROM jobs AS j WHERE j.state IN ({marks}) AND j.lease_owner IS NOT NULL "
        "AND j.lease_expires_at > ? ORDER BY j.id",
        (*_IN_FLIGHT, now),
    )
    for row in rows:
        start, at = row.pop("claimed_at"), row.pop("progress_at")
        row["rate"] = row["bytes_done"] / (at - start) if start and at and at > start else None
    return rows


def _terminal_ids(db: Any, beats: list[dict[str, Any]]) -> set[int]:
    """Ids among the heartbeats' running jobs that have finished since: a
    heartbeat is up to ``lease.heartbeat`` old and must not show a completed
    job as running."""
    ids = set()
    for beat in beats:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ids |= {int(r["job_id"]) for r in json.loads(beat["details"]).get("running", [])}
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    ends = ",".join("?" * len(TERMINAL))
    found = _rows(
        db,
        f"SELECT id FROM jobs WHERE id IN ({marks}) AND state IN ({ends})",
        (*sorted(ids), *(s.value for s in TERMINAL)),
    )
    return {row["id"] for row in found}


def _drop_finished(details: Any, terminal: set[int]) -> None:
    if isinstance(details, dict) and isinstance(details.get("running"), list):
        details["running"] = [
            r
            for r in details["running"]
            if not (isinstance(r, dict) and r.get("job_id") in terminal)
        ]


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
        if key == "running" and isinstance(value, list):
            jobs = [
                f"job {r.get('job_id')} {r.get('phase', '')} {size_text(r.get('bytes') or 0)}"
                if isinstance(r, dict)
                else str(r)
                for r in value
            ]
            parts.append("running: " + ("; ".join(jobs) if jobs else "none"))
        elif key == "started_at" and isinstance(value, int | float):
            parts.append(f"started {_iso(value)}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
