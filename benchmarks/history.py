"""``make bench-history``: a history of a million jobs that costs nothing (#19, P6).

Results in docs/performance-watcher.md ("A history of a million jobs").

1. **The store**: ``build_store`` of ``benchmarks/api.py`` (real deliveries
   by ``ketter workers``, cloned with SQL up to ``--jobs``, about 7 events a
   job), kept under ``var/bench-history/`` for the next run; ``ketter db
   upgrade`` then (a store built before a migration is upgraded, and the
   upgrade is timed). ``--reuse`` takes the store there as it is.
2. **The commands** an operator runs, each ``--repeat`` times, alternating
   with ``ketter --version`` (the interpreter's start-up on this machine, the
   floor of any command): ``status``, ``jobs --limit 50``, ``jobs --state
   failed``, ``job ID``, ``health``: wall time, median; goal ≤ 0.5 s. The
   read model's own time (in this process, no start-up) is printed next to
   it, and the audit verifier's job-state check (``jobs_ahead_of_events``).
3. **End to end** (``--files`` × 64 KiB, SHA-256, ``ketter run -w 2``): the
   same drop into a fresh route on an empty store and on the million-job
   store, alternating, ``--rounds`` each; goal: files/s on the big store ≥
   0.9 × the empty store's (median of the rounds).
4. **Steady load** (``--steady`` seconds, 3 minutes by default, on the big
   store): files dropped at ``--rate`` per second while ``ketter run``
   delivers them; the WAL file's size and the RSS of Ketter's processes
   sampled every 5 s. Goals: the WAL stays under 64 MiB (its
   ``journal_size_limit``: see ketter/store/db.py), and the RSS of the last
   third of the run is within 10 % of the first third's.

The other agents' load shares the two cores: ``load1`` is printed with each
section. ``--only cli,e2e,steady`` picks sections.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import api

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KETTER = [PYTHON, "-I", "-m", "ketter"]  # -I: the interpreter's ketter, not one in the cwd
GOAL_SECONDS = 0.5
GOAL_RATIO = 0.9
WAL_LIMIT = 64 << 20
RSS_GROWTH = 0.10
NODE = "bench-api"  # the node that built the store


def say(msg: str = "") -> None:
    print(msg, flush=True)


def load1() -> str:
    return f"load1 {os.getloadavg()[0]:.1f}"


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if done.returncode not in (0, 1):  # health answers 1 when a service is down
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


# -- 2. the commands ------------------------------------------------------------


def in_process(db: Path, job_id: int) -> dict[str, float]:
    """The read model's time per command, without the interpreter's start-up."""
    from ketter.audit.chain import AuditChain
    from ketter.store.port import JobFilter
    from ketter.store.sqlite import open_job_store
    from ketter.store.sqlite_read import open_read

    found: dict[str, float] = {}
    reads = open_read(str(db))
    calls = {
        "status": lambda: reads.status(time.time()),
        "jobs --limit 50": lambda: reads.list_jobs(JobFilter(), 50),
        "jobs --state failed": lambda: reads.list_jobs(JobFilter(state="failed"), 50),
        f"job {job_id}": lambda: reads.job_detail(job_id),
        "health": lambda: reads.health_facts(NODE),
    }
    for name, call in calls.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        found[name] = statistics.median(times)
    reads.close()
    store = open_job_store(db, AuditChain(node=NODE), migrate=False)
    t0 = time.perf_counter()
    store.jobs_ahead_of_events(limit=20)
    found["audit verify: job-state check"] = time.perf_counter() - t0
    store.close()
    return found


def commands(config: Path, db: Path, repeat: int) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    job_id = int(con.execute("SELECT MAX(id) FROM jobs").fetchone()[0]) - 3
    con.close()
    names = ["status", "jobs --limit 50", "jobs --state failed", f"job {job_id}", "health"]
    walls: dict[str, list[float]] = {n: [] for n in ["--version", *names]}
    timed([*KETTER, "--config", str(config), "status"])  # warm the page cache, untimed
    for _ in range(repeat):
        for name in walls:
            argv = (
                [*KETTER, "--version"]
                if name == "--version"
                else [*KETTER, "--config", str(config), *name.split()]
            )
            walls[name].append(timed(argv))
    inner = in_process(db, job_id)
    out: dict[str, Any] = {"load1": os.getloadavg()[0], "commands": {}}
    floor = statistics.median(walls["--version"])
    say(f"commands ({repeat} runs each, medians; {load1()}; `ketter --version`: {floor:.2f} s):")
    for name in names:
        wall = statistics.median(walls[name])
        out["commands"][name] = {"wall": wall, "runs": walls[name], "read": inner[name]}
        say(f"    {name:24} {wall:6.2f} s  (read model {inner[name] * 1000:7.1f} ms)")
    check = inner["audit verify: job-state check"]
    out["job_state_check"] = check
    say(f"    audit verify's job-state check (in process): {check:.2f} s")
    out["version"] = floor
    return out


# -- 3. end to end ----------------------------------------------------------------

#: Run in the store's interpreter (``-I``): the audit shipper's position set to
#: the event before the last, and the last one shipped. A node with a million
#: jobs shipped their events long ago; the clones' 7 M events (whose hashes
#: are the originals', so each is a "chain break" to the shipper) would be
#: shipped during the measurements otherwise: gigabytes of log.
_MARK_SHIPPED = """
import sys
from ketter.audit.shipper import AuditShipper
from ketter.config.loader import load_config
from ketter.node import Node
config = load_config(sys.argv[1])
node = Node.from_config(config, "ship")
store = node.store
head = store.last_event()
before = store.event_hash(head.id - 1)
shipper = AuditShipper(config, store=store)
shipper._open()
if shipper._last_seq < head.id - 1:
    shipper._last_seq, shipper._last_hash = head.id - 1, before
    shipper.ship_once()
