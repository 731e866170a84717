"""Shared fixtures: a fresh job store, config files written on the fly."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import SqliteDatabase

from ketter.audit.chain import AuditChain
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore

ROOT = Path(__file__).resolve().parent.parent
#: The command line as the units run it (ketter/__main__.py); ``-m ketter.cli.main``
#: printed a RuntimeWarning in every subprocess (the module is imported by
#: ``ketter.cli`` before it runs as ``__main__``).
KETTER = [sys.executable, "-m", "ketter"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteDatabase]:
    """A migrated job store in a temporary state directory, bound to the models."""
    db = open_store(tmp_path / "state" / "ketter.db")
    yield db
    db.close()


@pytest.fixture
def job_store(store: SqliteDatabase) -> SqliteJobStore:
    """The job store (:class:`ketter.store.port.JobStore`) over the ``store``
    fixture's database, unkeyed chain for node ``test-node``."""
    return SqliteJobStore(store, AuditChain(node="test-node"))


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a YAML config (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "ketter.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for running `python -m ketter` in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("KETTER_CONFIG", None)
    env.update(extra)
    return env
