"""docs/operations.md stays true: its SQL runs on a real job store, the make
targets and ketter commands it names exist."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from ketter.cli.main import build_parser
from tests.conftest import KETTER, ROOT, cli_env

DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def _job_store(tmp_path: Path) -> str:
    """A store with completed, failed and moved jobs, made by `ketter transfer`."""
    src, dst, mv = tmp_path / "src", tmp_path / "dst", tmp_path / "mv"
    for folder in (src, dst, mv):
        folder.mkdir()
    (src / "a.mov").write_bytes(b"a" * 300_000)
    (mv / "c.wav").write_bytes(b"c" * 1000)
    state = str(tmp_path / "state")
    for args, code in ((["a.mov"], 0), (["a.mov"], 1), (["c.wav", "--mode", "move"], 0)):
        name = args[0]
        path = str((mv if name == "c.wav" else src) / name)
        result = subprocess.run([*KETTER, "transfer", "--state-dir", state, path, str(dst),
                                 *args[1:]], env=cli_env(), capture_output=True, text=True)
        assert result.returncode == code, result.stdout + result.stderr
    return f"{state}/ketter.db"


def test_every_sql_block_runs_on_a_real_job_store(tmp_path: Path) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DOC, re.S)
    assert len(blocks) >= 10
    conn = sqlite3.connect(f"file:{_job_store(tmp_path)}?mode=ro", uri=True)
    results = [conn.execute(sql).fetchall() for sql in blocks]
    conn.close()
    assert results[0] and results[0][0][1] == "cli-transfer"  # failed today
    assert any(row[4] == 1 for row in results[7])  # delete_source today: 1 file
    assert results[9]  # the trail of job 3


def test_make_targets_named_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"\bmake ([a-z][a-z-]+)", DOC)) - {"install"}:
        assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"


def test_ketter_subcommands_named_exist() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", DOC, re.S))
    named = set(re.findall(r"\bketter --config \S+ ([a-z]+)", shell))
    assert {"health", "audit", "requeue", "config", "status"} <= named
    for name in named:
        assert name in commands, f"docs name `ketter {name}`, which does not exist"
