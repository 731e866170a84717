"""The extra workers processes run as the main one: ``python -I -m ketter``
(issue #15, section 2).

They ran ``python -m ketter.cli.main`` without ``-I``: under the units that
put the working directory (the writable state directory) first on the
children's ``sys.path``, unlike what docs/operations.md says, and runpy
printed a ``RuntimeWarning`` (a module of an already imported package run
again as ``__main__``) at every start.

The main process runs here exactly as the unit runs it (``-I -m ketter``),
on an interpreter whose site-packages see this checkout
(:mod:`tests.integration.runtime.isolated`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .isolated import make_isolated_python

CONFIG = """\
state_dir: {root}/state
node: iso
shutdown_timeout: 5s
routes:
  - {{name: copy, source: {root}/src, destination: {root}/dst}}
"""


@pytest.fixture
def isolated_python(tmp_path: Path) -> str:
    return make_isolated_python(tmp_path)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_children_run_isolated_without_a_warning(isolated_python: str, tmp_path: Path) -> None:
    for name in ("src", "dst", "state"):
        (tmp_path / name).mkdir()
    config = tmp_path / "ketter.yaml"
    config.write_text(CONFIG.format(root=tmp_path), encoding="utf-8")
    log = tmp_path / "workers.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYTHONPATH")}
    with log.open("wb") as out:
        main = subprocess.Popen(
            [isolated_python, "-I", "-m", "ketter", "--config", str(config),
             "workers", "--processes", "2", "-w", "1"],
            stdout=out, stderr=out, env=env, cwd=tmp_path / "state",
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count('"workers started"') < 2:
            assert main.poll() is None, f"exited {main.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"both processes did not start: {log.read_text()}"
            time.sleep(0.1)
        # The extra workers process and the audit shipper (ketter audit ship
        # --follow), each started as the main process was.
        children = _children(main.pid)
        kinds = set()
        for child in children:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1]
            assert argv[:5] == [isolated_python.encode(), b"-I", b"-m", b"ketter", b"--config"]
            kinds.add(argv[6])
        assert len(children) == 2 and kinds == {b"workers", b"audit"}, children
    finally:
        main.send_signal(signal.SIGTERM)
        code = main.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "RuntimeWarning" not in text
    assert "Traceback" not in text
