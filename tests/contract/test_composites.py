"""Contract: every composite operation (primitive reads and writes plus
their audit events in one transaction, by Ketter's rules) is written once,
in :mod:`ketter.store.composite`, and every backend runs that one: none
overrides it, and each implements every primitive it stands on (issue #18:
the PostgreSQL store joins by writing primitives only)."""

from __future__ import annotations

import inspect

import pytest

from ketter.store.composite import (
    CompositeCore,
    CompositeHeartbeats,
    CompositeJobs,
    CompositeLeases,
    CompositeManifests,
    CompositeMetrics,
    CompositeRoutes,
)
from ketter.store.memory import MemoryJobStore
from ketter.store.postgres import PgJobStore
from ketter.store.sqlite import SqliteJobStore

COMPOSITES = (
    CompositeCore,
    CompositeJobs,
    CompositeLeases,
    CompositeRoutes,
    CompositeManifests,
    CompositeHeartbeats,
    CompositeMetrics,
)
STORES = (SqliteJobStore, MemoryJobStore, PgJobStore)


def _operations(composite: type) -> list[str]:
    """The operations ``composite`` writes (not the primitives it declares)."""
    return sorted(
        name
        for name, member in vars(composite).items()
        if inspect.isfunction(member) and not getattr(member, "__isabstractmethod__", False)
    )


def test_the_composites_hold_the_operations_named_in_the_port() -> None:
    assert {
        "append_event",
        "compare_and_set",
        "set_attempt",
        "get_job",
        "renew_lease",
        "advance",
        "refusal",
        "claim_next",
        "claim_batch",
        "release_lease",
        "due_job_ids",
        "make_due_now",
        "pause_route",
        "resume_route",
        "room_pauses_before",
        "replace_manifest",
        "record_file_hashes",
        "commit_together",
        "beat",
        "scrape_facts",
    } <= {name for composite in COMPOSITES for name in _operations(composite)}


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.__name__)
@pytest.mark.parametrize("composite", COMPOSITES, ids=lambda c: c.__name__)
def test_no_backend_writes_a_composite_operation_again(store: type, composite: type) -> None:
    assert issubclass(store, composite)
    again = [
        name
        for name in _operations(composite)
        if getattr(store, name) is not getattr(composite, name)
    ]
    assert again == [], f"{store.__name__} overrides {again}: write the primitive, not the rule"


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.__name__)
def test_every_backend_implements_every_primitive(store: type) -> None:
    assert not inspect.isabstract(store), sorted(getattr(store, "__abstractmethods__", ()))
    primitives = {
        name
        for composite in COMPOSITES
        for name, member in vars(composite).items()
        if getattr(member, "__isabstractmethod__", False)
    }
    for name in primitives:
        owner = next(k for k in store.__mro__ if name in vars(k))
        # A backend's own module, or the SQL both SQL backends share.
        assert owner.__module__.startswith(
            (
                "ketter.store.sqlite.",
                "ketter.store.memory.",
                "ketter.store.postgres.",
                "ketter.store.sql.",
            )
        ), f"{store.__name__}.{name} comes from {owner.__module__}"
