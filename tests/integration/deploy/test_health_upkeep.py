"""``ketter health`` on PostgreSQL checks that the store's tables are
vacuumed and analysed (:mod:`ketter.store.postgres.upkeep`): autovacuum
off for ``jobs`` (in any of PostgreSQL's spellings) or on the whole server
fails the check, naming the tables; a vacuum and an analysis by hand pass
it; another application's table in the same schema is not Ketter's."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

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


def _stale(detail: str) -> list[str]:
    """The tables a failing check names as not vacuumed and analysed."""
    listed = detail.split(" for: ", 1)[1].split(". ", 1)[0]
    return listed.split(", ")


ON = {"name": "store upkeep", "ok": True, "detail": "autovacuum on"}


@pytest.mark.parametrize("spelling", ["off", "of", "false", "0", "no"])
def test_autovacuum_off_for_the_jobs_fails_health_until_they_are_vacuumed(
    tmp_path: Path, pg_dsn: str, spelling: str
) -> None:
    node = PgNode(tmp_path, pg_dsn)
    assert _upkeep(node) == ON
    # Another application's table in the same schema is not the store's.
    _run(pg_dsn, "CREATE TABLE not_ketter (x int) WITH (autovacuum_enabled = off)")
    assert _upkeep(node) == ON

    _run(pg_dsn, f"ALTER TABLE jobs SET (autovacuum_enabled = {spelling})")
    check = _upkeep(node)
    assert check is not None and not check["ok"], check
    assert check["detail"].startswith("autovacuum off for jobs; "), check
    assert _stale(check["detail"]) == ["jobs"], check
    assert "vacuumdb --analyze" in check["detail"], check

    _run(pg_dsn, "VACUUM ANALYZE jobs")
    check = _upkeep(node)
    assert check is not None and check["ok"], check
    assert "vacuumed and analysed by hand" in check["detail"], check

    _run(pg_dsn, "ALTER TABLE jobs RESET (autovacuum_enabled)")
    assert _upkeep(node) == ON


def test_autovacuum_off_on_the_server_fails_health_until_the_store_is_vacuumed(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path / "pg", settings={"autovacuum": "off"}) as cluster:
        _run(cluster.dsn(), "CREATE DATABASE ketter")
        dsn = cluster.dsn("ketter")
        node = PgNode(tmp_path / "node", dsn)
        upgrade = node.ketter("db", "upgrade")
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        check = _upkeep(node)
        assert check is not None and not check["ok"], check
        assert check["detail"].startswith("autovacuum off on the server; "), check
        stale = _stale(check["detail"])
        assert {"jobs", "events", "job_counts", "heartbeats"} <= set(stale), stale
        _run(dsn, "VACUUM ANALYZE")
        check = _upkeep(node)
        assert check is not None and check["ok"], check
        assert check["detail"].startswith("autovacuum off on the server; vacuumed"), check

