"""Helpers for the watcher tests: configs on the fly, a running watcher,
polling with a deadline (never a bare sleep that depends on timing luck)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ketter.audit.chain import AuditChain
from ketter.config import Config, parse_config
from ketter.queue import Queue, build_queue
from ketter.store.models import Event, Job
from ketter.store.sqlite import open_job_store
from ketter.watcher import Watcher

T = TypeVar("T")

#: Short timings so that the suite stays fast; readiness logic is the same.
FAST = {"poll_interval": "0.2s", "stable_seconds": "0.6s", "rescan_interval": "1h"}


def route_yaml(name: str, source: Path, destination: Path, **opts: Any) -> str:
    values = {**FAST, **opts}
    lines = [f"  - name: {name}", f"    source: '{source}'", f"    destination: '{destination}'"]
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            lines.append(f"    {key}: [{', '.join(repr(v) for v in value)}]")
        else:
            lines.append(f"    {key}: {value}")
    return "\n".join(lines)


def make_config(tmp_path: Path, routes: dict[str, dict[str, Any]]) -> Config:
    """A config with one route per ``name → options``; sources and
    destinations are created under ``tmp_path`` unless given."""
    parts = []
    for name, opts in routes.items():
        opts = dict(opts)
        source = Path(opts.pop("source", tmp_path / "src" / name))
        dest = Path(opts.pop("destination", tmp_path / "dst" / name))
        if opts.pop("create", True):
            source.mkdir(parents=True, exist_ok=True)
        dest.mkdir(parents=True, exist_ok=True)
        parts.append(route_yaml(name, source, dest, **opts))
    text = (f"state_dir: '{tmp_path / 'state'}'\nnode: test-node\nroutes:\n"
            + "\n".join(parts) + "\n")
    path = tmp_path / "ketter.yaml"
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path=str(path))


class Env:
    """An open job store + queue for one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = open_job_store(config.db_path, AuditChain(node=config.node))
        self.queue: Queue = build_queue(config)

    def source(self, route: str) -> Path:
        return Path(self.config.route(route).source)

    def watcher(self, **kwargs: Any) -> Watcher:
        kwargs.setdefault("heartbeat_interval", 0.5)
        kwargs.setdefault("max_backoff", 1.0)
        return Watcher(self.config, store=self.store, queue=self.queue, **kwargs)

    def jobs(self, route: str | None = None) -> list[Job]:
        query = Job.select().order_by(Job.id)
        if route is not None:
            query = query.where(Job.route == route)
        return list(query)

    def job_paths(self, route: str | None = None) -> list[bytes]:
        return sorted(bytes(j.source_path) for j in self.jobs(route))

    def events(self, name: str, route: str | None = None) -> list[Event]:
        query = Event.select().where(Event.event == name)
        if route is not None:
            query = query.where(Event.route == route)
        return list(query.order_by(Event.id))

    def close(self) -> None:
        self.queue.close()
        self.store.close()


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextlib.contextmanager
def running(watcher: Watcher) -> Iterator[Watcher]:
    """Run ``watcher`` in a thread (as `ketter run` will) until the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            watcher.run(stop)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="watcher", daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive(), "watcher did not stop within 20 s"
        if errors:
            raise errors[0]


def write(path: Path, data: bytes = b"x" * 1024) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def set_mtime(path: Path, seconds_ago: float) -> None:
    ts = time.time() - seconds_ago
    os.utime(path, (ts, ts))