print(f"audit log: shipped up to seq {shipper._last_seq}")
"""


def mark_shipped(config: Path) -> None:
    logs = config.parent / "state" / "logs"
    if logs.exists():
        logs.rename(config.parent / f"logs-{time.monotonic_ns()}")  # not deleted now
    done = subprocess.run(
        [PYTHON, "-I", "-c", _MARK_SHIPPED, str(config)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"marking the audit log shipped failed:\n{done.stderr[-3000:]}")
    say(done.stdout.strip())


def route_config(path: Path, state: Path, src: Path, dst: Path) -> None:
    path.write_text(
        f"state_dir: {state}\nnode: {NODE}\nworkers: 2\nshutdown_timeout: 30s\nroutes:\n"
        f"  - {{name: e2e, source: '{src}', destination: '{dst}', mode: copy, "
        "watch: auto, stable_seconds: 1, poll_interval: 0.5s, verify: sha256}\n"
    )


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*KETTER, "--config", str(config), "run", "-w", "2"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise SystemExit(f"{what}: ketter run exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def e2e_run(state: Path, scratch: Path, files: int) -> float:
    """files/s of one drop of ``files`` × 64 KiB into a new route folder."""
    src, dst = scratch / "src", scratch / "dst"
    src.mkdir(parents=True)
    dst.mkdir()
    config = scratch / "ketter.yaml"
    route_config(config, state, src, dst)
    subprocess.run([*KETTER, "--config", str(config), "db", "upgrade"], check=True)
    db = state / "ketter.db"
    con = ro(db)
    first = int(con.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0])
    blobs = [os.urandom(64 << 10) for _ in range(files)]
    proc = start_run(config, scratch / "run.log")
    try:
        wait(
            "heartbeats",
            lambda: (
                con.execute(
                    "SELECT COUNT(*) FROM heartbeats WHERE component IN ('watcher', 'workers') "
                    "AND ts > ?",
                    (time.time() - 5,),
                ).fetchone()[0]
                >= 2
            ),
            120,
            proc,
        )
        t0 = time.time()
        for i, data in enumerate(blobs):
            (src / f"f{i:06d}.bin").write_bytes(data)

        def done() -> bool:
            n = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE id > ? AND state IN ('completed', 'failed')",
                (first,),
            ).fetchone()[0]
            return bool(n >= files)

        wait("the deliveries", done, 120 + files / 5, proc)
        last = con.execute(
            "SELECT MAX(completed_at), SUM(state = 'completed') FROM jobs WHERE id > ?", (first,)
        ).fetchone()
    finally:
        stop(proc)
        con.close()
    if last[1] != files:
        raise SystemExit(f"only {last[1]} of {files} completed: see {scratch / 'run.log'}")
    return files / (last[0] - t0)


def e2e(work: Path, big_state: Path, files: int, rounds: int) -> dict[str, Any]:
    trash = work / "trash"
    runs: dict[str, list[float]] = {"empty": [], "1M": []}
    say(f"end to end ({files} × 64 KiB, sha256, ketter run -w 2; {load1()}):")
    for rnd in range(rounds):
        for kind in ("empty", "1M"):
            scratch = work / "e2e" / f"{kind}-{rnd}-{time.monotonic_ns()}"
            state = scratch / "state" if kind == "empty" else big_state
            fps = e2e_run(state, scratch, files)
            runs[kind].append(fps)
            say(f"    round {rnd + 1} {kind:5} store: {fps:6.1f} files/s  ({load1()})")
            trash.mkdir(exist_ok=True)
            os.rename(scratch, trash / scratch.name)  # not deleted now (BENCHMARKING.md #3)
    empty, big = statistics.median(runs["empty"]), statistics.median(runs["1M"])
    say(f"    medians: empty {empty:.1f}, 1M {big:.1f} files/s: ratio {big / empty:.2f}")
    return {"runs": runs, "empty": empty, "1M": big, "ratio": big / empty}


# -- 4. steady load -----------------------------------------------------------------


def session_rss(sid: int) -> int:
    """Bytes of RSS of every process of session ``sid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:  # the session id
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


