"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ketter.config import Config, find_config_path, load_config


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config`` after the sub-command too (``ketter jobs --config X``)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $KETTER_CONFIG, else /etc/ketter/ketter.yaml)",
    )


def config_from(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config`` / ``$KETTER_CONFIG`` / the default."""
    return load_config(find_config_path(getattr(args, "config", None)))


def check_config(config: Config) -> tuple[list[str], list[str]]:
    """What ``ketter config check`` reports beyond loading: the route roots
    on this machine, the audit key, readiness settings. Errors and warnings;
    ``ketter run`` refuses to start on any error too."""
    from ketter.config import check_roots
    from ketter.config.api import api_file_problems
    from ketter.config.credentials import check_hmac_key
    from ketter.watcher.mounts import stable_seconds_warnings
    from ketter.watcher.readiness import ready_marker_warnings

    errors, warnings = check_roots(config)
    warnings += stable_seconds_warnings(config)
    warnings += ready_marker_warnings(config)  # network shares (#14 finding 15)
    key_errors, key_warnings = check_hmac_key(
        config.audit.hmac_key_file,
        config_path=config.path,
        line=config.line_of("audit.hmac_key_file"),
    )
    return errors + key_errors + api_file_problems(config), warnings + key_warnings


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain left-aligned text table."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text.replace("\n", "\\n")
