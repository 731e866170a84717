"""A writer that pauses longer than ``stable_seconds`` (issue #14, finding
15): a stalled render or DAW export had its partial file delivered,
"verified" and, on a move route, its source unlinked while still open.

Real `ketter watcher` and `ketter workers` processes and real writer
processes that hold their file open while they pause, on a move, a copy and
an ``as_unit`` route: nothing partial is delivered, nothing is lost.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env

STABLE = 0.5

CONFIG = """\
state_dir: {root}/state
node: test-node
workers: 2
lease: {{ttl: 4s, heartbeat: 0.5s, sweep_interval: 0.3s, stall_timeout: 60s}}
retry: {{max_attempts: 3, base_delay: 0.2s, max_delay: 1s}}
routes:
  - {{name: move, source: {root}/src/move, destination: {root}/dst/move, mode: move,
     stable_seconds: {stable}, poll_interval: 0.2s}}
  - {{name: copy, source: {root}/src/copy, destination: {root}/dst/copy, mode: copy,
     stable_seconds: {stable}, poll_interval: 0.2s}}
  - {{name: unit, source: {root}/src/unit, destination: {root}/dst/unit, mode: move,
     folders: as_unit, stable_seconds: {stable}, poll_interval: 0.2s}}
"""

#: Writes the first half of each target, says "paused" and waits (holding
#: the last file open for writing) until its stdin gives a line; then writes
#: the rest. ``frames`` > 0: a render into a folder, one file per frame.
WRITER = """
import os, sys
path, size, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def chunk(name, n):
    return (name.encode() * (n // len(name) + 1))[:n]
if frames:
    os.makedirs(path, exist_ok=True)
    for i in range(frames // 2):
        with open(os.path.join(path, f"f{i:03}.exr"), "wb") as f:
            f.write(chunk(f"frame{i}", size))
    name = os.path.join(path, f"f{frames // 2:03}.exr")
else:
    name = path
f = open(name, "wb")
f.write(chunk("head", size // 2))
f.flush()
print("paused", flush=True)
sys.stdin.readline()
f.write(chunk("tail", size - size // 2))
f.close()
if frames:
    for i in range(frames // 2 + 1, frames):
        with open(os.path.join(path, f"f{i:03}.exr"), "wb") as g:
            g.write(chunk(f"frame{i}", size))
"""


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        for route in ("move", "copy", "unit"):
            (root / "src" / route).mkdir(parents=True)
            (root / "dst" / route).mkdir(parents=True)
        self.config = root / "ketter.yaml"
        self.config.write_text(CONFIG.format(root=root, stable=STABLE))
        self.procs: list[subprocess.Popen] = []
        subprocess.run(
            [*KETTER, "--config", str(self.config), "db", "upgrade"],
            env=cli_env(), check=True, capture_output=True, timeout=120,
        )

    def start(self, command: str) -> subprocess.Popen:
        log = open(self.root / f"{command}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([*KETTER, "--config", str(self.config), command],
                                stdout=log, stderr=log, env=cli_env())
        log.close()
        self.procs.append(proc)
        return proc

    def writer(self, path: Path, size: int, frames: int = 0) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size), str(frames)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"paused\n"
        return proc

    def jobs(self) -> dict[str, str]:
        try:
            # Read-only: a closing read-write connection may checkpoint and
            # remove the WAL under the running processes.
            db = self.root / "state" / "ketter.db"
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            try:
                rows = con.execute("SELECT source_display, state FROM jobs").fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            return {}
        return {os.path.basename(path): state for path, state in rows}

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for proc in self.procs[:2]:
                assert proc.poll() is None, f"a ketter process exited while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.jobs()}"
            time.sleep(0.1)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    yield n
    n.cleanup()


def delivered(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if "ascmhl" not in Path(rel).parts:
                out[rel] = path.read_bytes()
    return out


def test_paused_writers_are_not_delivered_until_they_close(node: Node) -> None:
    node.start("watcher")
    node.start("workers")
    size = 3 << 20
    src, dst = node.root / "src", node.root / "dst"
    writers = [
        node.writer(src / "move" / "mix.wav", size),
        node.writer(src / "copy" / "export.mov", size),
        node.writer(src / "unit" / "render", 64 * 1024, frames=10),
    ]
    paused_at = time.monotonic()
    # The node is working meanwhile: a file written at once is delivered...
    (src / "copy" / "control.txt").write_bytes(b"done")
    node.wait(lambda: node.jobs().get("control.txt") == "completed", "the control file")
    # ...and the paused writers stay quiet for many times stable_seconds.
    node.wait(lambda: time.monotonic() - paused_at > 8 * STABLE, "the pause")
    assert set(node.jobs()) == {"control.txt"}, node.jobs()
    assert delivered(dst / "move") == {} and delivered(dst / "unit") == {}
    assert set(delivered(dst / "copy")) == {"control.txt"}
    assert (src / "move" / "mix.wav").exists()

    for proc in writers:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert proc.wait(60) == 0
    node.wait(
        lambda: {k: v for k, v in node.jobs().items() if k != "control.txt"}
        == {"mix.wav": "completed", "export.mov": "completed", "render": "completed"},
        "the complete versions",
    )
    got = delivered(dst)
    assert len(got["move/mix.wav"]) == size and got["move/mix.wav"].endswith(b"tail")
    assert got["copy/export.mov"] == (src / "copy" / "export.mov").read_bytes()
    frames = {k: v for k, v in got.items() if k.startswith("unit/render/")}
    assert len(frames) == 10 and all(len(v) == 64 * 1024 for v in frames.values())
    assert not (src / "move" / "mix.wav").exists()  # moved only once complete
    assert not (src / "unit" / "render").exists()
