"""``ketter transfer SRC DST``: one synchronous, verified transfer, like ``cp``.

The transfer is :func:`ketter.jobs.oneshot.run_oneshot` (the same job
pipeline as the workers, on a one-off route, so its result is in ``ketter
jobs`` like any other); this command parses the arguments, builds the node
and prints the result (text, or ``--json``).
It needs only a ``state_dir``: ``--config`` (or $KETTER_CONFIG, or
/etc/ketter/ketter.yaml), or ``--state-dir DIR`` without a config file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from ketter.choices import Mode, values
from ketter.cli.common import add_config_arg
from ketter.config import Config, find_config_path, load_config, parse_config
from ketter.jobs.oneshot import (
    ROUTE,
    OneshotOptions,
    Progress,
    final_path,
    oneshot_config,
    oneshot_route,
    run_oneshot,
)

# tests/unit/test_side_by_side.py reads the scheduler and the outcome here.
from ketter.jobs.oneshot import JobOutcome as _Outcome  # noqa: F401
from ketter.jobs.oneshot import side_by_side as _side_by_side  # noqa: F401
from ketter.paths import readable
from ketter.runtime.signals import Shutdown

__all__ = ["ROUTE", "register", "run_transfer"]


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("transfer", help="copy or move one file or folder now, verified")
    add_config_arg(p)
    p.add_argument("src", metavar="SRC", help="the file or folder to transfer")
    p.add_argument(
        "dst",
        metavar="DST",
        help="an existing folder (SRC keeps its name inside it) or the new path itself",
    )
    p.add_argument(
        "--mode",
        choices=values(Mode),
        default="copy",
        help="move deletes SRC once the copy is verified (default copy)",
    )
    p.add_argument(
        "--verify",
        choices=("sha256", "xxh128"),
        default="sha256",
        help="the checksum the read-back is compared with (default sha256)",
    )
    p.add_argument(
        "--conflict",
        choices=("fail", "skip_identical", "rename", "overwrite"),
        default="fail",
        help="when the destination exists (default fail; see docs/configuration.md)",
    )
    p.add_argument(
        "--folders",
        choices=("per_file", "as_unit"),
        default="as_unit",
        help="a folder travels whole (as_unit, the default) or file by file",
    )
    p.add_argument(
        "--package-min-files",
        type=int,
        default=0,
        help="as_unit folders with at least this many files travel as one stored ZIP "
        "(default 0: never)",
    )
    p.add_argument("--state-dir", help="job store folder when there is no config file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_transfer)


def _config(args: argparse.Namespace) -> Config:
    if args.state_dir:
        return parse_config(
            f"state_dir: {json.dumps(os.path.abspath(args.state_dir))}\n", base_dir=os.getcwd()
        )
    return load_config(find_config_path(getattr(args, "config", None)))


class _ProgressLine:
    """A live progress line on a terminal: bytes, MB/s, ETA, phase (of the
    whole transfer: a per_file folder's jobs add up, see
    :class:`ketter.jobs.oneshot.Progress`)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        with self._lock:
            now = time.monotonic()
            if not self.enabled or now - self.last < 0.2:
                return
            self.last = now
        rate = p.done / max(p.seconds, 1e-6)
        eta = (p.total - p.done) / rate if rate > 0 and p.phase == "copy" else 0
        sys.stdout.write(
            f"\r{p.phase:>7}  {p.done / 1e6:10.1f} / {p.total / 1e6:.1f} MB"
            f"  {rate / 1e6:7.1f} MB/s  ETA {eta:5.0f}s "
        )
        sys.stdout.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stdout.write("\r" + " " * 72 + "\r")


def run_transfer(args: argparse.Namespace) -> int:
    from ketter.node import Node

    # The result is printed; operational log lines would only repeat it.
    logging.disable(logging.ERROR)
    src = os.fsencode(os.path.abspath(args.src)).rstrip(b"/")
    dst = os.fsencode(os.path.abspath(args.dst)).rstrip(b"/")
    if not os.path.lexists(src):
        print(f"ketter: {readable(src)}: no such file or folder", file=sys.stderr)
        return 1
    options = OneshotOptions(
        mode=args.mode,
        verify=args.verify,
        conflict=args.conflict,
        folders=args.folders,
        package_min_files=args.package_min_files,
    )
    route = oneshot_route(src, final_path(src, dst), options)
    # The key before anything is written: on a keyed node, events recorded
    # without it are shipped and then flagged "altered" by `audit verify`
    # (review of #14 finding 18). A key this user cannot read refuses the
    # transfer (exit 2) instead of writing an unkeyed chain.
    node = Node.from_config(oneshot_config(_config(args), route), "transfer")
    line = _ProgressLine(enabled=sys.stdout.isatty() and not args.json)
    result = run_oneshot(node, src, dst, options, progress=line, shutdown=Shutdown().install())
    line.done()
    if result.unshipped is not None:
        print(
            f"ketter: the audit events are in the job store but not in the audit log "
            f"({result.unshipped}); `ketter audit ship` or the workers ship them",
            file=sys.stderr,
        )
    return _report(
        result.jobs,
        result.seconds,
        args.json,
        not_started=result.not_started,
        store=result.store,
    )


def _delivered_text(row: dict[str, Any], store: str | None) -> str:
    """One delivery for people. A folder has no checksum of its own (each
    file has its own, in the job's manifest): printing its ``sha256`` gave
    ``sha256 None`` (issue #14 finding 19)."""
    if row["kind"] == "folder":
        where = f" in {store}" if store else ""
        return (
            f"{row['destination']}\n  folder: {row['files']} file(s), {row['bytes']} bytes, "
            "each file's checksums verified\n"
            f"  manifest: `ketter job {row['job_id']}` lists each file with its sha256 "
            f"(job store{where})"
        )
    return (
        f"{row['destination']}\n  sha256 {row['sha256']}\n  xxh128 {row['xxh128']}"
        f"  xxh64 {row['xxh64']}\n  {row['bytes']} bytes, {row['files']} file(s)"
    )


def _report(
    jobs: list[Any],
    seconds: float,
    as_json: bool,
    *,
    not_started: int = 0,
    store: str | None = None,
) -> int:
    """Print the outcome; 1 unless every job completed and none was left
    out (a failure or a stop ends a per_file folder before its last file)."""
    ok = all(j.state == "completed" for j in jobs) and not not_started
    size = sum(j.size for j in jobs)
    rows = [
        {
            "job_id": j.id,
            "state": j.state,
            "source": j.source_display,
            "destination": j.dest_display,
            "bytes": j.size,
            "files": j.file_count,
            "sha256": j.sha256,
            "xxh128": j.xxh128,
            "xxh64": j.xxh64,
            "error": j.error,
            "kind": getattr(j, "kind", "file"),
        }
        for j in jobs
    ]
    summary = {
        "ok": ok,
        "not_started": not_started,
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds / 1e6, 1) if seconds > 0 else None,
        "jobs": rows,
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        for row in rows:
            if row["state"] == "completed":
                print(_delivered_text(row, store))
        print(
            f"{size} bytes in {seconds:.2f} s ({summary['mb_per_s']} MB/s)"
            if ok
            else "transfer failed"
        )
    if not ok:
        failed = next((j for j in jobs if j.state != "completed"), None)
        if failed is not None:
            print(f"ketter: job {failed.id} {failed.state}: {failed.error}", file=sys.stderr)
        if not_started:
            why = "after a failure" if failed is not None else "interrupted"
            print(f"ketter: {not_started} file(s) not started ({why})", file=sys.stderr)
        return 1
    return 0
