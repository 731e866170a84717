"""Audit across nodes (issue #18 item 5): several nodes write ONE chain in
PostgreSQL (every write transaction takes the chain lock first), each node's
log holds only its own events, and ``ketter audit verify`` on each node
checks the whole chain in the database and that node's log against it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg

from tests.conftest import KETTER, cli_env


def _config(root: Path, node: str, dsn: str) -> Path:
    (root / node / "state").mkdir(parents=True, exist_ok=True)
    config = root / node / "ketter.yaml"
    config.write_text(
        f"state_dir: {root / node / 'state'}\nnode: {node}\n"
        f"store: {{backend: postgresql, dsn: '{dsn}'}}\n"
    )
    return config


def _ketter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETTER, *args],
        capture_output=True, text=True, env=cli_env(KETTER_CONFIG=str(config)), timeout=180,
    )


def _log_nodes(config: Path) -> list[tuple[int, str]]:
    log = config.parent / "state" / "logs" / "audit.jsonl"
    lines = [json.loads(raw) for raw in log.read_text().splitlines()]
    return [(line["event.sequence"], line["host.name"]) for line in lines]


def test_two_nodes_one_chain_each_log_its_own(pg_dsn: str, tmp_path: Path) -> None:
    nodes = {name: _config(tmp_path, name, pg_dsn) for name in ("n1", "n2")}
    out = tmp_path / "out"
    out.mkdir()
    # Interleaved transfers: the chain in the database alternates nodes.
    for i in range(4):
        name = ("n1", "n2")[i % 2]
        src = tmp_path / f"clip{i}.wav"
        src.write_bytes(os.urandom(50_000 + i))
        done = _ketter(nodes[name], "transfer", str(src), str(out))
        assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_dsn) as conn:
        chain = conn.execute("SELECT id, node FROM events ORDER BY id").fetchall()
    assert {node for _, node in chain} == {"n1", "n2"}
    assert [seq for seq, _ in chain] == list(range(1, len(chain) + 1))
    for name, config in nodes.items():
        shipped = _ketter(config, "audit", "ship")
        assert shipped.returncode == 0, shipped.stderr
        logged = _log_nodes(config)
        # Only its own events, every one of them, in order.
        assert logged == [(seq, node) for seq, node in chain if node == name]
        verified = _ketter(config, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "OK" in verified.stdout
        # A copy of the log alone (the SIEM's): its gaps cannot be told
        # from other nodes' records without the job store, and say so.
        log = config.parent / "state" / "logs" / "audit.jsonl"
        alone = _ketter(config, "audit", "verify", "--no-db", str(log))
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert "gap(s) between its records not checked" in alone.stdout
        # The node's own log and high-water mark without the job store: the
        # mark may pass other nodes' records after its last line (a note).
        offline = _ketter(config, "audit", "verify", "--no-db")
        assert offline.returncode == 0, offline.stdout + offline.stderr
    # A line of n1's log deleted: n1 fails naming the record, n2 still passes.
    log = nodes["n1"].parent / "state" / "logs" / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    gone = json.loads(lines[2])["event.sequence"]
    log.write_text("".join(lines[:2] + lines[3:]))
    broken = _ketter(nodes["n1"], "audit", "verify")
    assert broken.returncode == 1, broken.stdout
    assert f"record seq {gone} of node n1" in broken.stdout, broken.stdout
    assert _ketter(nodes["n2"], "audit", "verify").returncode == 0
    log.write_text("".join(lines))
    assert _ketter(nodes["n1"], "audit", "verify").returncode == 0
    # One event row of n2 tampered with: verification on BOTH nodes fails
    # and names it (n1 checks the whole chain in the database too).
    victim = next(seq for seq, node in chain if node == "n2")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("UPDATE events SET details = '{\"x\":1}' WHERE id = %s", (victim,))
    for config in nodes.values():
        tampered = _ketter(config, "audit", "verify")
        assert tampered.returncode == 1, tampered.stdout
        assert f"events seq {victim}: altered" in tampered.stdout, tampered.stdout


def test_the_newest_own_events_missing_from_the_log_fail(pg_dsn: str, tmp_path: Path) -> None:
    """Another node's newer events are not this node's to ship; its own are."""
    nodes = {name: _config(tmp_path, name, pg_dsn) for name in ("n1", "n2")}
    out = tmp_path / "out"
    out.mkdir()
    for i, name in enumerate(("n1", "n2", "n1")):
        src = tmp_path / f"take{i}.wav"
        src.write_bytes(os.urandom(10_000))
        assert _ketter(nodes[name], "transfer", str(src), str(out)).returncode == 0
    for config in nodes.values():
        assert _ketter(config, "audit", "ship").returncode == 0
    # n2's log ends before n1's last transfer: right, nothing of n2's is newer.
    assert _ketter(nodes["n2"], "audit", "verify").returncode == 0
    log = nodes["n1"].parent / "state" / "logs" / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])["event.sequence"]
    log.write_text("".join(lines[:-1]))
    cut = _ketter(nodes["n1"], "audit", "verify", "--lag", "0")
    assert cut.returncode == 1, cut.stdout
    assert f"record seq {last} of node n1" in cut.stdout, cut.stdout
