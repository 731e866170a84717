"""``ketter api``: the HTTP control plane (one systemd unit, ``ketter-api``).

Loads the config, builds the node (role ``api``: it appends audit events,
so on a keyed node it holds the key), and serves :mod:`ketter.api` on
``api.listen`` (and ``/metrics`` alone on ``api.metrics_listen``) until
SIGTERM/SIGINT, then exits 0 after the open requests finished. Exit 2 on an
invalid config (no ``api.listen``, plaintext on the network, a certificate
that cannot be read), 1 when it cannot listen.
"""

from __future__ import annotations

import argparse

from ketter.cli.common import add_config_arg, config_from


def register(commands: argparse._SubParsersAction) -> None:
    api = commands.add_parser("api", help="serve the HTTP API on api.listen (service; docs/api.md)")
    add_config_arg(api)
    # Internal: an extra process of a `ketter api` (api.processes), started
    # by the main one with its listening socket (ketter.api.server).
    api.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    api.set_defaults(func=run_api)


def run_api(args: argparse.Namespace) -> int:
    # Imported here: `ketter --help` must not pay for FastAPI and uvicorn.
    from ketter.api.server import (
        bind_all,
        require_listen,
        serve,
        serve_extra,
        start_extra_processes,
        tls_context,
    )
    from ketter.node import Node
    from ketter.runtime.logs import setup_logging
    from ketter.runtime.signals import Shutdown

    # First: a SIGTERM during start-up must be graceful too.
    shutdown = Shutdown().install()
    setup_logging()
    config = config_from(args)
    # Config errors before anything is opened (exit 2, no restart loop).
    require_listen(config)
    context = tls_context(config)
    if args.listen_fd is not None:
        node = Node.from_config(config, "api", evidence=[config.audit.log_file])
        try:
            serve_extra(node, shutdown, context, args.listen_fd)
        finally:
            node.close()
        return 0
    bound = bind_all(config)
    try:
        children = start_extra_processes(config, bound)  # before any thread
    except BaseException:
        bound.close()
        raise
    try:
        # Never silently a new, empty store where the node has run before.
        node = Node.from_config(config, "api", evidence=[config.audit.log_file])
    except BaseException:
        bound.close()
        if children is not None:
            shutdown.request()
            children.watch(shutdown)
            children.stop(30)
        raise
    try:
        serve(node, shutdown, context, bound, children)
    finally:
        node.close()
    return 0
