"""An invalid config stops each service at once, whichever reads it first
(issue #15, section 2).

``RestartPreventExitStatus=2`` only looks at the exit status of the main
process. The workers' exit 2 used to come from ``ExecStartPre=… db
upgrade``, so systemd restarted them until the start limit. Now neither
unit has an ``ExecStartPre=``: each one's ``ExecStart=``, run here exactly as
written in the rendered unit, is the process that reads the config, and it
exits 2 — the status the units name in ``RestartPreventExitStatus=``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ketter.config import load_config
from ketter.deploy.units import exec_start, render_units
from tests.integration.runtime.isolated import make_isolated_python


def _values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def test_each_service_exits_2_on_a_broken_config_from_its_main_process(tmp_path: Path) -> None:
    for name in ("src", "dst", "state"):
        (tmp_path / name).mkdir()
    config = tmp_path / "ketter.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"routes:\n  - {{name: a, source: {tmp_path / 'src'}, destination: {tmp_path / 'dst'}}}\n",
        encoding="utf-8",
    )
    units = render_units(load_config(config), python=make_isolated_python(tmp_path))
    with config.open("a", encoding="utf-8") as fh:
        fh.write("workerz: 3\n")  # the typo of the boot test
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYTHONPATH")}
    for name in ("ketter-workers.service", "ketter-watcher.service"):
        unit = units[name]
        assert not _values(unit, "ExecStartPre"), f"{name}: an ExecStartPre= would exit 2 instead"
        assert _values(unit, "RestartPreventExitStatus") == ["2"]
        done = subprocess.run(exec_start(unit), env=env, cwd=tmp_path / "state",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, f"{name}: exit {done.returncode}: {done.stderr}"
        assert "workerz" in done.stderr, done.stderr
    assert not (tmp_path / "state" / "ketter.db").exists()  # stopped before the store
