"""The `ketter` CLI as an operator runs it: real subprocesses, real files."""

from __future__ import annotations

import argparse
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


# --- issue #14: finding 18 and the new-user findings of 14 and 19 ---------------


def _job(path: Path, state: str) -> int:
    con = sqlite3.connect(path.parent / "state" / "ketter.db")
    now = time.time()
    cursor = con.execute(
        "INSERT INTO jobs (route, mode, kind, source_path, source_display, source_key, size, "
        "file_count, state, attempt, priority, bytes_done, node, created_at, updated_at, error) "
        "VALUES ('r1','copy','file',?,?, ?, 42, 1, ?, 1, 0, 0, 'n', ?, ?, NULL)",
        (b"/in/a.mov", "/in/a.mov", f"k-{state}-{now}", state, now, now))
    con.commit()
    con.close()
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def test_requeue_counts_and_exit_codes(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    assert run("db", "upgrade", config=path).returncode == 0
    done = _job(path, "completed")
    result = run("requeue", str(done), config=path)
    assert result.returncode == 1
    assert f"job {done}: not re-queued, it is completed" in result.stderr
    assert "0 job(s) re-queued, 1 not" in result.stdout
    missing = run("requeue", "99999", config=path)
    assert missing.returncode == 1
    assert "job 99999: no such job" in missing.stderr
    assert "0 job(s) re-queued, 1 not" in missing.stdout
    failed = _job(path, "failed")
    ok = run("requeue", str(failed), config=path)
    assert ok.returncode == 0, ok.stderr
    assert "1 job(s) re-queued" in ok.stdout and ", " not in ok.stdout.splitlines()[-1]
    assert run("requeue", "--failed", "--route", "nope", config=path).returncode == 2


def test_enqueue_unknown_route_or_missing_path(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    assert run("db", "upgrade", config=path).returncode == 0
    unknown = run("enqueue", str(tmp_path / "in"), "--route", "nope", config=path)
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert "--route: no route named 'nope'" in unknown.stderr and "(routes: r1)" in unknown.stderr
    gone = tmp_path / "in" / "never-there.mov"
    absent = run("enqueue", str(gone), "--route", "r1", config=path)
    assert absent.returncode == 1
    assert f"{gone} does not exist" in absent.stderr
    assert "vanished" not in absent.stdout + absent.stderr


def test_jobs_of_an_unknown_route_say_so(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    assert run("db", "upgrade", config=path).returncode == 0
    result = run("jobs", "--route", "nope", config=path)
    assert result.returncode == 2
    assert "no route named 'nope'" in result.stderr and "(routes: r1)" in result.stderr
    assert run("jobs", "--route", "r1", config=path).stdout.strip() == "(none)"


def test_config_check_show_prints_json_alone_on_stdout(tmp_path: Path) -> None:
    # The route folders are on the root filesystem without *_mount: a warning.
    path = make_config(tmp_path)
    result = run("config", "check", "--show", config=path)
    assert result.returncode == 0, result.stderr
    assert "warning: route 'r1'" in result.stderr
    assert json.loads(result.stdout)["routes"][0]["name"] == "r1"
    assert "OK (1 route(s)" in result.stderr


def test_every_option_has_a_description() -> None:
    from ketter.cli.main import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}")
            elif not action.help and not name.startswith("ketter audit"):
                # `ketter audit …` belongs to the audit verify work of issue #14.
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "ketter")
    assert missing == []


def test_config_check_checks_the_hmac_key(tmp_path: Path) -> None:
    path = make_config(tmp_path, "audit: {hmac_key_file: keys/audit.key}\n")
    absent = run("config", "check", config=path)
    assert absent.returncode == 2
    assert (f"{path}:4: audit.hmac_key_file: the key file {tmp_path / 'keys' / 'audit.key'} "
            "does not exist") in absent.stderr
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "audit.key").write_text("c2VjcmV0\n")
    assert run("config", "check", config=path).returncode == 0


def test_credentials_directory_key_as_docs_audit_sets_it_up(tmp_path: Path) -> None:
    # Issue #14 finding 18: `${CREDENTIALS_DIRECTORY}/audit-key` was taken as a
    # relative path: check said OK, the workers died on a raw [Errno 2], exit 1.
    path = make_config(tmp_path, "audit:\n  hmac_key_file: ${CREDENTIALS_DIRECTORY}/audit-key\n")
    outside = run("config", "check", config=path)
    assert outside.returncode == 2
    assert f"{path}:5: audit.hmac_key_file: ${{CREDENTIALS_DIRECTORY}}/audit-key cannot be " \
        "resolved here" in outside.stderr
    creds = tmp_path / "creds"
    creds.mkdir()
    inside = run("config", "check", config=path, CREDENTIALS_DIRECTORY=str(creds))
    assert inside.returncode == 2
    assert f"the key file {creds / 'audit-key'} does not exist" in inside.stderr
    (creds / "audit-key").write_text("c2VjcmV0\n")
    assert run("config", "check", config=path, CREDENTIALS_DIRECTORY=str(creds)).returncode == 0
    assert run("db", "upgrade", config=path).returncode == 0
    workers = run("workers", config=path)  # not under systemd: the variable is unset
    assert workers.returncode == 2, workers.stderr
    assert "Errno" not in workers.stderr and "Traceback" not in workers.stderr
    assert "CREDENTIALS_DIRECTORY is not set" in workers.stderr


def test_workers_missing_key_file_exit_2_with_the_line(tmp_path: Path) -> None:
    path = make_config(tmp_path, "audit: {hmac_key_file: /nonexistent/audit.key}\n")
    assert run("db", "upgrade", config=path).returncode == 0
    workers = run("workers", config=path)
    assert workers.returncode == 2, workers.stderr
    assert (f"{path}:4: audit.hmac_key_file: the key file /nonexistent/audit.key does not "
            "exist") in workers.stderr
    assert "Errno" not in workers.stderr


def test_unsupported_tag_exits_2_not_a_traceback(tmp_path: Path) -> None:
    # Issue #14 finding 11: exit 1 with a ConstructorError traceback, so
    # systemd's RestartPreventExitStatus=2 did not stop the restart loop.
    path = make_config(tmp_path, "workers: !!python/name:os.system 3\n")
    for command in (["config", "check"], ["workers"], ["watcher"]):
        result = run(*command, config=path)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{path}:4: workers: unsupported tag !!python/name:os.system" in result.stderr
        assert "Traceback" not in result.stderr


def test_config_check_names_the_line_of_an_unmounted_mount(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    path.write_text(path.read_text().replace(
        "destination: out}", f"destination: out, destination_mount: {tmp_path}}}"))
    result = run("config", "check", config=path)
    assert result.returncode == 2
    assert f"error: {path}:3: route 'r1': destination_mount {tmp_path} is not mounted" \
        in result.stderr


def test_audit_verify_on_a_store_older_than_ketter_says_upgrade(tmp_path: Path) -> None:
    """An upgraded node whose `db upgrade` has not run yet: verify names the
    missing columns and the command, exit 2 — not a peewee traceback."""
    path = make_config(tmp_path)
    assert run("db", "upgrade", config=path).returncode == 0
    db = tmp_path / "state" / "ketter.db"
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE route_status DROP COLUMN room_needed")  # as before migration 0006
    con.commit()
    con.close()
    result = run("audit", "verify", config=path)
    assert result.returncode == 2, result.stderr
    assert "route_status.room_needed" in result.stderr and "ketter db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
