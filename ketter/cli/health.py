"""``ketter health [--json]``: exit 0 when the node is healthy, 1 otherwise.

For monitoring (Nagios/Icinga/Zabbix checks, a systemd timer): read-only, so
an account in the ``ketter`` group can run it. See :mod:`ketter.health`.
"""

from __future__ import annotations

import argparse

from ketter.cli.common import add_config_arg, config_from, print_json


def register(commands: argparse._SubParsersAction) -> None:
    health = commands.add_parser(
        "health",
        help="exit 0 if watcher and workers heartbeat, the databases open, "
        "every route is available and destinations have space",
    )
    add_config_arg(health)
    health.add_argument("--json", action="store_true", help="print JSON instead of text")
    health.set_defaults(func=run_health)


def run_health(args: argparse.Namespace) -> int:
    from ketter.health import check_health

    report = check_health(config_from(args))
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.text())
    return 0 if report.healthy else 1
