from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .workers_bench import Workers


@pytest.fixture
def bt(tmp_path: Path) -> bytes:
    """The test's temporary folder as bytes, with src/ and dst/ inside."""
    base = os.fsencode(tmp_path)
    os.mkdir(base + b"/src")
    os.mkdir(base + b"/dst")
    return base


@pytest.fixture(autouse=True)
def _no_forced_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KETTER_PLACEMENT", raising=False)
    monkeypatch.delenv("KETTER_FAULT", raising=False)


@pytest.fixture
def workers(bt: bytes) -> Iterator[Callable[..., Workers]]:
    """``workers(**route)``: the workers of one route ``r`` (from src/ to
    dst/ unless the keys say otherwise)."""
    made: list[Workers] = []

    def build(**route: object) -> Workers:
        made.append(Workers(bt, {"r": {"source": "src", "destination": "dst", **route}}))
        return made[-1]

    yield build
    for w in made:
        w.close()
