"""``make bench-watcher`` (``--only pg``): the whole node end to end on
PostgreSQL (issue #18), against its peers in the same run.

Three variants of the e2e run of :mod:`watcher` (one copy route, 64 KiB
files dropped as fast as one thread can, ``verify: sha256``; ``ketter
watcher`` + ``ketter workers -w 2`` per node), interleaved round after
round (BENCHMARKING.md #1):

* ``sqlite/1`` — one node, job store and queue on SQLite under its
  ``state_dir`` (the embedded default);
* ``pg/1`` — the same node, job store and queue on PostgreSQL;
* ``pg/2`` — two nodes (``bench-a``, ``bench-b``: each its own
  ``state_dir``, watcher and workers) on the same database and the same
  route folders.

Files/s is the files over the seconds from the first drop to the last
``completed_at``. Goals (issue #18, as paired ratios of each round, median):
``pg/1`` ≥ 0.8 × ``sqlite/1`` and ``pg/2`` ≥ 1.0 × ``pg/1``. Each run
reports the CPU seconds per process kind (watchers, workers: summed over
the nodes) and PostgreSQL's own (the postmaster and its backends, reaped
ones included).

The cluster is thrown away: ``initdb`` + ``pg_ctl`` under the benchmark's
work folder (tests/pg.py's :func:`running_cluster`, as the tests start
theirs, but with ``fsync`` on: SQLite's commits are fsynced too); a fresh
database per run, migrated by ``ketter db upgrade``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import watcher as w
from harness import touch_memory

#: The variants: name → (nodes, store).
VARIANTS = {"sqlite/1": (1, "sqlite"), "pg/1": (1, "postgresql"), "pg/2": (2, "postgresql")}
#: (variant, peer, goal): variant's files/s ≥ goal × peer's.
GOALS = (("pg/1", "sqlite/1", 0.8), ("pg/2", "pg/1", 1.0))
#: The file size the goals are set on (the e2e run's); ``--pg-kib`` runs
#: the variants on another size, whose ratios are printed but are no verdict.
GOAL_SIZE = 64 * 2**10
WORKERS = int(os.environ.get("KETTER_BENCH_PG_WORKERS", "2"))
PROCESSES = int(os.environ.get("KETTER_BENCH_PG_PROCESSES", "1"))
#: The variants run (comma list; default all): an A/B of two trees needs
#: only ``sqlite/1,pg/1``. A goal whose variants did not run is left out.
ONLY = [v for v in os.environ.get("KETTER_BENCH_PG_VARIANTS", "").split(",") if v]
#: ``KETTER_BENCH_PG_STATEMENTS=1``: the server's statistics per statement
#: (its own time per file, the write turn's waits among it), from
#: ``pg_stat_statements`` preloaded in the bench cluster. Off by default:
#: the goals are measured on the server as it is, without its overhead.
STATEMENTS = os.environ.get("KETTER_BENCH_PG_STATEMENTS") == "1"
SETTINGS = (
    {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
    if STATEMENTS
    else {}
)
#: ``KETTER_BENCH_PG_SOCKET=1``: the nodes reach the server by its Unix
#: socket (libpq's way to a server on the same machine) instead of TCP on
#: 127.0.0.1.
SOCKET = os.environ.get("KETTER_BENCH_PG_SOCKET") == "1"
#: The statement that takes the store's write turn (ketter.store.postgres.db):
#: its server time is the time transactions waited for the turn.
TURN = "pg_advisory_xact_lock"


@contextlib.contextmanager
def cluster(root: str) -> Iterator[Any]:
    """A throw-away PostgreSQL cluster under ``root`` (tests/pg.py)."""
    sys.path.insert(0, w.REPO)
    try:
        from tests.pg import running_cluster
    finally:
        sys.path.remove(w.REPO)
    with running_cluster(Path(root), durable=True, settings=SETTINGS) as running:
        yield running


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the postmaster, its live backends and the ones it reaped."""
    stat = w._stat(postmaster)
    total = sum(int(x) for x in stat[11:15]) / w.CLK_TCK  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            child = w._stat(entry)
            if int(child[1]) == postmaster:
                total += (int(child[11]) + int(child[12])) / w.CLK_TCK
    return total


