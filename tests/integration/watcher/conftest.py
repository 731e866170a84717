from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.watcher.support import Env, make_config


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """``make_env(route=options, ...)`` → an :class:`Env` (closed after the test)."""
    envs: list[Env] = []

    def make(**routes: dict[str, Any]) -> Env:
        env = Env(make_config(tmp_path, routes))
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