def steady(work: Path, state: Path, seconds: float, rate: float) -> dict[str, Any]:
    scratch = work / "steady" / str(time.monotonic_ns())
    src, dst = scratch / "src", scratch / "dst"
    src.mkdir(parents=True)
    dst.mkdir()
    config = scratch / "ketter.yaml"
    route_config(config, state, src, dst)
    db = state / "ketter.db"
    blob = os.urandom(64 << 10)
    proc = start_run(config, scratch / "run.log")
    samples: list[tuple[float, int, int]] = []
    sent = 0
    say(f"steady load ({rate:g} files/s for {seconds:.0f} s on the big store; {load1()}):")
    try:
        con = ro(db)
        wait(
            "heartbeats",
            lambda: (
                con.execute(
                    "SELECT COUNT(*) FROM heartbeats WHERE component = 'workers' AND ts > ?",
                    (time.time() - 5,),
                ).fetchone()[0]
                >= 1
            ),
            120,
            proc,
        )
        con.close()
        t0 = time.monotonic()
        next_sample = t0
        while (now := time.monotonic()) - t0 < seconds:
            while sent < (now - t0) * rate:
                (src / f"s{sent:07d}.bin").write_bytes(blob)
                sent += 1
            for done in list(dst.glob("s*.bin"))[:200]:  # keep the destination small
                done.unlink()
            if now >= next_sample:
                wal = db.with_name("ketter.db-wal")
                size = wal.stat().st_size if wal.exists() else 0
                samples.append((now - t0, size, session_rss(proc.pid)))
                next_sample += 5
            time.sleep(0.05)
    finally:
        stop(proc)
    samples = [s for s in samples if s[2] > 1 << 20]  # once the processes are up
    third = max(1, len(samples) // 3)
    first_rss = statistics.median(s[2] for s in samples[:third])
    last_rss = statistics.median(s[2] for s in samples[-third:])
    wal_max = max(s[1] for s in samples)
    say(
        f"    {sent} files; WAL max {wal_max / 2**20:.1f} MiB; RSS first third "
        f"{first_rss / 2**20:.1f} MiB, last third {last_rss / 2**20:.1f} MiB"
    )
    shutil.rmtree(scratch / "src", ignore_errors=True)
    return {
        "seconds": seconds,
        "rate": rate,
        "sent": sent,
        "samples": samples,
        "wal_max": wal_max,
        "rss_first": first_rss,
        "rss_last": last_rss,
    }


# -- the summary ------------------------------------------------------------------


def summary(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, float, bool]] = []
    cli = results.get("cli")
    if cli:
        for name, c in cli["commands"].items():
            rows.append(
                (
                    f"ketter {name} ≤ {GOAL_SECONDS:g} s",
                    # The interpreter's start-up (`ketter --version`) is in the wall time.
                    f"{c['wall']:.2f} s (start-up {cli['version']:.2f})",
                    c["wall"] / GOAL_SECONDS,
                    c["wall"] <= GOAL_SECONDS,
                )
            )
    e = results.get("e2e")
    if e:
        rows.append(
            (
                f"files/s, 1M store ≥ {GOAL_RATIO:g} × empty",
                f"{e['1M']:.0f} / {e['empty']:.0f}",
                e["ratio"],
                e["ratio"] >= GOAL_RATIO,
            )
        )
    s = results.get("steady")
    if s:
        rows.append(
            (
                "WAL ≤ 64 MiB under steady load",
                f"{s['wal_max'] / 2**20:.1f} MiB",
                s["wal_max"] / WAL_LIMIT,
                s["wal_max"] <= WAL_LIMIT,
            )
        )
        growth = s["rss_last"] / s["rss_first"]
        rows.append(
            (
                f"RSS flat (last third ≤ {1 + RSS_GROWTH:g} × first)",
                f"{s['rss_last'] / 2**20:.0f} MiB",
                growth,
                growth <= 1 + RSS_GROWTH,
            )
        )
    lines = ["", "P6 goals (ratio: ≤ 1 meets a time goal, ≥ 0.9 the files/s one):"]
    for what, value, ratio, ok in rows:
        lines.append(f"  {'✔' if ok else '✘'} {what:44} {value:>26}  ratio {ratio:5.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=str(ROOT / "var" / "bench-history"))
    parser.add_argument("--reuse", action="store_true", help="take the store as it is")
    parser.add_argument("--only", default="cli,e2e,steady")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steady", type=float, default=180.0, help="seconds")
    parser.add_argument("--rate", type=float, default=100.0, help="files/s under steady load")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    config = api.write_config(work, 18610, 1)
    db = work / "state" / "ketter.db"
    if not (args.reuse and db.exists()):
        db = api.build_store(work, config, args.jobs)
    t0 = time.perf_counter()
    subprocess.run([*KETTER, "--config", str(config), "db", "upgrade"], check=True)
    upgraded = time.perf_counter() - t0
    say(f"store: {db} ({db.stat().st_size / 2**30:.1f} GiB); upgrade {upgraded:.1f} s")
    if only & {"e2e", "steady"}:
        mark_shipped(config)
    results: dict[str, Any] = {}
    if "cli" in only:
        results["cli"] = commands(config, db, args.repeat)
    if "e2e" in only:
        results["e2e"] = e2e(work, db.parent, args.files, args.rounds)
    if "steady" in only:
        results["steady"] = steady(work, db.parent, args.steady, args.rate)
    for line in summary(results):
        say(line)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    say(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
