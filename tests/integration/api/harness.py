"""A node for the API tests: a config with three routes in a temporary
folder, its job store, the app in-process (Starlette's test client) and
tokens made through the same functions as ``ketter token create``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ketter.access.tokens import create_token, revoke_token
from ketter.api.app import build_app
from ketter.config import load_config
from ketter.node import Node
from ketter.store.sqlite.schema import upgrade_schema

CONFIG = """\
node: api-test
state_dir: state
lease: {ttl: 5s, heartbeat: 1s, sweep_interval: 1s}
routes:
  - {name: dub-fr, source: in/dub-fr, destination: out/dub-fr, stable_seconds: 0.5,
     poll_interval: 0.2s}
  - {name: dub-de, source: in/dub-de, destination: out/dub-de, stable_seconds: 0.5,
     poll_interval: 0.2s}
  - {name: qc, source: in/qc, destination: out/qc, mode: move, stable_seconds: 0.5,
     poll_interval: 0.2s, folders: as_unit}
"""

ALL_SCOPES = (
    "transfers:read",
    "transfers:write",
    "transfers:requeue",
    "transfers:cancel",
    "routes:pause",
    "audit:read",
    "metrics:read",
)


@dataclass
class ApiNode:
    root: Path
    node: Node
    client: TestClient
    app: FastAPI
    _made: int = field(default=0)

    @property
    def config(self) -> Any:
        return self.node.config

    @property
    def store(self) -> Any:
        return self.node.store

    def source(self, route: str) -> Path:
        return Path(self.config.route(route).source)

    def token(
        self,
        scopes: Iterable[str] = ALL_SCOPES,
        routes: str = "*",
        *,
        expires_at: float | None = None,
        name: str | None = None,
    ) -> str:
        self._made += 1
        return create_token(
            self.store,
            name or f"t{self._made}",
            list(scopes),
            routes,
            expires_at,
            now=time.time(),
        )

    def revoke(self, name: str) -> None:
        revoke_token(self.store, name, now=time.time())

    def headers(self, token: str | None) -> dict[str, str]:
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def events(self, name: str) -> list[Any]:
        return [e for e in self.store.events_after(0, limit=1_000_000) if e.event == name]

    def job_count(self) -> int:
        return int(self.store.job_count())


def make_node(root: Path, config_text: str = CONFIG) -> ApiNode:
    (root / "ketter.yaml").write_text(config_text)
    for route in ("dub-fr", "dub-de", "qc"):
        (root / "in" / route).mkdir(parents=True, exist_ok=True)
        (root / "out" / route).mkdir(parents=True, exist_ok=True)
    config = load_config(root / "ketter.yaml")
    os.makedirs(os.path.dirname(config.db_path), exist_ok=True)
    upgrade_schema(config.db_path)
    node = Node.from_config(config, "api")
    app = build_app(node)
    return ApiNode(root, node, TestClient(app, client=("10.0.0.7", 50000)), app)
