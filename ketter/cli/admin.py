"""``ketter config check`` and ``ketter db upgrade``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ketter.cli.common import add_config_arg, check_config, config_from
from ketter.config import Config, redacted


def register(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="check the config file")
    config_cmds = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_cmds.required = True
    check = config_cmds.add_parser(
        "check", help="validate the config and the route roots on this machine"
    )
    add_config_arg(check)
    check.add_argument(
        "--show", action="store_true", help="print the resolved config (secrets redacted) as JSON"
    )
    check.set_defaults(func=config_check)

    db = commands.add_parser("db", help="job store maintenance")
    db_cmds = db.add_subparsers(dest="db_command", metavar="ACTION")
    db_cmds.required = True
    up = db_cmds.add_parser("upgrade", help="create the job store or apply pending migrations")
    add_config_arg(up)
    up.add_argument(
        "--new-store",
        action="store_true",
        help="create an empty job store although this node has run before "
        "(its store was lost): history, jobs and the audit chain start over",
    )
    up.set_defaults(func=db_upgrade)
    status = db_cmds.add_parser(
        "status", help="where the job store is and the migrations not applied yet (exit 1 if any)"
    )
    add_config_arg(status)
    status.set_defaults(func=db_status)
    copy = db_cmds.add_parser(
        "copy",
        help="copy this node's SQLite job store into an empty PostgreSQL database "
        "(moving the node to store.backend: postgresql)",
        description="Copies every table of the SQLite job store (jobs, events and "
        "their chain, manifests, route status, heartbeats, counters, API tokens, "
        "migrations) into an EMPTY PostgreSQL database, migrated to the same schema, "
        "in one transaction; refuses a database that is not empty and a node whose "
        "workers or watcher run. The queue's pending messages are not copied: the "
        "sweep re-rings every waiting job. Then set store.backend: postgresql and "
        "store.dsn in the config and run `ketter audit verify`. See docs/operations.md.",
    )
    add_config_arg(copy)
    copy.add_argument(
        "--to", required=True, metavar="DSN", help="the empty database: postgresql://user@host/db"
    )
    copy.add_argument(
        "--password-file", metavar="PATH", help="a file whose first line is the password"
    )
    copy.add_argument(
        "--force",
        action="store_true",
        help="copy although the node's workers or watcher heartbeat is fresh",
    )
    copy.set_defaults(func=db_copy)


def config_check(args: argparse.Namespace) -> int:
    config = config_from(args)
    errors, warnings = check_config(config)
    # Diagnostics go to stderr, so `config check --show` prints JSON alone
    # on stdout (a warning mixed in broke `config check --show | jq`).
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if args.show:
        print(json.dumps(redacted(config), indent=2, ensure_ascii=False))
    summary = sys.stderr if args.show else sys.stdout
    if errors:
        print(
            f"{config.path}: {len(errors)} error(s); fix them before starting Ketter",
            file=sys.stderr,
        )
        return 2
    for line in _placement_lines(config):
        print(line, file=summary if not line.startswith("warning") else sys.stderr)
    print(
        f"{config.path}: OK ({len(config.routes)} route(s), state_dir {config.state_dir})",
        file=summary,
    )
    return 0


#: How each placement primitive refuses an existing name (#15 §1).
_PLACEMENT_SAYS = {
    "renameat2": "atomic (renameat2 NOREPLACE)",
    "link": "atomic (hard link, then unlink)",
    "rename": "check-then-rename: no atomic refusal of an existing name on this "
    "filesystem; Ketter's own processes take a lock file per name, another program "
    "writing the same name at the same instant can be replaced",
}


def _placement_lines(config: Config) -> list[str]:
    """The placement mode of each route's destination (probed there with
    two empty files created and removed; "unknown" when that is refused)."""
    from ketter.engine.placement import placement_mode

    lines = []
    for route in config.routes:
        is_dir = route.folders == "as_unit"
        try:
            mode = placement_mode(os.fsencode(route.destination), is_dir)
        except OSError as exc:
            lines.append(f"route {route.name}: placement unknown ({exc.strerror})")
            continue
        says = _PLACEMENT_SAYS.get(mode, mode)
        prefix = "warning: " if mode == "rename" else ""
        lines.append(f"{prefix}route {route.name}: placement {mode}, {says}")
    return lines


def db_upgrade(args: argparse.Namespace) -> int:
    from ketter.node import Node

    config = config_from(args)
    backend = Node.from_config(config, "db-upgrade", open_store=False).backend
    where = backend.where
    existed = backend.exists()
    # Checked before anything is written (the old log still in place).
    set_aside = _start_a_new_chain(config) if args.new_store and not existed else None
    # Never silently a new, empty store where the node has run before.
    applied = backend.upgrade(new_store=args.new_store, evidence=[config.audit.log_file])
    if not existed and args.new_store:
        print(f"{where}: new, empty job store created on purpose (--new-store)")
        if set_aside:
            print(f"the old chain's high-water mark is kept as {set_aside}")
    if applied:
        print(f"{where}: applied {', '.join(applied)}")
    else:
        print(f"{where}: schema is up to date")
    return 0


def db_status(args: argparse.Namespace) -> int:
    from ketter.node import Node

    config = config_from(args)
    backend = Node.from_config(config, "read", open_store=False).backend
    print(f"{backend.name} job store {backend.where}")
    if not backend.exists():
        print("no job store there yet: `ketter db upgrade` creates it")
        return 1
    pending = backend.pending()
    if pending:
        print(f"pending migrations: {', '.join(pending)}; run `ketter db upgrade`")
        return 1
    print("schema is up to date")
    return 0


def _start_a_new_chain(config: Config) -> str | None:
    """A new store starts a new audit chain at 1: refuse while the old log is
    still where the new one goes (verify would read both as one broken
    chain), and set the old high-water mark aside (kept; left in place it
    made ``audit verify`` fail on the new chain for good). Returns where
    the mark went."""
    import time

    from ketter.audit.highwater import set_aside
    from ketter.audit.logfile import AuditFiles
    from ketter.errors import ConfigError

    old = [
        path
        for path in AuditFiles(config.audit.log_file).all_files()
        if os.path.isfile(path) and os.path.getsize(path)
    ]
    if old:
        folder = os.path.dirname(os.path.abspath(config.audit.log_file))
        raise ConfigError(
            f"the old audit log is still in place ({', '.join(old)}); a new store "
            "starts a new chain at 1, so archive the old log files first, e.g. "
            f"`mv {folder} {folder}.before-new-store-$(date +%Y%m%d)` (keep them: "
            "they are the record of what this node did), then run "
            "`ketter db upgrade --new-store` again"
        )
    return set_aside(config.state_dir, time.time())


def db_copy(args: argparse.Namespace) -> int:
    from ketter.config.store import parse_dsn, read_password
    from ketter.node import Node
    from ketter.store.copy import CopyRefused, copy_store

    config = config_from(args)
    if config.store.backend != "sqlite":
        print(
            f"ketter: db copy: {config.path}: the job store is already on "
            f"{config.store.backend}; db copy moves a SQLite store (store.backend: sqlite)",
            file=sys.stderr,
        )
        return 2
    try:
        parse_dsn(args.to)
        password = read_password(args.password_file)
    except (ValueError, OSError) as exc:
        print(f"ketter: db copy: --to/--password-file: {exc}", file=sys.stderr)
        return 2
    backend = Node.from_config(config, "read", open_store=False).backend
    if not backend.exists():
        print(f"ketter: db copy: no SQLite job store at {backend.where}", file=sys.stderr)
        return 2
    try:
        report = copy_store(
            backend.where,
            args.to,
            password=password,
            force=args.force,
            stale=config.health.heartbeat_stale,
            say=print,
        )
    except CopyRefused as exc:
        print(f"ketter: db copy: {exc}", file=sys.stderr)
        return 2
    total = sum(report.tables.values())
    print(
        f"copied {total} row(s) of {len(report.tables)} table(s) into {report.where}; "
        f"{report.events} events, chain digest {report.chain_digest}"
    )
    print(
        "next: set store.backend: postgresql and store.dsn (and store.password_file) in "
        f"{config.path}, then run `ketter audit verify` and start the services"
    )
    return 0
