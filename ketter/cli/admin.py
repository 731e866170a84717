"""``ketter config check`` and ``ketter db upgrade``."""

from __future__ import annotations

import argparse
import json

from ketter.cli.common import add_config_arg, config_from
from ketter.config import check_roots, redacted


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
    up.set_defaults(func=db_upgrade)


def config_check(args: argparse.Namespace) -> int:
    from ketter.watcher.mounts import stable_seconds_warnings

    config = config_from(args)
    errors, warnings = check_roots(config)
    warnings += stable_seconds_warnings(config)
    for warning in warnings:
        print(f"warning: {warning}")
    for error in errors:
        print(f"error: {error}")
    if args.show:
        print(json.dumps(redacted(config), indent=2, ensure_ascii=False))
    if errors:
        print(f"{config.path}: {len(errors)} error(s); fix them before starting Ketter")
        return 2
    print(f"{config.path}: OK ({len(config.routes)} route(s), state_dir {config.state_dir})")
    return 0


def db_upgrade(args: argparse.Namespace) -> int:
    from ketter.store.db import connect, upgrade

    config = config_from(args)
    db = connect(config.db_path)
    applied = upgrade(db)
    db.close()
    if applied:
        print(f"{config.db_path}: applied {', '.join(applied)}")
    else:
        print(f"{config.db_path}: schema is up to date")
    return 0
