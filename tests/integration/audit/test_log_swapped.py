"""The audit log deleted, replaced or made immutable while the shipper runs
(issue #14 finding 10): a deleted or replaced log is reopened at once (not
written unlinked until a restart) and the chain records it; while shipping
fails, ``ketter health`` fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ketter.audit.logfile import AuditFiles
from ketter.audit.verify import verify_files
from ketter.health import check_health

from .conftest import Env


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def actions(log: Path) -> list[tuple[str, int | None]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        fields = json.loads(line)
        out.append((fields["event.action"], fields.get("ketter.job_id")))
    return out


@pytest.fixture
def running(env: Env) -> Iterator[Env]:
    shipper = env.shipper(interval=0.02)
    shipper.start()
    try:
        yield env
    finally:
        shipper.stop()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_log_deleted_or_replaced_is_reopened_and_recorded(running: Env, how: str) -> None:
    env = running
    first = env.transfer("a.mov")
    wait_for(lambda: ("complete", first) in actions(env.log), "job 1 shipped")
    if how == "deleted":
        env.log.unlink()
    else:
        fresh = env.log.with_name("other.jsonl")
        fresh.write_bytes(b"")
        os.replace(fresh, env.log)
    second = env.transfer("b.mov")
    wait_for(lambda: ("complete", second) in actions(env.log), "job 2 shipped to the new file")
    found = actions(env.log)
    assert ("audit_log_reopened", None) in found
    # The whole chain is written again into the new file, and it verifies.
    assert found[0] == ("detect", first)
    report = verify_files(AuditFiles(str(env.log)).all_files(), store=env.store,
                          now=env.clock.now)
    assert report.ok, report.problems
    reopened = next(
        json.loads(line)
        for line in env.log.read_text(encoding="utf-8").splitlines()
        if '"audit_log_reopened"' in line
    )
    assert json.loads(reopened["ketter.record"])["details"]["reason"] == how


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


def audit_check(env: Env):
    report = check_health(env.config)
    return next((c for c in report.checks if c.name == "audit log"), None)


def test_immutable_log_fails_health_until_fixed(env: Env) -> None:
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("chattr +i needs the chattr tool and root")
    env.transfer("a.mov")
    env.ship()
    try:
        _chattr("+i", env.log)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"this filesystem refuses chattr +i: {exc.stderr.decode().strip()}")
    shipper = env.shipper(interval=0.02)
    shipper.start()
    try:
        second = env.transfer("b.mov")
        wait_for(
            lambda: (c := audit_check(env)) is not None and not c.ok,
            "health to fail on the immutable log",
        )
        check = audit_check(env)
        assert check is not None and "Operation not permitted" in check.detail, check
        assert ("complete", second) not in actions(env.log)
    finally:
        _chattr("-i", env.log)
    try:
        wait_for(lambda: (c := audit_check(env)) is not None and c.ok, "health to recover")
        wait_for(lambda: ("complete", second) in actions(env.log), "job 2 shipped")
    finally:
        shipper.stop()
