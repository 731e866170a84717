"""`ketter transfer` end to end: a real subprocess, real files, the job store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env


def transfer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KETTER, "transfer", "--state-dir", str(tmp_path / "state"),
                           *args], capture_output=True, text=True, env=cli_env(), timeout=120)


def test_file_copy_into_folder_records_a_job(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 5)
    (tmp_path / "clip.mov").write_bytes(data)
    (tmp_path / "out").mkdir()
    result = transfer(tmp_path, str(tmp_path / "clip.mov"), str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["bytes"] == len(data)
    import hashlib

    assert summary["jobs"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out" / "clip.mov").read_bytes() == data
    assert (tmp_path / "clip.mov").exists()
    con = sqlite3.connect(tmp_path / "state" / "ketter.db")
    events = [r[0] for r in con.execute("SELECT event FROM events ORDER BY id")]
    assert events == ["detect", "claim", "prepare", "copy", "verify", "place", "complete"]


def test_conflict_fails_with_reason_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.wav").write_bytes(b"old")
    result = transfer(tmp_path, str(tmp_path / "a.wav"), str(tmp_path / "out"))
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert (tmp_path / "out" / "a.wav").read_bytes() == b"old"
    again = transfer(tmp_path, str(tmp_path / "a.wav"), str(tmp_path / "out"),
                     "--conflict", "rename")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "a (1).wav").read_bytes() == b"new"


@pytest.mark.parametrize("folders", ["per_file", "as_unit"])
def test_folder_move_keeps_the_tree(tmp_path: Path, folders: str) -> None:
    src = tmp_path / "reel"
    names = {b"a/b/take 1.wav": b"1", "a/Ame\u0301lie.wav".encode(): b"2", b"caf\xe9": b"3"}
    for rel, data in names.items():
        path = os.path.join(os.fsencode(src), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    result = transfer(tmp_path, str(src), str(tmp_path / "delivered"), "--mode", "move",
                      "--folders", folders)
    assert result.returncode == 0, result.stderr
    for rel, data in names.items():
        with open(os.path.join(os.fsencode(tmp_path / "delivered"), rel), "rb") as fh:
            assert fh.read() == data
    assert not src.exists()


def test_interrupted_transfer_fails_cleanly_and_can_be_run_again(tmp_path: Path) -> None:
    import signal
    import time

    data = os.urandom(8 * 2**20) * 24  # long enough to still be copying after the stop
    (tmp_path / "reel.mxf").write_bytes(data)
    (tmp_path / "out").mkdir()
    argv = [*KETTER, "transfer", "--state-dir", str(tmp_path / "state"),
            str(tmp_path / "reel.mxf"), str(tmp_path / "out")]
    env = cli_env(KETTER_FAULT_STOP="mid-copy")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"T":
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, delivered when it runs again
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "interrupted" in err
    assert os.listdir(tmp_path / "out") == []  # no partial left behind
    con = sqlite3.connect(tmp_path / "state" / "ketter.db")
    assert con.execute("SELECT state FROM jobs").fetchall() == [("failed",)]
    con.close()
    again = transfer(tmp_path, str(tmp_path / "reel.mxf"), str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "reel.mxf").read_bytes() == data
