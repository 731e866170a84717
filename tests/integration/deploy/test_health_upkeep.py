"""``ketter health`` on PostgreSQL checks that the store's tables are
vacuumed and analysed (:mod:`ketter.store.postgres.upkeep`): autovacuum
off for ``jobs`` fails the check, naming the table; a vacuum and an
analysis by hand pass it again; on SQLite there is no such check."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.integration.pgnode import PgNode
from tests.pg import running_cluster


def _run(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


def _upkeep(node: PgNode) -> dict | None:
    run = node.ketter("health", "--json")
    assert run.returncode in (0, 1) and run.stdout, run.stdout + run.stderr
    checks = [c for c in json.loads(run.stdout)["checks"] if c["name"] == "store upkeep"]
    return checks[0] if checks else None


def test_autovacuum_off_for_the_jobs_fails_health_until_they_are_vacuumed(
    tmp_path: Path, pg_dsn: str
) -> None:
    node = PgNode(tmp_path, pg_dsn)
    check = _upkeep(node)
    assert check == {"name": "store upkeep", "ok": True, "detail": "autovacuum on"}, check

    _run(pg_dsn, "ALTER TABLE jobs SET (autovacuum_enabled = off)")
    check = _upkeep(node)
    assert check is not None and not check["ok"], check
    assert "autovacuum off for jobs" in check["detail"], check
    assert "vacuumdb --analyze" in check["detail"], check

    _run(pg_dsn, "VACUUM ANALYZE jobs")
    check = _upkeep(node)
    assert check is not None and check["ok"], check
    assert "vacuumed and analysed by hand" in check["detail"], check

    _run(pg_dsn, "ALTER TABLE jobs RESET (autovacuum_enabled)")
    assert _upkeep(node) == {"name": "store upkeep", "ok": True, "detail": "autovacuum on"}


def test_autovacuum_off_on_the_server_fails_health_for_every_table(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "pg", settings={"autovacuum": "off"}) as cluster:
        _run(cluster.dsn(), "CREATE DATABASE ketter")
        node = PgNode(tmp_path / "node", cluster.dsn("ketter"))
        upgrade = node.ketter("db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        check = _upkeep(node)
        assert check is not None and not check["ok"], check
        assert "autovacuum off on the server" in check["detail"], check
        assert "jobs" in check["detail"] and "events" in check["detail"], check
