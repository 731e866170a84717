"""Temporary names carry the node (issue #18 item 6): on shared storage an
operator, and the checks, can tell which node wrote a temporary. Temporaries
of the old shape (no node, Ketter before #18) are still resumed, rolled
back and swept."""

from __future__ import annotations

import os

import pytest

from ketter.engine import (
    TransferContext,
    TransferSpec,
    copy_and_verify,
    find_orphans,
    inspect_source,
    place,
    resolve_destination,
    rollback,
)
from ketter.engine.context import node_token
from ketter.engine.paths import temp_name
from ketter.errors import ShutdownRequested

from .helpers import RecordingContext, ketter_names, read, write

MiB = 1024 * 1024
SPEC = TransferSpec(checkpoint_bytes=MiB, resume_min_bytes=2 * MiB)


@pytest.mark.parametrize(
    ("node", "token"),
    [
        ("n1", "n1"),
        ("node-a", "node_a"),  # '-' is the names' separator
        ("rack 2/slot.3", "rack_2_slot.3"),
        ("x" * 80, "x" * 32),
    ],
)
def test_the_tag_carries_the_sanitised_node(node: str, token: str) -> None:
    assert node_token(node) == token
    ctx = TransferContext("7", "c1", node=node)
    assert ctx.tag == f"7-c1@{token}"
    name = temp_name(ctx.tag, b"a.mov", "part")
    assert name == f".ketter-7-c1@{token}-a.mov.part".encode()
    assert TransferContext("7", "c1").tag == "7-c1"  # no node: the old shape


def _partial(bt: bytes, data: bytes, ctx: TransferContext) -> tuple[bytes, bytes, bytes]:
    src = bt + b"/src/big.mov"
    write(src, data)
    plan = inspect_source(SPEC, src)
    final = resolve_destination(SPEC, plan, bt + b"/dst")

    def stop(done: int, phase: str) -> None:
        if phase == "copy" and done >= 5 * MiB:
            raise ShutdownRequested()

    recording = RecordingContext(ctx.job_id, ctx.claim, node=ctx.node, on_progress=stop)
    with pytest.raises(ShutdownRequested):
        copy_and_verify(SPEC, plan, final, recording)
    part = bt + b"/dst/" + temp_name(ctx.tag, b"big.mov", "part")
    assert os.path.getsize(part) >= 5 * MiB
    return src, final, part


@pytest.mark.parametrize("old_node", [None, "node-a"], ids=["old-shape", "other-node"])
def test_a_partial_of_either_shape_is_resumed_by_another_node(
    bt: bytes, old_node: str | None
) -> None:
    data = os.urandom(12 * MiB + 3)
    src, final, part = _partial(bt, data, TransferContext("9", "old", node=old_node))
    ctx = TransferContext("9", "new", node="node-b")
    result = copy_and_verify(SPEC, inspect_source(SPEC, src), final, ctx, resume=True)
    assert result.resumed_from >= 4 * MiB
    assert result.temp_path.endswith(b".ketter-9-new@node_b-big.mov.part")
    place(SPEC, result, ctx)
    assert read(final) == data
    assert not os.path.exists(part)
    assert ketter_names(bt) == []


def test_orphans_and_rollback_of_both_shapes(bt: bytes) -> None:
    dst = bt + b"/dst"
    old_shape = dst + b"/" + temp_name("1-a", b"x", "part")
    new_shape = dst + b"/" + temp_name("1-b@n2", b"x", "part")
    active = dst + b"/" + temp_name("2-a@n1", b"y", "part")
    for path in (old_shape, new_shape, active):
        write(path, b"p")
    found = find_orphans(dst, lambda job: job == "2")
    assert sorted(found) == sorted([old_shape, new_shape])
    assert ketter_names(bt) == [active]
    # A claim's rollback removes its own temporaries, whichever node it names.
    assert rollback(dst, "2-a@n1") == [active]
    assert ketter_names(bt) == []
