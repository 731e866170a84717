"""The tests run the command line as the units do, ``python -m ketter``
(ketter/__main__.py), and it prints nothing but its answer.

``python -m ketter.cli.main`` printed runpy's ``RuntimeWarning`` (a module of
the already imported ``ketter.cli`` package run again as ``__main__``) in
every test subprocess.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import KETTER, ROOT, cli_env


def test_the_tests_command_line_prints_no_warning() -> None:
    done = subprocess.run(
        [*KETTER, "--version"], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith("ketter "), done.stdout


def test_no_test_runs_the_old_module_form() -> None:
    old = '"-m", "ketter.cli.main"'
    found = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if old in path.read_text(encoding="utf-8") and path != Path(__file__)
    ]
    assert found == [], f"run `python -m ketter` instead of {old} in {found}"
