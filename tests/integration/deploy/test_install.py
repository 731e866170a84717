"""deploy/install.sh with DESTDIR: files and units laid out, idempotent, an
existing config kept, uninstall keeps the records. (Without DESTDIR it
creates a user and a venv under /opt: never in tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "deploy" / "install.sh"
UNITS = ("ketter-workers.service", "ketter-watcher.service", "ketter.target")


def _install(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DESTDIR=str(destdir),
               KETTER_PYTHON=os.path.join(sys.prefix, "bin", "python"))
    env.pop("KETTER_CONFIG", None)
    result = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_install_with_destdir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = _install(root, "--wheelhouse", str(tmp_path / "unused"))
    config = root / "etc" / "ketter" / "ketter.yaml"
    example = ROOT / "configs" / "ketter.example.yaml"
    assert config.read_bytes() == example.read_bytes()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    assert (root / "var" / "lib" / "ketter").is_dir()
    assert (root / "opt" / "ketter" / "share" / "doc" / "ketter" / "operations.md").is_file()
    for unit in UNITS:
        # rendered for /opt/ketter and /etc/ketter: the committed examples
        rendered = (root / "etc" / "systemd" / "system" / unit).read_text()
        assert rendered == (ROOT / "deploy" / unit).read_text()
    out = first.stdout
    assert "wrote /etc/ketter/ketter.yaml from the example" in out
    for skipped in ("creating the system user", "the venv /opt/ketter",
                    "systemctl daemon-reload", "ownership"):
        assert f"skipped: {skipped}" in out, out
    assert "systemctl enable --now ketter.target" in out
    assert not (root / "opt" / "ketter" / "bin").exists()

    # idempotent: a second run changes nothing
    before = _tree(root)
    second = _install(root)
    assert _tree(root) == before
    assert "kept the existing /etc/ketter/ketter.yaml" in second.stdout

    # an edited config survives, and the units follow its routes
    text = config.read_text().replace("/mnt/qc/inbox", "/mnt/qc/incoming")
    config.write_text(text)
    _install(root)
    assert config.read_text() == text
    workers = (root / "etc" / "systemd" / "system" / "ketter-workers.service").read_text()
    assert "-/mnt/qc/incoming" in workers and "/mnt/qc/inbox" not in workers

    # uninstall: units and venv go, config and state stay
    removed = _install(root, "--uninstall")
    assert not any((root / "etc" / "systemd" / "system" / u).exists() for u in UNITS)
    assert not (root / "opt" / "ketter").exists()
    assert config.read_text() == text
    assert (root / "var" / "lib" / "ketter").is_dir()
    assert "Kept" in removed.stdout


def test_refuses_to_run_for_real_without_root(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        return  # the check is for ordinary users; root would really install
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "run as root" in result.stderr
