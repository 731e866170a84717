"""The `ketter` CLI as an operator runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import KETTER, cli_env


def run(*args: str, config: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    argv = [*KETTER, *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=cli_env(**env),
                          timeout=120)


def make_config(tmp_path: Path, extra: str = "") -> Path:
    for name in ("in", "out"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "ketter.yaml"
    path.write_text(f"state_dir: state\nroutes:\n  - {{name: r1, source: in, destination: out}}\n"
                    f"{extra}")
    return path


def test_invalid_config_exits_2_with_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("workers: 2\nroutes:\n  - {name: a, source: /a, destination: /b, mode: x}\n")
    result = run("config", "check", config=path)
    assert result.returncode == 2
    assert f"{path}:3: routes[0].mode: invalid value 'x'" in result.stderr


def test_config_found_through_env(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    result = run("config", "check", KETTER_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert "OK (1 route(s)" in result.stdout


def test_config_check_reports_missing_root(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    (tmp_path / "out").rmdir()
    result = run("config", "check", config=path)
    assert result.returncode == 2
    # with its line, like every other config error (issue #14 finding 19)
    assert (f"error: {path}:3: route 'r1': destination {tmp_path / 'out'} does not exist"
            in result.stderr)


def test_config_check_show_redacts_secrets(tmp_path: Path) -> None:
    path = make_config(tmp_path, "alerts: {urls: ['json://user:hunter2@127.0.0.1/x']}\n")
    result = run("config", "check", "--show", config=path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "json://***" in result.stdout


def test_db_upgrade_then_jobs_job_status(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    first = run("db", "upgrade", config=path)
    assert first.returncode == 0 and "applied 0001_initial" in first.stdout
    again = run("db", "upgrade", config=path)
    assert "up to date" in again.stdout

    db_path = tmp_path / "state" / "ketter.db"
    con = sqlite3.connect(db_path)
    now = time.time()
    con.execute(
        "INSERT INTO jobs (route, mode, kind, source_path, source_display, source_key, size, "
        "file_count, state, attempt, priority, bytes_done, node, created_at, updated_at, error) "
        "VALUES ('r1','copy','file',?,?, 'k1', 42, 1, 'failed', 3, 0, 0, 'n', ?, ?, 'disk full')",
        (b"/in/caf\xe9.mov", "/in/caf\\xe9.mov", now, now))
    con.commit()
    con.close()

    listing = run("jobs", "--state", "failed", config=path)
    assert listing.returncode == 0, listing.stderr
    assert "caf\\xe9.mov" in listing.stdout and "disk full" in listing.stdout
    as_json = json.loads(run("jobs", "--json", config=path).stdout)
    assert as_json[0]["state"] == "failed" and as_json[0]["bytes"] == 42
    one = json.loads(run("job", "1", "--json", config=path).stdout)
    assert one["job"]["error"] == "disk full"
    assert run("job", "99", config=path).returncode == 1
    status = json.loads(run("status", "--json", config=path).stdout)
    assert status["states"] == [{"state": "failed", "jobs": 1, "bytes": 42}]


def test_read_commands_before_upgrade_say_what_to_do(tmp_path: Path) -> None:
    result = run("jobs", config=make_config(tmp_path))
    assert result.returncode != 0
    assert "ketter db upgrade" in result.stderr
