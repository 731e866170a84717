"""`ketter run` starts only on a config that `ketter config check` accepts
(issue #14 finding 16): it used to create a typo'd source, or the mount point
of an unmounted share, on the local disk and start anyway."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import KETTER, cli_env

CONFIG = """\
state_dir: state
routes:
  - {name: ingest, source: in/typo, destination: out/ingest}
"""


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KETTER, "--config", str(config), "run", *extra],
                          capture_output=True, text=True, env=cli_env(), timeout=120,
                          cwd=config.parent)


def test_run_refuses_a_config_that_config_check_rejects(tmp_path: Path) -> None:
    config = tmp_path / "ketter.yaml"
    config.write_text(CONFIG)
    (tmp_path / "out" / "ingest").mkdir(parents=True)
    check = subprocess.run([*KETTER, "--config", str(config), "config", "check"],
                           capture_output=True, text=True, env=cli_env(), timeout=120)
    assert check.returncode == 2
    result = _run(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (f"error: {config}:3: route 'ingest': source {tmp_path / 'in' / 'typo'} does not "
            "exist") in result.stderr
    assert "not starting" in result.stderr and "Ketter is running" not in result.stdout
    assert not (tmp_path / "in").exists()  # nothing created on the local disk
    assert not (tmp_path / "state" / "ketter.db").exists()  # and nothing started


def test_run_never_creates_a_mount_point_it_was_told_about(tmp_path: Path) -> None:
    config = tmp_path / "ketter.yaml"
    config.write_text("state_dir: state\nroutes:\n"
                      "  - {name: dub, source: in, destination: /nonexistent-share/dub/in,\n"
                      "     destination_mount: /nonexistent-share}\n")
    result = _run(config, "--create-folders")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "destination /nonexistent-share/dub/in does not exist" in result.stderr
    assert (tmp_path / "in").is_dir()  # asked for, and it has no source_mount
    assert not Path("/nonexistent-share").exists()
