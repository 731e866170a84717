"""A Ketter node run as a real process against the share harness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import KETTER, cli_env

from .harness import Share, wait_for

#: Short timings for the tests; the logic is the same as with the defaults.
TIMINGS = {"stable_seconds": "1s", "poll_interval": "0.5s", "rescan_interval": "3s"}


def route_yaml(name: str, src: Share, dst: Share, **opts: Any) -> str:
    values: dict[str, Any] = {
        "source": f"'{src.root / ('out-' + name)}'",
        "source_mount": f"'{src.mount}'",
        "destination": f"'{dst.root / ('in-' + name)}'",
        "destination_mount": f"'{dst.mount}'",
        **TIMINGS,
        **opts,
    }
    lines = [f"  - name: {name}"] + [f"    {k}: {v}" for k, v in values.items()]
    return "\n".join(lines)


class Node:
    """``ketter run`` on a config of share routes; jobs read through the CLI."""

    def __init__(self, base: Path, routes: list[str], **top: str) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.config = base / "ketter.yaml"
        extra = "".join(f"{k}: {v}\n" for k, v in top.items())
        self.config.write_text(
            f"state_dir: '{base / 'state'}'\nnode: share-node\n"
            "lease: {ttl: 10s, heartbeat: 1s, sweep_interval: 1s}\n"
            + extra
            + "routes:\n"
            + "\n".join(routes)
            + "\n"
        )
        self.proc: subprocess.Popen | None = None
        self.log = base / "run.log"
        done = self.cli("db", "upgrade")
        assert done.returncode == 0, done.stderr

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KETTER, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=timeout,
            check=False,
        )

    def start(self, command: str = "run", **env: str) -> None:
        assert self.proc is None
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [*KETTER, "--config", str(self.config), command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=cli_env(**env),
                cwd=self.base,
            )

    def wait_exit(self, timeout: float = 120) -> int:
        """The node ended by itself (a fault injected): its exit status."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(90)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(30)
            self.proc = None

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"ketter exited {self.proc.returncode}: "
                + self.log.read_text(errors="replace")[-3000:]
            )
        return True

    def jobs(self) -> list[dict[str, Any]]:
        done = self.cli("jobs", "--json", "--limit", "100000")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        return list(data["jobs"] if isinstance(data, dict) else data)

    def states(self) -> Counter[str]:
        return Counter(str(j["state"]) for j in self.jobs())

    def wait_states(self, want: dict[str, int], timeout: float = 120) -> Counter[str]:
        def check() -> Counter[str] | None:
            if self.proc is not None:
                self.alive()
            got = self.states()
            if got["failed"] and "failed" not in want:
                raise AssertionError(
                    f"a job failed: {got}; " + self.log.read_text(errors="replace")[-3000:]
                )
            return got if all(got[k] == v for k, v in want.items()) else None

        last: list[Counter[str]] = []
        try:
            return wait_for(
                lambda: check() or last.append(self.states()), timeout, f"jobs {want}", interval=1.0
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; last seen {last[-1] if last else None}; log: "
                + self.log.read_text(errors="replace")[-3000:]
            ) from None

    def settle(self, seconds: float) -> None:
        """Let the running node poll and rescan for ``seconds`` (an absence
        is checked after a bounded wait: several rescans)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.alive()
            time.sleep(0.5)


def write_files(folder: Path, count: int, size: int = 4096, prefix: str = "clip") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.bin"
        path.write_bytes(os.urandom(size))
        out.append(path)
    return out
