"""A real job store with real transfers, for the audit trail tests."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.audit.shipper import AuditShipper
from ketter.config import Config, load_config
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store.sqlite import SqliteJobStore, open_job_store


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    root: Path
    config: Config
    clock: Clock
    runner: JobRunner
    store: SqliteJobStore

    @property
    def config_path(self) -> str:
        return str(self.root / "ketter.yaml")

    @property
    def log(self) -> Path:
        return self.root / "state" / "logs" / "audit.jsonl"

    def transfer(self, name: str, data: bytes = b"x" * 1000, route: str = "r") -> int:
        path = self.root / f"{route}_in" / name
        path.write_bytes(data)
        (result,) = submit_path(self.store, self.config, self.config.route(route),
                                os.fsencode(path), now=self.clock.now)
        self.runner.handle(result.job_id)
        return result.job_id

    def shipper(self, **kw: object) -> AuditShipper:
        return AuditShipper(self.config, store=self.store, clock=self.clock,
                            **kw)  # type: ignore[arg-type]

    def ship(self) -> int:
        shipper = self.shipper()
        try:
            return shipper.drain()
        finally:
            shipper.close()


def make_env(tmp_path: Path, audit: str = "{}", key: bytes | None = None) -> Env:
    """A node with one route ``r``; ``key``: the chain is keyed."""
    for name in ("r_in", "r_out"):
        (tmp_path / name).mkdir(exist_ok=True)
    text = f"""
state_dir: {tmp_path}/state
node: test-node
audit: {audit}
routes:
  - {{name: r, source: r_in, destination: r_out}}
"""
    path = tmp_path / "ketter.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(str(path))
    store = open_job_store(config.db_path, AuditChain(node=config.node, key=key))
    clock = Clock(time.time())
    runner = JobRunner(config, store=store, shutdown=Shutdown(),
                       keeper=LeaseKeeper(config, Shutdown(), store=store), clock=clock)
    return Env(tmp_path, config, clock, runner, store)


@pytest.fixture
def env(tmp_path: Path):
    e = make_env(tmp_path)
    yield e
    e.store.close()
