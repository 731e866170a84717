"""``ketter watcher``: the detection service (one systemd unit).

Loads the config, opens the job store, and runs
:class:`ketter.watcher.Watcher` until SIGTERM/SIGINT (exit 0). A second
signal exits at once (see :mod:`ketter.runtime.signals`); nothing is lost
either way: the next start's full scan catches up.
"""

from __future__ import annotations

import argparse

from ketter.cli.common import add_config_arg, config_from


def register(commands: argparse._SubParsersAction) -> None:
    watcher = commands.add_parser(
        "watcher", help="watch the route sources and enqueue finished files (service)"
    )
    add_config_arg(watcher)
    watcher.set_defaults(func=run_watcher)


def run_watcher(args: argparse.Namespace) -> int:
    # Imported here: `ketter --help` must not pay for watchdog and huey.
    from ketter.node import Node
    from ketter.runtime.logs import setup_logging
    from ketter.runtime.signals import Shutdown
    from ketter.watcher import Watcher

    # First: a SIGTERM during start-up must be graceful too.
    shutdown = Shutdown().install()
    setup_logging()
    config = config_from(args)
    # Never silently a new, empty store where the node has run before.
    node = Node.from_config(config, "watcher", evidence=[config.audit.log_file])
    assert node.store is not None
    try:
        Watcher(config, store=node.store, queue=node.queue, notifier=node.notifier).run(
            shutdown.event
        )
    finally:
        node.close()  # the notifier, the queue, then the store
    return 0
