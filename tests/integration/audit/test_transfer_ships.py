"""A one-shot ``ketter transfer`` is a transfer: its events reach the audit
log before it exits, so ``ketter audit verify`` right after it passes
(issue #14 finding 19)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, *args], env=cli_env(), capture_output=True, text=True, timeout=120
    )


def test_one_shot_transfer_events_reach_the_log(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "src" / "a.mov").write_bytes(b"a" * 4096)
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nnode: n1\n", encoding="utf-8")
    done = run(
        "transfer", "--config", str(config), str(tmp_path / "src" / "a.mov"), str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    log = tmp_path / "state" / "logs" / "audit.jsonl"
    assert log.exists(), "the transfer's events were not shipped to the audit log"
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert lines[-1]["event.action"] == "complete"
    verified = run("audit", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(f"{len(lines)} records checked, OK")
    assert "not shipped" not in verified.stdout


def test_a_shipper_without_the_key_writes_no_event(tmp_path: Path) -> None:
    """A CLI process that may not read the HMAC key of a keyed chain ships the
    lines but records nothing itself (an unkeyed record would break the
    chain): pruning waits for a shipper that holds the key."""
    from dataclasses import replace

    from .conftest import make_env

    key = tmp_path / "audit.key"
    key.write_bytes(b"k" * 32)
    env = make_env(
        tmp_path, audit=f"{{hmac_key_file: {key}, rotate_max_bytes: 6000, rotate_backups: 1}}"
    )
    try:
        for i in range(3):
            env.transfer(f"take{i}.mov")
        env.ship()
        rotated = len(os.listdir(env.log.parent))
        assert rotated > 3  # rotated, but nothing pruned
        count = "SELECT COUNT(*) FROM events WHERE event = 'rotate'"
        assert env.store.db.execute_sql(count).fetchone()[0] == 0
        env.store.chain = replace(env.store.chain, key=b"k" * 32)  # now it holds the key
        env.transfer("more.mov")
        env.ship()
        assert env.store.db.execute_sql(count).fetchone()[0] > 0
    finally:
        env.store.close()


@pytest.mark.root
def test_another_account_leaves_the_log_to_the_service(tmp_path: Path) -> None:
    """``ketter transfer`` run by an account that does not own the state dir
    (here root, the dir belonging to the service account) creates no log
    file that would lock the service out of its own log; verify says the
    events are not shipped yet (exit 0 while young)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the state dir to another account")
    for name in ("src", "out", "state"):
        (tmp_path / name).mkdir()
    os.chown(tmp_path / "state", 65534, 65534)  # the service account's
    (tmp_path / "src" / "a.mov").write_bytes(b"a" * 100)
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nnode: n1\n", encoding="utf-8")
    done = run(
        "transfer", "--config", str(config), str(tmp_path / "src" / "a.mov"), str(tmp_path / "out")
    )
    assert done.returncode == 0, done.stderr
    assert "does not own" in done.stderr and "not in the audit log" in done.stderr
    assert not (tmp_path / "state" / "logs").exists()
    verified = run("audit", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "not shipped yet" in verified.stdout
