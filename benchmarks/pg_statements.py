"""The statements one file costs on PostgreSQL, by kind (issue #18).

One ``pg/1`` run of ``benchmarks/watcher_pg.py`` (``ketter watcher`` +
``ketter workers -w 2`` on a throw-away cluster, ``--files`` × 64 KiB
dropped into a copy route) with the server logging every statement
(``log_statement = all``); then the statements per delivered file, grouped
by their text with the values masked. Each is a round trip, but for the
ones a pipeline sends together (a batch's transitions: one round trip).
Logging slows the run: its files/s is no figure.

    .venv/bin/python benchmarks/pg_statements.py [--files 500]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import sys
import time

import psycopg
import watcher as w
import watcher_pg as wp

_LOGGED = re.compile(r"\d+ (?:[\d.]+ )?LOG:  (?:statement|execute [^:]*): (.*)")
_VALUES = re.compile(r"\$\d+|'[^']*'|\b\d+\b")
_SAVEPOINT = re.compile(r'(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT) "?\w+"?')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    w.WORK = os.path.join(w.REPO, "var", "pg-statements")
    shutil.rmtree(w.WORK, ignore_errors=True)
    os.makedirs(w.WORK)
    try:
        with wp.cluster(os.path.join(w.WORK, "pg-cluster")) as server:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET log_statement = 'all'")
                conn.execute("ALTER SYSTEM SET log_line_prefix = '%p %n '")
                conn.execute("SELECT pg_reload_conf()")
            time.sleep(1)
            rec = wp.run("pg/1", 1, args.files, 64 << 10, server, 1)
            if not rec["ok"]:
                print(f"the run failed: {rec['error']}", file=sys.stderr)
                return 1
            kinds: collections.Counter[str] = collections.Counter()
            log = os.path.join(w.WORK, "pg-cluster", "server.log")
            with open(log, errors="replace") as lines:
                for line in lines:
                    found = _LOGGED.match(line)
                    if found:
                        text = _SAVEPOINT.sub(r"\1 s", found.group(1).strip())
                        kinds[_VALUES.sub("?", text)[:110]] += 1
    finally:
        if not os.environ.get("KETTER_BENCH_KEEP"):
            shutil.rmtree(w.WORK, ignore_errors=True)
    total = sum(kinds.values())
    print(f"{args.files} files: {total} statements, {total / args.files:.1f} per file")
    for text, count in kinds.most_common(args.top):
        print(f"{count / args.files:6.2f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
