"""One route ``r`` (``in`` → ``out`` under a test's folder) on a real SQLite
store, for tests that drive a worker's ``JobRunner`` in process (a step
wrapped with monkeypatch, the real one run inside)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import Config, load_config
from ketter.jobs import batch as batch_mod
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore

NODE = "batch-node"


@dataclass
class Route:
    root: Path
    config: Config
    store: SqliteJobStore

    def submit(self, *names: str, size: int = 10_000) -> list[int]:
        """Files of random bytes under ``in`` (``size`` + their index),
        submitted on the route: their job ids."""
        ids = []
        for i, name in enumerate(names):
            src = self.root / "in" / name
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(os.urandom(size + i))
            route = self.config.route("r")
            (result,) = submit_path(self.store, self.config, route, os.fsencode(src), now=1e9)
            ids.append(result.job_id)
        return ids

    def drop(self, count: int) -> list[int]:
        """``count`` small files ``take_00.wav``…, submitted."""
        return self.submit(*(f"take_{i:02}.wav" for i in range(count)))

    def keeper(self) -> LeaseKeeper:
        return LeaseKeeper(self.config, Shutdown(), store=self.store)

    def runner(self, keeper: LeaseKeeper | None = None, threads: int = 1) -> JobRunner:
        return JobRunner(
            self.config,
            store=self.store,
            shutdown=Shutdown(),
            keeper=keeper or self.keeper(),
            threads=threads,
        )


@contextmanager
def in_process_route(root: Path) -> Iterator[Route]:
    (root / "in").mkdir()
    (root / "out").mkdir()
    cfg = root / "ketter.yaml"
    cfg.write_text(
        f"""
state_dir: {root}/state
node: {NODE}
routes:
  - {{name: r, source: in, destination: out}}
""",
        encoding="utf-8",
    )
    config = load_config(str(cfg))
    db = open_store(config.db_path)
    try:
        yield Route(root, config, SqliteJobStore(db, AuditChain(node=NODE)))
    finally:
        db.close()


def after_each_placement(monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> None:
    """``hook()`` right after each of a batch's real placements."""
    real_place = batch_mod.Batch._place

    def place(self: batch_mod.Batch, m: object, dirs: object, fence: object) -> None:
        real_place(self, m, dirs, fence)  # type: ignore[arg-type]
        hook()

    monkeypatch.setattr(batch_mod.Batch, "_place", place)
