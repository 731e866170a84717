"""``ketter deploy units``: render the systemd units from the config."""

from __future__ import annotations

import argparse
import sys

from ketter.cli.common import add_config_arg, config_from


def register(commands: argparse._SubParsersAction) -> None:
    from ketter.deploy.units import DEFAULT_PYTHON, DEFAULT_USER

    deploy = commands.add_parser("deploy", help="deployment helpers (systemd units)")
    sub = deploy.add_subparsers(dest="deploy_command", metavar="ACTION")
    sub.required = True
    units = sub.add_parser(
        "units",
        help="render ketter-workers.service, ketter-watcher.service and "
        "ketter.target from the config (sandbox paths = the routes)",
    )
    add_config_arg(units)
    units.add_argument(
        "--out",
        metavar="DIR",
        help="write the units into DIR (e.g. /etc/systemd/system); default: print them",
    )
    units.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        metavar="PATH",
        help=f"the venv's interpreter in ExecStart (default {DEFAULT_PYTHON})",
    )
    units.add_argument(
        "--config-path",
        metavar="PATH",
        help="config path written into the units (default: the --config "
        "file); for rendering a staged copy",
    )
    units.add_argument(
        "--user", default=DEFAULT_USER, help=f"service account and group (default {DEFAULT_USER})"
    )
    units.set_defaults(func=deploy_units)


def deploy_units(args: argparse.Namespace) -> int:
    from ketter.deploy.units import render_units, warnings, write_units

    config = config_from(args)
    units = render_units(config, python=args.python, config_path=args.config_path, user=args.user)
    for warning in warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if args.out:
        for path in write_units(units, args.out):
            print(f"wrote {path}")
        print("next: systemctl daemon-reload && systemctl restart ketter.target")
        return 0
    for name, text in units.items():
        print(f"# ===== {name} =====")
        sys.stdout.write(text)
        print()
    return 0
