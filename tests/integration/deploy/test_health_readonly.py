"""`ketter health` from a monitoring account: not ketter, only in its group,
no write access to the state directory — while the store is open for
writing and after the writer has closed it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.store import open_store
from ketter.store.sqlite import SqliteJobStore
from ketter.watcher.heartbeat import beat
from tests.conftest import cli_env

GROUP = 64123  # the "ketter" group of this test: any unused gid does
NOBODY = 65534


def _health_as_monitor(config_path: str) -> tuple[int, dict]:
    # Import as root (the interpreter lives in a private folder), then drop
    # to nobody with the group as the only supplementary group, as a
    # monitoring account added to `ketter` would be.
    script = textwrap.dedent(f"""
        import os, sys
        import ketter.health, ketter.cli.health, ketter.deploy.units, json, encodings.idna
        from ketter.cli.main import build_parser, main
        build_parser()  # every lazy import, while the interpreter's files are readable
        os.setgroups([{GROUP}]); os.setgid({NOBODY}); os.setuid({NOBODY})
        sys.exit(main(["--config", {config_path!r}, "health", "--json"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=cli_env(), timeout=60)
    assert result.returncode in (0, 1) and result.stdout, result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_health_as_a_group_member_while_running_and_after_stop() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    base = Path(tempfile.mkdtemp(prefix="ketter-health-"))
    try:
        base.chmod(0o755)
        for name in ("in", "out"):
            (base / name).mkdir(mode=0o755)
        state = base / "state"
        config_path = base / "ketter.yaml"
        config_path.write_text(
            f"state_dir: {state}\nnode: n1\nhealth: {{min_free: 1}}\n"
            f"routes:\n  - {{name: r, source: {base / 'in'}, destination: {base / 'out'}}}\n")
        config_path.chmod(0o644)
        config = load_config(config_path)
        db = open_store(config.db_path)
        Path(config.queue_path).touch()
        now = time.time()
        beat(SqliteJobStore(db, AuditChain(node="n1")), "n1",
             {"watcher": {}, "workers": {}, "route:r": {"lost": False}}, now=now)
        # What StateDirectoryMode=0750 and UMask=0027 produce for ketter:ketter.
        os.chown(state, 0, GROUP)
        state.chmod(0o750)
        for entry in state.iterdir():
            os.chown(entry, 0, GROUP)
            entry.chmod(0o640)
        assert (state / "ketter.db-wal").exists()  # the writer is open: WAL mode

        code, report = _health_as_monitor(str(config_path))
        assert code == 0, report
        assert "(read-only)" in report["checks"][1]["detail"]

        db.close()  # the services stop: the last connection removes -wal and -shm
        assert not (state / "ketter.db-wal").exists()
        assert stat.S_IMODE(state.stat().st_mode) == 0o750
        code, report = _health_as_monitor(str(config_path))
        store = next(c for c in report["checks"] if c["name"] == "job store")
        assert store["ok"] and "immutable" in store["detail"]
        assert code == 0, report  # heartbeats are fresh and their pid (ours) is alive
    finally:
        shutil.rmtree(base)
