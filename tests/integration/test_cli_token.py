"""``ketter token create|list|revoke`` as an operator runs them: real
processes on a real config. The secret is printed once, alone on stdout;
neither it nor its hash is in the audit chain, the JSONL audit log or
``token list``; the store holds the hash only; a keyed chain still
verifies; what the CLI makes is what the API's policy accepts."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from ketter.access.policy import Unauthenticated, authenticate
from ketter.audit.chain import AuditChain
from ketter.store.sqlite import open_job_store
from tests.integration.test_cli import make_config, run

SECRET = re.compile(r"ketter_[A-Za-z0-9_-]{43}")


def upgraded(tmp_path: Path, extra: str = "") -> Path:
    config = make_config(tmp_path, extra)
    done = run("db", "upgrade", config=config)
    assert done.returncode == 0, done.stderr
    return config


def db_path(config: Path) -> Path:
    return config.parent / "state" / "ketter.db"


def events(config: Path) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(f"file:{db_path(config)}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT event, user, details FROM events ORDER BY id").fetchall()
    return [(event, user, json.loads(details)) for event, user, details in rows]


def test_create_prints_the_secret_alone_then_list_and_revoke(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    made = run(
        "token", "create", "mam", "--scopes", "transfers:write,transfers:read",
        "--routes", "dub-*,r1", "--expires", "90d", config=config, SUDO_USER="alice",
    )
    assert made.returncode == 0, made.stderr
    assert SECRET.fullmatch(made.stdout.rstrip("\n")), made.stdout  # one line, nothing else
    assert made.stdout.count("\n") == 1
    assert "cannot be shown again" in made.stderr and "never expires" not in made.stderr

    listed = run("token", "list", config=config)
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header.split() == ["name", "state", "scopes", "routes", "created", "by", "expires",
                              "last_used", "revoked"]
    assert line.split()[:4] == ["mam", "live", "transfers:read,transfers:write", "dub-*,r1"]

    revoked = run("token", "revoke", "mam", config=config, SUDO_USER="bob")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    again = run("token", "revoke", "mam", config=config)
    assert again.returncode == 1 and "no token named 'mam'" in again.stderr
    (row,) = json.loads(run("token", "list", "--json", config=config).stdout)
    assert row["state"] == "revoked" and row["revoked_at"] is not None
    assert row["expires_at"] - row["created_at"] == pytest.approx(90 * 86400)
    assert [(e, d["token"], d.get("by")) for e, _, d in events(config)] == [
        ("token_created", "mam", "alice"),
        ("token_revoked", "mam", "bob"),
    ]


def test_no_expiry_is_allowed_shown_as_never_and_noted(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    made = run("token", "create", "siem", "--scopes", "audit:read", config=config)
    assert made.returncode == 0, made.stderr
    assert "never expires" in made.stderr and "docs/access.md" in made.stderr
    listed = run("token", "list", config=config).stdout
    assert "never" in listed.splitlines()[1]
    # `--expires never` says so on purpose: no note
    made = run("token", "create", "prom", "--scopes", "metrics:read", "--expires", "never",
               config=config)
    assert made.returncode == 0 and "note:" not in made.stderr


def test_neither_the_secret_nor_its_hash_is_anywhere_but_the_store(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    outputs: list[str] = []
    made = run("token", "create", "mam", "--scopes", "transfers:read", "--routes", "*",
               config=config)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    outputs.append(made.stderr)
    for args in (("token", "list"), ("token", "list", "--json"), ("token", "revoke", "mam"),
                 ("token", "list"), ("audit", "ship"), ("audit", "verify")):
        done = run(*args, config=config)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs += [done.stdout, done.stderr]
    for text in outputs:
        assert secret not in text and digest not in text

    state = config.parent / "state"
    log = state / "logs" / "audit.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event.action"] for line in lines] == ["token_created",
                                                                    "token_revoked"]
    assert json.loads(lines[0])["user.target.name"] == "mam"
    # every file of the state folder (the store, its WAL, the logs): never the secret
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data, path
            if path.suffix == ".jsonl":
                assert digest.encode() not in data, path
    # the chain: no event holds the hash; the store has it in api_tokens alone
    with sqlite3.connect(f"file:{db_path(config)}?mode=ro", uri=True) as db:
        assert all(digest not in " ".join(map(str, row))
                   for row in db.execute("SELECT * FROM events"))
        assert db.execute("SELECT secret_sha256 FROM api_tokens").fetchall() == [(digest,)]


def test_what_the_cli_makes_the_policy_accepts_until_revoked(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    secret = run("token", "create", "qc", "--scopes", "transfers:cancel", "--routes", "r?",
                 config=config).stdout.strip()
    store = open_job_store(db_path(config), AuditChain(node="api"))
    try:
        grant = authenticate(store, secret, now=__import__("time").time())
        assert grant.token == "qc"
        assert grant.permits("transfers:cancel", "r1")
        assert not grant.permits("transfers:cancel", "r10")
        assert not grant.permits("transfers:read", "r1")
    finally:
        store.close()
    assert run("token", "revoke", "qc", config=config).returncode == 0
    store = open_job_store(db_path(config), AuditChain(node="api"))
    try:
        with pytest.raises(Unauthenticated) as caught:
            authenticate(store, secret, now=__import__("time").time())
        assert (caught.value.reason, caught.value.token) == ("revoked", "qc")
    finally:
        store.close()
    listed = json.loads(run("token", "list", "--json", config=config).stdout)
    assert listed[0]["last_used_at"] is not None  # the one use, stamped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad name", "--scopes", "audit:read"), "a token name is 1 to 64"),
        (("t", "--scopes", "transfer:read", "--routes", "*"), "unknown scope 'transfer:read'"),
        (("t", "--scopes", "transfers:read"), "--routes '*' for every route"),
        (("t", "--scopes", "routes:pause", "--routes", "dub/*"), "a route glob is"),
        (("t", "--scopes", "audit:read", "--expires", "soon"), "--expires: expected a duration"),
        (("t", "--scopes", "audit:read", "--expires", "0"), "--expires: give a lifetime"),
        (("t", "--scopes", ""), "give at least one scope"),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    config = upgraded(tmp_path)
    done = run("token", "create", *args, config=config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and done.stdout == ""
    assert events(config) == []
    assert run("token", "list", config=config).stdout.strip() == "(none)"


def test_a_taken_name_exits_1_with_how_to_fix_it(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    assert run("token", "create", "t", "--scopes", "audit:read", config=config).returncode == 0
    taken = run("token", "create", "t", "--scopes", "audit:read", config=config)
    assert taken.returncode == 1 and taken.stdout == ""
    assert "ketter token revoke t" in taken.stderr
    assert len(events(config)) == 1


def test_a_keyed_chain_verifies_after_create_and_revoke(tmp_path: Path) -> None:
    key = tmp_path / "audit.key"
    key.write_bytes(b"c2VjcmV0LWtleS1mb3ItdGhlLWNoYWlu\n")
    key.chmod(0o600)
    config = upgraded(tmp_path, f"audit: {{hmac_key_file: {key}}}\n")
    assert run("token", "create", "t", "--scopes", "audit:read", config=config).returncode == 0
    assert run("token", "revoke", "t", config=config).returncode == 0
    verified = run("audit", "verify", "--db", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "altered" not in verified.stdout
    assert [e for e, _, _ in events(config)] == ["token_created", "token_revoked"]


def test_list_on_a_store_not_upgraded_says_what_to_do(tmp_path: Path) -> None:
    config = upgraded(tmp_path)
    with sqlite3.connect(db_path(config)) as db:  # as before migration 0011
        db.execute("DROP TABLE api_tokens")
        db.execute("DELETE FROM schema_migration WHERE name = '0011_api_tokens'")
    listed = run("token", "list", config=config)
    assert listed.returncode == 1 and "ketter db upgrade" in listed.stderr
    upgrade = run("db", "upgrade", config=config)
    assert upgrade.returncode == 0 and "0011_api_tokens" in upgrade.stdout
    assert run("token", "list", config=config).stdout.strip() == "(none)"
