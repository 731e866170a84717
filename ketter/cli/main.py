"""``ketter`` entry point: builds the argument parser from the command modules.

Exit codes: 0 success, 1 a command failed (a transfer failed, the audit
chain is broken, unhealthy), 2 bad usage or an invalid config (systemd's
``RestartPreventExitStatus=2`` stops a restart loop on a bad config).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ketter import __version__
from ketter.cli import (
    admin,
    api,
    audit,
    control,
    deploy,
    health,
    inspect,
    metrics,
    ops,
    run,
    token,
    transfer,
    watch,
)
from ketter.errors import ConfigError, KetterError, NodeNameInUse, StoreMissing

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Try again later (sysexits' EX_TEMPFAIL): the node's name is in use by a
#: live node. Not the config's fault and not for ever (that node's heartbeat
#: goes stale, or a machine that rebooted within lease.ttl stops showing as
#: its old boot): the units' Restart=on-failure tries again, where exit 2
#: would stop them (RestartPreventExitStatus=2).
EXIT_TEMPFAIL = 75

COMMAND_MODULES = (
    admin,
    inspect,
    ops,
    control,
    run,
    transfer,
    watch,
    api,
    audit,
    deploy,
    health,
    metrics,
    token,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ketter",
        description="Verified, audited file transfers between studio network zones.",
    )
    parser.add_argument("--version", action="version", version=f"ketter {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $KETTER_CONFIG, else /etc/ketter/ketter.yaml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StoreMissing as exc:  # not the config's fault; still exit 2
        print(f"ketter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NodeNameInUse as exc:
        print(f"ketter: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except ConfigError as exc:
        print(f"ketter: invalid config:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KetterError, FileNotFoundError, PermissionError) as exc:
        print(f"ketter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ketter jobs | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
