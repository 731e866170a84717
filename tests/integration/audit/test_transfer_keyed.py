"""``ketter transfer`` on a keyed node signs its events with the node's key
(review of issue #14 finding 18): it used to record unkeyed events, ship
them, and ``audit verify`` then called them altered. A user who cannot read
the key is refused (exit 2) before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env

NOBODY = 65534


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, *args], env=cli_env(), capture_output=True, text=True, timeout=120, **kw
    )


def test_transfer_on_a_keyed_node_verifies(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "src" / "a.mov").write_bytes(os.urandom(8192))
    key = tmp_path / "audit.key"
    key.write_bytes(b"c2VjcmV0LWtleS1mb3ItdGhlLWNoYWlu\n")
    key.chmod(0o600)
    config = tmp_path / "ketter.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nnode: n1\naudit: {{hmac_key_file: {key}}}\n"
    )
    done = run("transfer", "--config", str(config), str(tmp_path / "src" / "a.mov"),
               str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    verified = run("audit", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "altered" not in verified.stdout


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another account can reach (pytest's tmp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ketter-keyed-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root
def test_transfer_without_read_access_to_the_key_writes_nothing(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the transfer as another account (nobody)")
    for name in ("src", "out", "state"):
        (shared_dir / name).mkdir()
        (shared_dir / name).chmod(0o777)
    (shared_dir / "src" / "a.mov").write_bytes(os.urandom(8192))
    (shared_dir / "src" / "a.mov").chmod(0o644)
    key = shared_dir / "audit.key"
    key.write_bytes(b"c2VjcmV0LWtleS1mb3ItdGhlLWNoYWlu\n")
    key.chmod(0o600)  # root's only
    config = shared_dir / "ketter.yaml"
    config.write_text(
        f"state_dir: {shared_dir / 'state'}\nnode: n1\naudit: {{hmac_key_file: {key}}}\n"
    )
    config.chmod(0o644)
    # Import as root (the interpreter lives in a private folder), then drop
    # to nobody: an operator's account that may not read the root-only key.
    argv = ["--config", str(config), "transfer", str(shared_dir / "src" / "a.mov"),
            str(shared_dir / "out")]
    script = textwrap.dedent(f"""
        import os, sys, pwd, encodings.idna
        import ketter.cli.transfer, ketter.audit.chain, ketter.engine.copyfile
        import ketter.engine.source, ketter.jobs.claim, ketter.jobs.create
        import ketter.jobs.lease, ketter.jobs.routes, ketter.jobs.runner, ketter.store
        import ketter.config.credentials
        from ketter.cli.main import build_parser, main
        build_parser()
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        sys.exit(main({argv!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cli_env(), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "audit.hmac_key_file" in done.stderr and "cannot be read" in done.stderr
    assert "ketter enqueue" in done.stderr
    assert os.listdir(shared_dir / "state") == []
    assert os.listdir(shared_dir / "out") == []
