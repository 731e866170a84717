"""``ketter audit verify`` never says OK for a chain that was cut away (issue
#14 finding 7): a deleted job store, an emptied events table with an emptied
log, and a tail cut consistently from both all fail with exit 1 and say what
is missing. What is still undetectable without an off-node witness:
docs/audit.md, "What verify cannot see"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ketter.audit.highwater import highwater_path
from ketter.audit.logfile import AuditFiles
from ketter.audit.verify import verify_files
from ketter.cli.main import main
from ketter.store import open_store

from .conftest import Env, make_env


@pytest.fixture
def shipped(env: Env) -> Env:
    for i in range(3):
        env.transfer(f"take{i}.mov", bytes([i]) * 5000)
    assert env.ship() > 10
    return env


def verify(env: Env, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    rc = main(["audit", "verify", "--config", env.config_path, *extra])
    out = capsys.readouterr().out
    if os.path.exists(env.config.db_path):
        open_store(env.config.db_path)  # main() bound the models to a read-only handle
    return rc, out


def cut_tail(env: Env, keep: int) -> None:
    """The last records removed from the job store and from the log alike."""
    with env.store.transaction():
        env.store.db.execute_sql("DELETE FROM events WHERE id > ?", (keep,))
    kept = env.log.read_text(encoding="utf-8").splitlines(keepends=True)[:keep]
    env.log.write_text("".join(kept), encoding="utf-8")


def test_deleted_job_store_fails(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify(shipped, capsys)[0] == 0
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(shipped.config.db_path + suffix):
            os.unlink(shipped.config.db_path + suffix)
    rc, out = verify(shipped, capsys)
    assert rc == 1
    assert f"BROKEN: the job store {shipped.config.db_path} does not exist" in out


def test_emptied_events_and_log_fail(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    cut_tail(shipped, 0)
    rc, out = verify(shipped, capsys)
    assert rc == 1
    assert "the audit chain is empty" in out and "3 job(s) in the job store" in out
    # Jobs and heartbeats emptied as well: the high-water marks still say so.
    with shipped.store.transaction():
        shipped.store.db.execute_sql("DELETE FROM jobs")
    rc, out = verify(shipped, capsys)
    assert rc == 1 and "audit.highwater says seq" in out, out
    assert "0 records checked, OK" not in out


def test_a_fresh_node_with_an_empty_chain_is_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env(tmp_path)
    rc, out = verify(env, capsys)
    assert rc == 0 and "nothing has run on this node yet" in out


def test_consistent_tail_cut_fails(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    total = len(shipped.log.read_text(encoding="utf-8").splitlines())
    # Cut after a job's last event, so no job row gives it away: only the mark.
    last_complete = max(
        json.loads(line)["event.sequence"]
        for line in shipped.log.read_text(encoding="utf-8").splitlines()
        if '"event.action": "complete"' in line and '"ketter.job_id": 2' in line
    )
    with shipped.store.transaction():
        shipped.store.db.execute_sql("DELETE FROM jobs WHERE id = 3")
    cut_tail(shipped, last_complete)
    rc, out = verify(shipped, capsys)
    assert rc == 1, out
    assert (
        f"the audit chain ends at seq {last_complete} but " in out
        and f"reached seq {total}: records {last_complete + 1}..{total} were cut" in out
    )
    # Both witnesses name it: the state-dir file and the heartbeat row.
    assert "audit.highwater" in out and "audit heartbeat of node test-node" in out


def test_tail_cut_then_rewritten_fails(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    # Cut after job 1's last event; jobs 2 and 3 go with their events.
    end = shipped.store.db.execute_sql("SELECT MAX(id) FROM events WHERE job_id = 1").fetchone()[0]
    cut_tail(shipped, end)
    with shipped.store.transaction():
        shipped.store.db.execute_sql("DELETE FROM jobs WHERE id > 1")
    for i in range(3):  # new events past the old end, shipped after the cut
        shipped.transfer(f"again{i}.mov", b"y" * (100 + i))
    shipped.ship()
    rc, out = verify(shipped, capsys)
    assert rc == 1
    assert "is not the one" in out and "was cut and rewritten after it" in out


def test_cut_rotated_file_fails(tmp_path: Path) -> None:
    env = make_env(tmp_path, audit="{rotate_max_bytes: 6000}")
    for i in range(3):
        env.transfer(f"take{i}.mov")
    env.ship()
    files = AuditFiles(str(env.log)).all_files()
    assert len(files) > 2
    # The newest files gone and the last rotated one cut short: its name
    # still says where it ended.
    last_rotated = Path(files[-2])
    lines = last_rotated.read_text(encoding="utf-8").splitlines(keepends=True)
    last_rotated.write_text("".join(lines[:-2]), encoding="utf-8")
    report = verify_files(files[:-1])
    assert not report.ok
    assert "its name says it ends at seq" in report.problems[0]


def test_damaged_highwater_file_is_a_problem(
    shipped: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(highwater_path(shipped.config.state_dir)).write_text("{}", encoding="utf-8")
    rc, out = verify(shipped, capsys)
    assert rc == 1 and "is not a high-water mark" in out
