"""The composition root (:mod:`ketter.node`, issue #16 items 1 and 7): the
chain a role writes with, its refusal before any write, and the actor in
the events' ``user`` column."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ketter.audit.chain import AuditChain, MayNotAppend, Principal
from ketter.audit.verify import Report, verify_db
from ketter.config import load_config
from ketter.errors import ConfigError
from ketter.node import ROLES, Node


def test_principal_user_column() -> None:
    # os-user records the name alone: chains written before #16 read the same.
    assert Principal("os-user", "ketter").as_user() == "ketter"
    assert Principal("token", "t-42").as_user() == "token:t-42"


def test_only_the_schema_role_and_the_readers_append_no_event() -> None:
    readers = {name for name, role in ROLES.items() if not role.appends_events}
    assert readers == {"db-upgrade", "read"}


def test_a_keyed_node_refuses_a_role_without_the_key_before_opening_the_store(
    tmp_path: Path, write_config
) -> None:
    config = load_config(
        write_config(f"state_dir: {tmp_path / 'state'}\naudit: {{hmac_key_file: "
                     f"{tmp_path / 'missing.key'}}}\n")
    )
    with pytest.raises(ConfigError, match="ketter enqueue records audit events"):
        Node.from_config(config, "enqueue")
    assert not os.path.exists(config.db_path)
    # The schema role needs no key and appends nothing.
    node = Node.from_config(config, "db-upgrade")
    assert node.chain.key is None and not node.chain.may_append
    assert node.store is not None
    with node.store.transaction(), pytest.raises(MayNotAppend):
        node.store.append_event("workers_started", now=1.0, details={})
    node.close()


def test_the_actor_is_recorded_and_the_chain_verifies(tmp_path: Path, write_config) -> None:
    (tmp_path / "audit.key").write_bytes(b"a-key-for-the-test\n")
    config = load_config(
        write_config(f"state_dir: {tmp_path / 'state'}\nnode: n7\naudit: {{hmac_key_file: "
                     f"{tmp_path / 'audit.key'}}}\n")
    )
    node = Node.from_config(config, "workers")
    assert node.chain == AuditChain(node="n7", key=b"a-key-for-the-test",
                                    actor=node.chain.actor)
    assert node.chain.actor.kind == "os-user"
    store = node.store
    assert store is not None
    with store.transaction():
        store.append_event("workers_started", now=1.0, details={})
        store.append_event("workers_stopped", now=2.0, details={},
                           actor=Principal("token", "api-1"))
    rows = [(e.node, e.user) for e in store.events_after(0, limit=10)]
    assert rows == [("n7", node.chain.actor.name), ("n7", "token:api-1")]
    report = Report()
    verify_db(store, key=b"a-key-for-the-test", marks=[], report=report)
    assert report.ok, report.problems
    node.close()
