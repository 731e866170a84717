"""``ketter audit verify`` and ``ketter audit ship``.

``verify`` checks the hash chain of the audit log (every file of
``audit.log_file`` unless FILES are named, oldest first) and compares it with
the job store: exit 0 and "N records checked, OK", or exit 1 naming the first
broken, missing, reordered or truncated record. A missing job store, an empty
chain on a node that has run and a chain that ends before the node's
high-water mark are failures too. ``--db`` checks the chain in the job store
alone. See docs/audit.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from ketter.audit.logfile import AuditFiles
from ketter.audit.shipper import AuditShipper, log_path
from ketter.audit.verify import Report, node_marks, verify_db, verify_files
from ketter.cli.common import add_config_arg, config_from, print_json
from ketter.config import Config


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser("audit", help="audit trail: verify the chain, ship the log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True

    verify = sub.add_parser("verify", help="check the audit chain (exit 1 on any break)")
    add_config_arg(verify)
    verify.add_argument(
        "files",
        nargs="*",
        metavar="FILES",
        help="log files, oldest first (default: every file of "
        "audit.log_file, rotated ones included)",
    )
    verify.add_argument("--db", action="store_true", help="check the chain in the job store alone")
    verify.add_argument(
        "--no-db",
        action="store_true",
        help="check the files alone (a copy from the SIEM, no job store)",
    )
    verify.add_argument(
        "--key-file",
        metavar="PATH",
        help="HMAC key of a keyed chain (default: audit.hmac_key_file)",
    )
    verify.add_argument(
        "--lag",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="records younger than this may be missing from the log "
        "(not shipped yet); older ones are a break (default 300)",
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=run_verify)

    ship = sub.add_parser(
        "ship", help="ship pending events to the audit log now (the workers do it continuously)"
    )
    add_config_arg(ship)
    ship.add_argument(
        "--follow",
        action="store_true",
        help="keep shipping until SIGTERM, then ship what is left (how `ketter workers` "
        "runs it, beside its workers)",
    )
    # Internal: the workers process that started this one (it dies with it).
    ship.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    ship.set_defaults(func=run_ship)


def read_key(path: str | None) -> bytes | None:
    """The HMAC key (stripped), or None when the chain is not keyed."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read().strip() or None
    except OSError as exc:
        raise SystemExit(
            f"ketter: cannot read the audit HMAC key {path}: {exc.strerror}; "
            "run as a user that may read it, or pass --key-file"
        ) from exc


def run_verify(args: argparse.Namespace) -> int:
    config = config_from(args)
    key = read_key(args.key_file or config.audit.hmac_key_file)
    report = Report()
    store = None
    if not args.no_db:
        from ketter.node import Node

        # Reads only: a chain that may not append (no key needed).
        node = Node.from_config(config, "read", open_store=False)
        where = node.backend.where
        if node.backend.exists():
            store = node.open_readonly_store()
            behind = store.missing_columns()
            if behind:
                print(
                    f"ketter: the job store {where} is older than this Ketter "
                    f"(missing {', '.join(behind[:3])}{' …' if len(behind) > 3 else ''}); "
                    "run `ketter db upgrade` first",
                    file=sys.stderr,
                )
                return 2
        else:
            # The source of truth is gone: the log alone cannot say whether
            # its newest lines were cut, so this is never OK.
            report.problem(
                f"the job store {where} does not exist: deleted or moved? "
                "(its events are the chain's source of truth; `--no-db FILES` checks "
                "a log copy alone)"
            )
    if args.db:
        if store is None:
            return _print(report, args.json)
        marks = node_marks(store, config.state_dir, report)
        verify_db(store, key=key, marks=marks, report=report)
        return _print(report, args.json)
    # The node's own log: its high-water marks apply. Named FILES (a copy, a
    # subset) are checked as they are.
    marks = [] if args.files else node_marks(store, config.state_dir, report)
    files = list(args.files) or AuditFiles(log_path(config)).all_files()
    if not files and store is None and not args.no_db:
        print(f"ketter: no audit log at {log_path(config)}", file=sys.stderr)
    # Several nodes share one chain in PostgreSQL and each node's log holds
    # only its own events (docs/audit.md, "Several nodes"): the whole chain
    # is checked in the database, then this node's log against it.
    own = config.node if config.store.backend == "postgresql" else None
    if own is not None and store is not None:
        verify_db(store, key=key, marks=marks, report=report)
        report.notes.append(f"the job store's chain: {report.checked} records checked")
        report.checked = 0
    verify_files(
        files,
        key=key,
        store=store,
        lag=args.lag,
        now=time.time(),
        marks=marks,
        report=report,
        node=own,
    )
    return _print(report, args.json)


def _print(report: Report, as_json: bool) -> int:
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "problems": report.problems,
                "notes": report.notes,
            }
        )
        return 0 if report.ok else 1
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"{report.checked} records checked, OK")
        return 0
    print(f"BROKEN: {report.problems[0]}")
    for problem in report.problems[1:]:
        print(f"  also: {problem}")
    print(f"{report.checked} records checked, {len(report.problems)} problem(s)")
    return 1


def run_ship(args: argparse.Namespace) -> int:
    if args.parent is not None:
        from ketter.runtime.children import die_with

        die_with(args.parent)  # first: a kill -9 of the workers leaves no shipper
    config: Config = config_from(args)
    from ketter.node import Node

    if args.follow:
        return _follow(config, args.parent)

    # The key first: the shipper records rotations and reopenings (exit 2
    # with the config line for an account that cannot read it).
    node = Node.from_config(config, "ship")
    assert node.store is not None
    shipper = AuditShipper(config, store=node.store)
    try:
        shipped = shipper.drain()
    finally:
        shipper.close()
        node.close()
    print(f"{shipped} records shipped to {log_path(config)}")
    return 0


def _follow(config: Config, parent: int | None) -> int:
    """Ship continuously until SIGTERM or SIGINT, then ship what is left
    (:mod:`ketter.audit.ship_process`)."""
    from ketter.node import Node
    from ketter.runtime.logs import setup_logging
    from ketter.runtime.signals import Shutdown

    shutdown = Shutdown().install()
    setup_logging()
    node = Node.from_config(config, "ship")
    assert node.store is not None
    shipper = AuditShipper(config, store=node.store)
    if parent is not None:
        shipper.workers_pid = parent  # `ketter health` ties its beat to the workers
    try:
        # Started with the stop signals blocked (ShipperProcess): the end of
        # this block unblocks them, and a stop that came meanwhile is acted on.
        with Shutdown.spawn_threads_without_signals():
            shipper.start()
        shutdown.wait()
        # The last pass must not be cut short by a second signal: the
        # workers bound it with their own timeout and SIGKILL.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        shipper.stop()  # its last pass ships everything committed before
        node.close()
    return 0
