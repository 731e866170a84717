"""``ketter db upgrade --new-store`` starts a new audit chain that verifies
(review of #14 finding 9): the documented procedure archived the old log
only; ``state_dir/audit.highwater`` stayed, the shipper kept the old mark
for ever and ``audit verify`` failed on the new chain for good. Now the
command refuses while the old log is in place, and sets the old mark
aside (kept, renamed with a timestamp)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import KETTER, cli_env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KETTER, *args], env=cli_env(), capture_output=True, text=True,
                          timeout=120)


def test_new_store_after_the_store_was_lost_verifies(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    state = tmp_path / "state"
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: {state}\nnode: n1\n")

    def transfer(name: str) -> None:
        (tmp_path / "src" / name).write_bytes(os.urandom(4096))
        done = run("--config", str(config), "transfer", str(tmp_path / "src" / name),
                   str(tmp_path / "out"))
        assert done.returncode == 0, done.stderr

    for i in range(3):
        transfer(f"old{i}.mov")
    assert (state / "audit.highwater").exists()
    for name in ("ketter.db", "ketter.db-wal", "ketter.db-shm"):  # the store is lost
        (state / name).unlink(missing_ok=True)

    refused = run("--config", str(config), "db", "upgrade", "--new-store")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "old audit log is still in place" in refused.stderr
    assert not (state / "ketter.db").exists()
    assert (state / "audit.highwater").exists()

    (state / "logs").rename(tmp_path / "logs.before-new-store")  # archived, as documented
    done = run("--config", str(config), "db", "upgrade", "--new-store")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (state / "audit.highwater").exists()
    kept = [p for p in os.listdir(state) if p.startswith("audit.highwater.")]
    assert len(kept) == 1 and kept[0].endswith(".old"), os.listdir(state)
    assert kept[0] in done.stdout

    transfer("new.mov")
    verified = run("--config", str(config), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
