"""``ketter run``: the watcher and the workers in one foreground process
(and the extra workers processes ``worker_processes`` asks for, as ``ketter
workers`` starts them).

For small set-ups and the demo (``make run``). Production runs them as two
systemd units so that a stuck copy never delays detection and each can be
restarted alone. Ctrl-C or SIGTERM stops both cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import TYPE_CHECKING

from ketter.choices import Folders, Mode
from ketter.cli.common import add_config_arg, check_config, config_from
from ketter.node import store_backend
from ketter.store.backend import StoreBackend

if TYPE_CHECKING:
    from ketter.runtime.children import Children


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="watcher and workers in one foreground process (demo, small set-ups)"
    )
    add_config_arg(run)
    run.add_argument(
        "-w", "--workers", type=int, help="worker threads (default: `workers` in the config)"
    )
    run.add_argument(
        "--processes",
        type=int,
        help="workers processes, each with that many threads: this one (which "
        "also watches) and the others (default: `worker_processes` in the config)",
    )
    run.add_argument(
        "--create-folders",
        action="store_true",
        help="create missing route folders that have no source_mount/destination_mount "
        "(a first try); without it, a missing folder stops the start like `config check`",
    )
    run.set_defaults(func=run_both)


def _store_where(backend: StoreBackend) -> str:
    return _rel(backend.where) if backend.name == "sqlite" else backend.where


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def explain(config: object) -> str:
    """What the node does, in words, for the person who started it."""
    from ketter.config import Config

    assert isinstance(config, Config)
    backend = store_backend(config)
    lines = [
        f"Ketter is running: {len(config.routes)} route(s), job store "
        f"{_store_where(backend)}, audit log {_rel(config.audit.log_file)}.",
        "",
    ]
    for r in config.routes:
        what = "folders travel whole" if r.folders == Folders.AS_UNIT else "each file on its own"
        verb = (
            "copied (the source stays)"
            if r.mode == Mode.COPY
            else "moved (the source is deleted once the copy is verified)"
        )
        lines.append(f"  {r.name}: drop files into {_rel(r.source)}/")
        lines.append(
            f"      → {verb} to {_rel(r.destination)}/, {what}, "
            f"verified by {r.verify}, ready after {r.stable_seconds:g}s unchanged"
        )
    lines += [
        "",
        f"Watch it: ketter --config {_rel(config.path)} jobs",
        f"      or: {backend.history_command(_store_where(backend))}",
        "Stop with Ctrl-C (running copies checkpoint and resume next time).",
        "",
    ]
    return "\n".join(lines)


def _extra_workers(config: object, args: argparse.Namespace) -> Children | None:
    """The other workers processes ``ketter run`` starts beside itself
    (``--processes``, else ``worker_processes``), as ``ketter workers`` does:
    :mod:`ketter.runtime.children`."""
    from ketter.config import Config
    from ketter.runtime.children import Children

    assert isinstance(config, Config)
    count = args.processes or config.worker_processes
    if count <= 1:
        return None
    workers = ["--workers", str(args.workers)] if args.workers else []
    return Children(config, [["workers", "--processes", "1", *workers]] * (count - 1))


def run_both(args: argparse.Namespace) -> int:
    from ketter.audit.shipper import AuditShipper
    from ketter.errors import StoreLost
    from ketter.node import Node
    from ketter.runtime.logs import setup_logging
    from ketter.runtime.signals import Shutdown
    from ketter.store.guard import is_unwritable_error
    from ketter.watcher import Watcher
    from ketter.workers.consumer import WorkersProcess

    shutdown = Shutdown().install()
    setup_logging()
    config = config_from(args)
    for name in ("workers", "processes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"ketter: --{name} must be at least 1", file=sys.stderr)
            return 2
    if args.create_folders:  # asked for: a typo'd or unmounted root is never created silently
        for route in config.routes:
            if route.source_mount is None:
                os.makedirs(route.source, exist_ok=True)
            if route.destination_mount is None:
                os.makedirs(route.destination, exist_ok=True)
    # What `config check` rejects, `run` does not start on (it used to create
    # a typo'd source, or a share's unmounted mount point, on the local disk).
    errors, _ = check_config(config)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print(
            f"ketter: {config.path}: {len(errors)} error(s) (see `ketter config check`); "
            "not starting. --create-folders creates missing route folders that have "
            "no *_mount (a first try, the demo)",
            file=sys.stderr,
        )
        return 2
    # Never silently a new, empty store where the node has run before.
    node = Node.from_config(config, "run", evidence=[config.audit.log_file])
    # The extra workers processes (`worker_processes`) once the store is
    # there, before this process starts any thread.
    children = _extra_workers(config, args)
    sys.stdout.write(explain(config) + "\n")
    sys.stdout.flush()
    assert node.store is not None
    if children is not None:
        children.start()
    thread: threading.Thread | None = None
    code = 1
    try:  # from here on, whatever fails, the children are asked to stop and waited for
        if children is not None:
            children.watch(shutdown)
        notifier = node.notifier
        watcher = Watcher(config, store=node.store, queue=node.queue, notifier=notifier)
        with shutdown.spawn_threads_without_signals():
            thread = threading.Thread(target=watcher.run, args=(shutdown.event,), name="watcher")
            thread.start()
        code = WorkersProcess(
            config,
            workers=args.workers,
            shutdown=shutdown,
            notifier=notifier,
            node=node,
            on_reload=children.reload if children is not None else None,
        ).run(install_signals=False)
    finally:
        shutdown.request()
        if thread is not None:
            thread.join(config.shutdown_timeout)
        if children is not None:
            children.stop(config.shutdown_timeout + 30)
            if children.failed:
                code = 1
        # The watcher's last events came after the workers' shipper stopped.
        shipper = AuditShipper(config, store=node.store)
        try:
            shipper.drain()
        except Exception as exc:
            # A state disk that cannot be written (or a lost store) at stop:
            # the events wait in the store for the next start, no traceback.
            if not is_unwritable_error(exc, store_only=True) and not isinstance(exc, StoreLost):
                raise
            print(f"ketter: audit log not brought up to date at stop: {exc}", file=sys.stderr)
        finally:
            shipper.close()
        node.close()  # the notifier, the queue, then the store
    print("Ketter stopped.")
    return code
