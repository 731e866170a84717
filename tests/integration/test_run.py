"""`ketter run`: watcher and workers in one foreground process, as `make run`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: state
lease: {ttl: 5s, heartbeat: 1s, sweep_interval: 1s}
routes:
  - {name: copy, source: in/copy, destination: out/copy, stable_seconds: 0.5,
     poll_interval: 0.2s, folders: as_unit}
  - {name: move, source: in/move, destination: out/move, mode: move, stable_seconds: 0.5,
     poll_interval: 0.2s}
"""


def _wait(predicate, what: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ketter run exited early ({proc.returncode})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_run_delivers_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    (tmp_path / "ketter.yaml").write_text(CONFIG)
    proc = subprocess.Popen([*KETTER, "--config", str(tmp_path / "ketter.yaml"), "run",
                             "--create-folders"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=cli_env(), cwd=tmp_path)
    try:
        banner = proc.stdout.readline()  # type: ignore[union-attr]
        assert banner.startswith("Ketter is running: 2 route(s)")
        reel = tmp_path / "in" / "copy" / "REEL_01"
        reel.mkdir(parents=True, exist_ok=True)
        (reel / "picture.mxf").write_bytes(os.urandom(200_000))
        (tmp_path / "in" / "move" / "mix.wav").write_bytes(b"mix" * 1000)
        _wait(lambda: (tmp_path / "out" / "copy" / "REEL_01" / "picture.mxf").exists()
              and (tmp_path / "out" / "move" / "mix.wav").exists(), "both deliveries", proc)
        _wait(lambda: not (tmp_path / "in" / "move" / "mix.wav").exists(),
              "the move source to go", proc)
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Ketter stopped." in out
    assert (tmp_path / "out" / "copy" / "REEL_01" / "picture.mxf").read_bytes() == \
        (reel / "picture.mxf").read_bytes()
    assert (tmp_path / "out" / "move" / "mix.wav").read_bytes() == b"mix" * 1000
