"""The wheel and the sdist pass the packaging tools: ``twine check --strict``
(metadata a package index accepts), ``check-wheel-contents`` (one top-level
package, ``ketter``: generic top-level names such as ``workers/`` or
``migrations/`` could be overwritten by another distribution), and a PEP 639
licence (``License-Expression``; the ``license = { text = … }`` table is
deprecated and setuptools stops accepting it in 2027).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
#: Migration files are loaded by path by the migrator, and their names
#: (``0001_initial.py``) are not importable: the one W004 allowed.
MIGRATION = re.compile(r"ketter/store/migrations/\d{4}_\w+\.py")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(
            f"{name} is not installed in {BIN}: pip install -e '.[test]' -c constraints.txt"
        )
    return str(path)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The wheel, the sdist and the build's output, built from a clean copy."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__"
        ),
    )
    out = tmp / "dist"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("ketter-*.whl")
    (sdist,) = out.glob("ketter-*.tar.gz")
    return wheel, sdist, done.stdout + done.stderr


@pytest.mark.slow
def test_licence_metadata_is_pep_639(dist: tuple[Path, Path, str]) -> None:
    wheel, _, log = dist
    assert "`project.license` as a TOML table is deprecated" not in log
    assert "License classifiers are deprecated" not in log
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(name).decode("utf-8")
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: LicenseRef-Proprietary" in headers
    assert not [h for h in headers if h.startswith("License:")]
    version = next(h for h in headers if h.startswith("Metadata-Version:")).split(": ")[1]
    assert tuple(map(int, version.split("."))) >= (2, 4)


@pytest.mark.slow
def test_twine_check_passes(dist: tuple[Path, Path, str]) -> None:
    wheel, sdist, _ = dist
    done = subprocess.run(
        [_tool("twine"), "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_check_wheel_contents_passes(dist: tuple[Path, Path, str]) -> None:
    """Only ``ketter/`` at the top (``workers`` and ``migrations`` live under
    it); W004 only for the migration files."""
    wheel, _, _ = dist
    tool = _tool("check-wheel-contents")
    done = subprocess.run(
        [tool, "--toplevel", "ketter", "--ignore", "W004", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    w004 = subprocess.run(
        [tool, "--select", "W004", str(wheel)], capture_output=True, text=True, timeout=300
    )
    listed = [line.strip() for line in w004.stdout.splitlines() if line.startswith("  ")]
    assert all(MIGRATION.fullmatch(p) for p in listed), listed
