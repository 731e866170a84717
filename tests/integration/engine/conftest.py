from __future__ import annotations

import os
from pathlib import Path

import pytest


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
