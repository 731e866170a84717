"""The wheel ships ketter/ (with the queue, ketter/queue.py, the workers
process, ketter/workers/, and ketter/store/migrations/), and works from `/`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_installs_and_upgrades_a_new_state_dir(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # Build from a clean copy: setuptools never prunes build/lib, so a module
    # moved or deleted since an earlier build in the checkout would ship again.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                    "--outdir", str(dist), str(src)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = dist.glob("ketter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ketter/store/migrations/0001_initial.py" in names
    assert "ketter/workers/__init__.py" in names
    assert "ketter/workers/consumer.py" in names
    # One top-level package (#15: nothing another distribution could overwrite).
    assert {n.split("/")[0] for n in names if not n.startswith("ketter-")} == {"ketter"}
    assert "ketter/queue.py" in names
    assert "ketter/workers/app.py" not in names  # moved to ketter/queue.py (#16 item 2)
    assert "ketter/cli/main.py" in names
    # the unit templates `ketter deploy units` renders (#16 item 8)
    templates = sorted(p.name for p in (ROOT / "ketter" / "deploy" / "templates").iterdir())
    assert {"ketter-workers.service", "ketter-watcher.service", "ketter.target"} <= set(templates)
    for name in templates:
        assert f"ketter/deploy/templates/{name}" in names
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    config = tmp_path / "ketter.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    result = subprocess.run([str(venv / "bin" / "ketter"), "--config", str(config), "db",
                             "upgrade"], cwd="/", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "applied 0001_initial" in result.stdout
    assert (tmp_path / "state" / "ketter.db").exists()
    # the templates load from the installed wheel, not from a checkout
    units = subprocess.run([str(venv / "bin" / "ketter"), "--config", str(config), "deploy",
                            "units"], cwd="/", capture_output=True, text=True, timeout=120)
    assert units.returncode == 0, units.stderr
    assert "ExecStart=" in units.stdout and "# ===== ketter.target =====" in units.stdout
