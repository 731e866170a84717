"""An interpreter on which ``python -I -m ketter`` runs this checkout.

The units run ``/opt/ketter/bin/python -I -m ketter``; ``-I`` ignores
``PYTHONPATH``, so a test that runs a unit's command as written needs an
interpreter whose own site-packages see this checkout (in a developer's
tree the test venv's editable install may point at another one). A venv
without pip and a ``.pth`` file: the checkout first, then the test venv's
packages (peewee, huey...), whose own ``.pth`` files are not read.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def make_isolated_python(folder: Path) -> str:
    """Create the venv under ``folder``; returns its interpreter."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(purelib, "ketter-checkout.pth").write_text(
        f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n", encoding="utf-8"
    )
    return str(python)
