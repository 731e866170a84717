"""The job store's cost per job (#19): what each index and trigger on ``jobs``
and ``events`` adds to every transfer. A file's life in the store, ``--jobs``
times on a fresh SQLite store: ``add_job``, ``claim_next``, then five
``advance`` calls (validated, transferring, verifying, a note, completed;
not durable, so that the flush does not hide the rest). Prints ms per job.

Compare two checkouts with their own interpreters, alternating::

    for i in 1 2 3; do ../main/.venv/bin/python -I benchmarks/store_cost.py; \\
        .venv/bin/python -I benchmarks/store_cost.py; done
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ketter.audit.chain import AuditChain
from ketter.store.ports.jobs import JobChange
from ketter.store.sqlite import open_job_store

STEPS = [
    ("detected", "validated", "prepare"),
    ("validated", "transferring", "copy"),
    ("transferring", "verifying", "verify"),
    ("verifying", None, "place"),
    ("verifying", "completed", "complete"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(dir=args.dir))
    store = open_job_store(work / "ketter.db", AuditChain(node="n1"))
    base = {
        "route": "r",
        "mode": "copy",
        "kind": "file",
        "state": "detected",
        "node": "n1",
        "source_size": 10,
        "size": 10,
        "attempt": 0,
        "bytes_done": 0,
        "file_count": 1,
        "priority": 0,
    }
    t0 = time.perf_counter()
    for i in range(args.jobs):
        now = time.time()
        store.add_job(
            {
                **base,
                "source_key": f"k{i}",
                "source_path": f"/src/{i}".encode(),
                "source_display": f"/src/{i}",
                "created_at": now,
                "updated_at": now,
            }
        )
        taken = store.claim_next({"r": 0}, hint=None, owner="w", now=now, ttl=60)
        assert taken is not None
        for state, to, event in STEPS:
            store.advance(taken.row.id, state, [JobChange(to, event)], claim=taken.claim, now=now)
    elapsed = time.perf_counter() - t0
    store.close()
    shutil.rmtree(work)
    print(f"{elapsed / args.jobs * 1000:.3f} ms/job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