def statement_times(dsn: str, files: int) -> dict[str, Any]:
    """The server's own time in this run's database, per delivered file (ms):
    every statement's, and the write turn's waits among it; and the five
    statements that took the most."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND toplevel AND query !~* '^\\s*(CREATE|ALTER|DROP|INSERT INTO migratehistory)' "
            "ORDER BY total_exec_time DESC"
        ).fetchall()
    total = sum(float(r[1]) for r in rows)
    turn = sum(float(r[1]) for r in rows if TURN in r[2])
    return {
        "server_ms_per_file": round(total / files, 3),
        "turn_wait_ms_per_file": round(turn / files, 3),
        "top": [
            {"calls": int(c), "ms": round(float(t), 1), "query": " ".join(q.split())[:100]}
            for c, t, q in rows[:5]
        ],
    }


def server_counts(server: Any) -> dict[str, int]:
    """The server's commits (every database) and WAL flushes so far."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        commits = conn.execute("SELECT sum(xact_commit) FROM pg_stat_database").fetchone()
        syncs = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
    return {"commits": int(commits[0] or 0), "wal_syncs": int(syncs[0] or 0)}


class PgStore:
    """The job store on PostgreSQL, read only (:class:`watcher.Store`'s calls)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def one(self, sql: str, *args: object) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), args).fetchone()

    def all(self, sql: str, *args: object) -> list[Any]:
        return self.conn.execute(sql.replace("?", "%s"), args).fetchall()

    def close(self) -> None:
        self.conn.close()


def run(name: str, rnd: int, files: int, size: int, server: Any, seq: int) -> dict[str, Any]:
    nodes, backend = VARIANTS[name]
    root = os.path.join(w.WORK, "pg-e2e", f"{name.replace('/', '-')}-r{rnd}")
    src, dst = os.path.join(root, "src"), os.path.join(root, "dst")
    for d in (src, dst):
        os.makedirs(d)
    dsn = None
    if backend == "postgresql":
        dbname = f"bench_{seq}"
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        dsn = server.dsn(dbname)
        if SOCKET:
            dsn = (
                f"postgresql://{server.user}@/{dbname}?host={server.socket_dir}&port={server.port}"
            )
        if STATEMENTS:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
    procs: dict[str, Any] = {}
    configs = []
    for n in range(nodes):
        node = f"bench-{'ab'[n]}" if nodes > 1 else "bench"
        state = os.path.join(root, f"state-{node}")
        os.makedirs(state)
        cfg = os.path.join(root, f"{node}.yaml")
        w.write_config(cfg, state, src, dst, watch="auto", workers=WORKERS, node=node, dsn=dsn)
        configs.append((node, cfg, state))
    blobs = [os.urandom(size) for _ in range(files)]  # before the clock, not timed
    for node, cfg, _ in configs:
        base = [w.KETTER, "--config", cfg]
        procs[f"watcher:{node}"] = w.start([*base, "watcher"], f"{root}/{node}-watcher.log")
        procs[f"workers:{node}"] = w.start(
            [*base, "workers", "-w", str(WORKERS), "--processes", str(PROCESSES)],
            f"{root}/{node}-workers.log",
        )
    plist = list(procs.values())
    rec: dict[str, Any] = {"round": rnd, "ok": False, "error": ""}
    store: Any = None
    try:
        if dsn is None:
            db = os.path.join(configs[0][2], "ketter.db")
            w.wait_for("database", lambda: os.path.exists(db), 30, plist)
            store = w.Store(db)
        else:
            store = PgStore(dsn)
        s = store
        want = {(kind, node) for node, _, _ in configs for kind in ("watcher", "workers")}

        def beating() -> bool:
            return want <= {tuple(r) for r in s.all("SELECT component, node FROM heartbeats")}

        w.wait_for("heartbeats", beating, 60, plist)
        touch_memory(w.GiB)
        cpu0 = {n: w.cpu_seconds(p.pid) for n, p in procs.items()}
        pg0 = postgres_cpu(server.pid) if dsn else 0.0
        counts0 = server_counts(server) if dsn else {}
        t0 = time.time()
        for i, data in enumerate(blobs):
            fd = os.open(
                os.path.join(src, f"f{i:06d}.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
            )
            os.write(fd, data)
            os.close(fd)

        def done() -> bool:
            n = s.one("SELECT count(*) FROM jobs WHERE state IN ('completed', 'failed')")[0]
            return bool(n >= files)

        w.wait_for("all jobs completed", done, 120 + files / 10, plist, interval=0.2)
        cpu: dict[str, float] = {"watcher": 0.0, "workers": 0.0}
        for n, p in procs.items():
            cpu[n.split(":")[0]] += w.cpu_seconds(p.pid) - cpu0[n]
        if dsn:
            cpu["postgres"] = postgres_cpu(server.pid) - pg0
            # What bounds a node that is not short of CPU: commits, each a
            # WAL flush unless several share one (group commit). Close, not
            # exact: backends report their counts to the statistics at most
            # once a second.
            counts = server_counts(server)
            rec["per_file"] = {
                k: round((counts[k] - counts0[k]) / files, 1) for k in ("commits", "wal_syncs")
            }
            if STATEMENTS:
                rec["server"] = statement_times(dsn, files)
        rows = s.all("SELECT state, completed_at FROM jobs")
        good = [r for r in rows if r[0] == "completed"]
        seconds = max(r[1] for r in good) - t0
        delivered = sum(1 for n in os.listdir(dst) if n.endswith(".bin"))
        placed = s.all("SELECT node, count(*) FROM events WHERE event = 'place' GROUP BY node")
        rec.update(
            placed_by={str(node): int(n) for node, n in placed},
            seconds=round(seconds, 3),
            files_per_s=round(len(good) / seconds, 1),
            cpu_seconds={k: round(v, 2) for k, v in cpu.items()},
            cpu_percent={k: round(100 * v / seconds, 1) for k, v in cpu.items()},
            delivered=delivered,
        )
        if len(good) != files or delivered != files or len(rows) != files:
            rec["error"] = f"{len(good)} completed, {delivered} delivered, {len(rows)} jobs"
        else:
            rec["ok"] = True
    except Exception as e:  # a failed run is reported, the others go on
        rec["error"] = str(e)
    finally:
        if store is not None:
            store.close()
        rec["exit_codes"] = {n: w.stop(p) for n, p in procs.items()}
        if rec["ok"] and any(rec["exit_codes"].values()):
            rec.update(ok=False, error=f"exit codes {rec['exit_codes']}")
        w.move_aside(root)
    return rec


def bench(runs: int, files: int, size: int = GOAL_SIZE, quick: bool = False) -> dict[str, Any]:
    """Every variant ``runs`` times, interleaved; summaries and the goals."""
    names = [name for name in VARIANTS if not ONLY or name in ONLY]
    w.say(
        f"\n== pg: {files:,} files of {size // 1024} KiB per run, {WORKERS} worker threads "
        f"per node, {' · '.join(names)} interleaved, {runs} round(s) =="
    )
    out: dict[str, Any] = {"files": files, "size": size, "quick": quick, "variants": {}}
    for name in names:
        out["variants"][name] = {"runs": []}
    seq = 0
    with cluster(os.path.join(w.WORK, "pg-cluster")) as server:
        for rnd in range(1, runs + 1):
            k = (rnd - 1) % len(names)
            for name in names[k:] + names[:k]:
                seq += 1
                rec = run(name, rnd, files, size, server, seq)
                out["variants"][name]["runs"].append(rec)
                if rec["ok"]:
                    w.say(
                        f"  round {rnd}/{runs}  {name:<9} {rec['seconds']:7.2f} s "
                        f"{rec['files_per_s']:7.1f} files/s  cpu s {rec['cpu_seconds']}  "
                        f"placed by {rec['placed_by']}  per file {rec.get('per_file', {})}"
                        + _server_note(rec)
                    )
                else:
                    w.say(f"  round {rnd}/{runs}  {name:<9} FAILED: {rec['error']}")
    for data in out["variants"].values():
        data["summary"] = w.summarize(data["runs"], ("seconds", "files_per_s"))
        ok = [r for r in data["runs"] if r["ok"]]
        data["cpu_percent"] = {
            kind: round(statistics.median(r["cpu_percent"][kind] for r in ok), 1)
            for kind in (ok[0]["cpu_percent"] if ok else {})
        }
        data["server"] = {
            key: round(statistics.median(r["server"][key] for r in ok), 3)
            for key in ("server_ms_per_file", "turn_wait_ms_per_file")
            if ok and "server" in ok[0]
        }
    out["goals"] = goals(out)
    return out


def _server_note(rec: dict[str, Any]) -> str:
    server = rec.get("server")
    if not server:
        return ""
    return (
        f"  server {server['server_ms_per_file']:.2f} ms/file, "
        f"of which waiting for the turn {server['turn_wait_ms_per_file']:.2f}"
    )


def goals(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal as the median of the rounds' paired ratios."""
    checks = []
    for name, peer, goal in GOALS:
        if name not in out["variants"] or peer not in out["variants"]:
            continue
        mine, theirs = out["variants"][name]["runs"], out["variants"][peer]["runs"]
        ratios = [
            a["files_per_s"] / b["files_per_s"]
            for a, b in zip(mine, theirs, strict=True)
            if a["ok"] and b["ok"]
        ]
        ratio = statistics.median(ratios) if ratios else None
        checks.append(
            {
                "what": f"{name} files/s ≥ {goal:g} × {peer}",
                "goal": goal,
                "ratio": None if ratio is None else round(ratio, 3),
                "ratios": [round(r, 3) for r in ratios],
                "met": ratio is not None and ratio >= goal,
            }
        )
    return checks


