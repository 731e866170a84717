"""The store commands on PostgreSQL (issue #18): ``db status`` and ``db
upgrade`` on an empty database, and never silently a new, empty store where
the node has run before (as on SQLite: the audit log is the evidence)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import KETTER, cli_env


def _ketter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, "--config", str(config), *args],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )


def _empty_database(pg_cluster: Any, name: str) -> str:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(pg_cluster.dsn(name))


def _config(root: Path, dsn: str) -> Path:
    config = root / "ketter.yaml"
    config.write_text(
        f"state_dir: {root}/state\nnode: n1\nstore: {{backend: postgresql, dsn: '{dsn}'}}\n"
    )
    return config


def test_db_status_and_upgrade_create_the_store(pg_cluster: Any, tmp_path: Path) -> None:
    config = _config(tmp_path, _empty_database(pg_cluster, "ketter_cli_new"))
    status = _ketter(config, "db", "status")
    assert status.returncode == 1 and "no job store there yet" in status.stdout, status
    upgrade = _ketter(config, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "applied 0001_initial" in upgrade.stdout and "@" in upgrade.stdout
    status = _ketter(config, "db", "status")
    assert status.returncode == 0 and "schema is up to date" in status.stdout, status
    assert not list((tmp_path / "state").glob("*.db"))  # nothing of SQLite's


def test_an_emptied_database_is_not_silently_a_new_store(
    pg_cluster: Any, tmp_path: Path
) -> None:
    config = _config(tmp_path, _empty_database(pg_cluster, "ketter_cli_lost"))
    log = tmp_path / "state" / "logs" / "audit.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"event.sequence": 1}\n')  # this node has run before
    for args in (("db", "upgrade"), ("workers",)):
        refused = _ketter(config, *args)
        assert refused.returncode == 2, refused
        assert "no job store in the database" in refused.stderr, refused.stderr
        assert "--new-store" in refused.stderr
    with psycopg.connect(pg_cluster.dsn("ketter_cli_lost")) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)  # nothing was created
    # On purpose: the old log must be set aside first, as on SQLite.
    again = _ketter(config, "db", "upgrade", "--new-store")
    assert again.returncode == 2 and "archive the old log files first" in again.stderr
    log.rename(tmp_path / "audit.old.jsonl")
    created = _ketter(config, "db", "upgrade", "--new-store")
    assert created.returncode == 0, created.stderr
    assert "new, empty job store created on purpose" in created.stdout
