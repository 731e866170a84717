"""``ketter metrics``: print one Prometheus scrape of the job store to stdout.

For operators and for node_exporter's textfile collector (``ketter metrics >
/var/lib/node_exporter/ketter.prom.tmp && mv ...``). Read-only, like
``ketter health``: an account in the ``ketter`` group can run it, no audit
key needed. The metrics are listed in docs/observability.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from ketter.cli.common import add_config_arg, config_from


def register(commands: argparse._SubParsersAction) -> None:
    metrics = commands.add_parser(
        "metrics",
        help="print one Prometheus scrape of the job store (text format) to stdout",
    )
    add_config_arg(metrics)
    metrics.set_defaults(func=run_metrics)


def run_metrics(args: argparse.Namespace) -> int:
    from ketter.metrics.exposition import render_metrics
    from ketter.node import Node

    config = config_from(args)
    # Reads only: a chain that may not append (no key needed).
    node = Node.from_config(config, "read", open_store=False)
    store = node.open_readonly_store()
    try:
        behind = store.missing_columns()
        if behind:
            print(
                f"ketter: the job store {node.backend.where} is older than this Ketter "
                f"(missing {', '.join(behind[:3])}{' …' if len(behind) > 3 else ''}); "
                "run `ketter db upgrade` first",
                file=sys.stderr,
            )
            return 2
        body, _ = render_metrics(store, config, now=time.time())
    finally:
        store.close()
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    return 0
