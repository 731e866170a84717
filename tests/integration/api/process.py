"""A real ``ketter api`` process for the tests: a config in tmp_path, a free
port on 127.0.0.1, start, wait until it serves, stop with SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import KETTER, cli_env
from tests.ports import free_port as free_port  # the API tests take it from here


def write_config(tmp_path: Path, api: dict[str, Any], **top: Any) -> Path:
    """A node config with one route and ``api`` as its api: section."""
    for folder in ("src", "dst", "state"):
        (tmp_path / folder).mkdir(exist_ok=True)
    config = {
        "state_dir": str(tmp_path / "state"),
        "routes": [
            {"name": "r", "source": str(tmp_path / "src"), "destination": str(tmp_path / "dst")}
        ],
        "api": api,
        **top,
    }
    path = tmp_path / "ketter.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def upgrade(config: Path) -> None:
    done = subprocess.run(
        [*KETTER, "--config", str(config), "db", "upgrade"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class ApiProcess:
    """``ketter api`` on ``config``; stderr goes to a file read by the tests."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "api.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*KETTER, "--config", str(config), "api"],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "api serving on" not in self.stderr():
            assert self.proc.poll() is None, (
                f"ketter api exited {self.proc.returncode}:\n" + self.stderr()
            )
            assert time.monotonic() < deadline, "ketter api did not serve:\n" + self.stderr()
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def __enter__(self) -> ApiProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events(db_path: Path, name: str) -> list[dict]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT details FROM events WHERE event = ?", (name,)).fetchall()
    finally:
        con.close()
    return [json.loads(details) for (details,) in rows]