def lines(out: dict[str, Any]) -> list[str]:
    """The table and the goals, ✔/✘, for the summary."""
    text = [
        f"PostgreSQL variants: {out['files']:,} × {out['size'] // 1024} KiB, median (min–max)",
        "",
        "| variant | ok | seconds | files/s | CPU % watcher | CPU % workers | CPU % postgres |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in out["variants"].items():
        s, cpu = d["summary"], d["cpu_percent"]
        text.append(
            f"| {name} | {s['ok_runs']}/{s['runs']} | {w._mmm(s, 'seconds')} | "
            f"{w._mmm(s, 'files_per_s', '.0f')} | {cpu.get('watcher', '—')} | "
            f"{cpu.get('workers', '—')} | {cpu.get('postgres', '—')} |"
        )
    server = {name: d["server"] for name, d in out["variants"].items() if d.get("server")}
    if server:
        text += [
            "",
            "PostgreSQL's own statement time per delivered file, median (pg_stat_statements; "
            f"the write turn's waits are its `{TURN}` statements' time):",
            "",
            "| variant | server ms/file | of which waiting for the turn |",
            "|---|---|---|",
        ]
        for name, d in server.items():
            text.append(
                f"| {name} | {d['server_ms_per_file']:.2f} | {d['turn_wait_ms_per_file']:.2f} |"
            )
    smoke = " (smoke: --quick sizes, not a figure)" if out.get("quick") else ""
    if out["size"] != GOAL_SIZE:
        smoke = (
            f" (files of {out['size'] // 1024} KiB: the goals are set on "
            f"{GOAL_SIZE // 1024} KiB files, these ratios are no verdict on them)"
        )
    text += ["", f"PostgreSQL goals (paired ratios per round, median){smoke}:"]
    for c in out["goals"]:
        value = "no ok pair" if c["ratio"] is None else f"{c['ratio']:.2f}× {c['ratios']}"
        text.append(f"  {'✔' if c['met'] else '✘'} {c['what']:34} {value}")
    return text
