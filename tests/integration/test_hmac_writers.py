"""Every CLI command that writes audit events, with and without
``audit.hmac_key_file`` (issue #16 item 1): ``audit verify --db`` passes
after each. ``ketter enqueue`` used to record unkeyed events on a keyed node
(``db upgrade && enqueue && audit verify --db`` said ``BROKEN … altered``)
and ``ketter requeue`` never configured the chain. A user who cannot read the
key is refused (exit 2) by every command that appends events, before
anything is written; ``db upgrade`` appends none and needs no key."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env

NOBODY = 65534
KEY = b"c2VjcmV0LWtleS1mb3ItdGhlLWNoYWlu\n"


@pytest.fixture
def node_dir() -> Iterator[Path]:
    """A folder another account can reach (pytest's tmp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ketter-hmac-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(root: Path, *, keyed: bool) -> Path:
    for name in ("in", "out", "state", "one"):
        (root / name).mkdir(exist_ok=True)
    audit = ""
    if keyed:
        key = root / "audit.key"
        key.write_bytes(KEY)
        key.chmod(0o600)  # root's only
        audit = f"audit: {{hmac_key_file: {key}}}\n"
    config = root / "ketter.yaml"
    config.write_text(
        f"state_dir: {root / 'state'}\nnode: n1\nworkers: 1\n{audit}"
        "lease: {ttl: 5s, heartbeat: 1s, sweep_interval: 1s}\n"
        f"routes:\n  - {{name: r, source: {root / 'in'}, destination: {root / 'out'}, "
        "stable_seconds: 0.3, poll_interval: 0.2s}\n"
    )
    config.chmod(0o644)
    return config


def ketter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KETTER, "--config", str(config), *args], env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def assert_verifies(config: Path, after: str) -> None:
    verified = ketter(config, "audit", "verify", "--db")
    assert verified.returncode == 0, f"after {after}: {verified.stdout}{verified.stderr}"
    assert "altered" not in verified.stdout


def events(config: Path) -> list[tuple[str, int | None, str]]:
    with sqlite3.connect(f"file:{config.parent / 'state' / 'ketter.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT event, job_id, user FROM events ORDER BY id").fetchall()


def job_state(config: Path, job_id: int) -> str | None:
    with sqlite3.connect(f"file:{config.parent / 'state' / 'ketter.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


def run_until(config: Path, args: list[str], done: Callable[[], bool], what: str) -> None:
    """Start a service, wait for ``done``, stop it gracefully (exit 0)."""
    proc = subprocess.Popen([*KETTER, "--config", str(config), *args], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not done():
            assert proc.poll() is None, f"{args} exited early: {proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err


def write_everything(root: Path, config: Path) -> None:
    """Each writing command once, ``audit verify --db`` after each."""
    upgraded = ketter(config, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert_verifies(config, "db upgrade")

    (root / "in" / "a.mov").write_bytes(os.urandom(8192))
    enqueued = ketter(config, "enqueue", str(root / "in" / "a.mov"), "--route", "r")
    assert enqueued.returncode == 0, enqueued.stderr
    assert_verifies(config, "enqueue")

    run_until(config, ["workers"], lambda: job_state(config, 1) == "completed",
              "the workers to deliver a.mov")
    assert (root / "out" / "a.mov").read_bytes() == (root / "in" / "a.mov").read_bytes()
    assert_verifies(config, "workers")

    (root / "in" / "b.mov").write_bytes(os.urandom(8192))
    run_until(config, ["run"], lambda: (root / "out" / "b.mov").exists()
              and job_state(config, 2) == "completed", "ketter run to deliver b.mov")
    assert_verifies(config, "run")

    (root / "c.mov").write_bytes(os.urandom(4096))
    copied = ketter(config, "transfer", str(root / "c.mov"), str(root / "one"))
    assert copied.returncode == 0, copied.stderr
    assert_verifies(config, "transfer")

    # The same name with other bytes, --conflict fail: a failed job to re-queue.
    (root / "d" ).mkdir()
    (root / "d" / "c.mov").write_bytes(os.urandom(4096))
    refused = ketter(config, "transfer", str(root / "d" / "c.mov"), str(root / "one"))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert_verifies(config, "a failed transfer")
    failed = job_state(config, 4)
    assert failed == "failed", failed

    requeued = ketter(config, "requeue", "4")
    assert requeued.returncode == 0, requeued.stdout + requeued.stderr
    assert_verifies(config, "requeue")

    shipped = ketter(config, "audit", "ship")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    verified = ketter(config, "audit", "verify")  # the log as well as the store
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_every_writing_command_leaves_a_chain_that_verifies(node_dir: Path, keyed: bool) -> None:
    config = write_config(node_dir, keyed=keyed)
    write_everything(node_dir, config)
    written = events(config)
    # Item 7: the actor of every event is the OS user of the writing process.
    assert {user for _, _, user in written} == {"root"}
    assert [e for e, job, _ in written if job == 4][-1] == "requeue"


def state_files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((root / "state").rglob("*")) if path.is_file()
    }


def as_nobody(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ketter ARGS`` as nobody: an operator's account that may not read the
    root-only key. Imported as root first (the interpreter lives in a private
    folder), then setuid before the command runs."""
    script = textwrap.dedent(f"""
        import os, sys, pkgutil, importlib, importlib.readers, encodings.idna
        import playhouse.migrate
        import ketter
        for package in (ketter,):
            for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if mod.name.endswith("__main__"):  # it would run the CLI
                    continue
                try:  # a module that cannot load fails the command below anyway
                    importlib.import_module(mod.name)
                except Exception:
                    pass
        from ketter.cli.main import build_parser, main
        build_parser()
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        sys.exit(main({["--config", str(config), *args]!r}))
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cli_env(), timeout=120, cwd=config.parent)


@pytest.mark.root
def test_without_read_access_to_the_key_writing_commands_write_nothing(node_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the commands as another account (nobody)")
    config = write_config(node_dir, keyed=True)
    write_everything(node_dir, config)
    # Everything writable by nobody but the key: only the key can refuse.
    for path in [node_dir / name for name in ("in", "out", "state", "one")]:
        for sub in [path, *path.rglob("*")]:
            sub.chmod(0o777 if sub.is_dir() else 0o666)
    (node_dir / "in" / "e.mov").write_bytes(os.urandom(4096))
    (node_dir / "in" / "e.mov").chmod(0o644)
    before = state_files(node_dir)
    commands = {
        "enqueue": ["enqueue", str(node_dir / "in" / "e.mov"), "--route", "r"],
        "requeue": ["requeue", "--failed"],
        "transfer": ["transfer", str(node_dir / "in" / "e.mov"), str(node_dir / "one")],
        "workers": ["workers"],
        "watcher": ["watcher"],
        "run": ["run"],
        "audit ship": ["audit", "ship"],
        "token create": ["token", "create", "t", "--scopes", "audit:read"],
        "token revoke": ["token", "revoke", "t"],
    }
    for name, args in commands.items():
        done = as_nobody(config, *args)
        assert done.returncode == 2, f"{name}: {done.stdout}{done.stderr}"
        assert "audit.hmac_key_file" in done.stderr and "cannot be read" in done.stderr, name
        assert state_files(node_dir) == before, f"{name} wrote to the state folder"
    assert sorted(os.listdir(node_dir / "one")) == ["c.mov"]
    # db upgrade writes the schema, never an event: no key needed.
    upgraded = as_nobody(config, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert_verifies(config, "db upgrade as nobody")
