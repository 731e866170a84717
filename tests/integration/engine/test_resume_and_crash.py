"""Resume of large partials, real SIGKILLs at fault points, rollback, orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

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
from ketter.engine.paths import temp_name
from ketter.errors import ShutdownRequested
from ketter.store.models import Job
from tests.conftest import cli_env

from .helpers import RecordingContext, ketter_names, read, write
from .workers_bench import Workers

MiB = 1024 * 1024
SPEC = TransferSpec(checkpoint_bytes=MiB, resume_min_bytes=2 * MiB)


def _stop_after(n: int) -> Callable[[int, str], None]:
    def hook(done: int, phase: str) -> None:
        if phase == "copy" and done >= n:
            raise ShutdownRequested()

    return hook


def _partial_by_older_claim(bt: bytes, data: bytes) -> tuple[bytes, bytes]:
    src = bt + b"/src/big.mov"
    write(src, data)
    plan = inspect_source(SPEC, src)
    final = resolve_destination(SPEC, plan, bt + b"/dst")
    ctx = RecordingContext("9", "old", on_progress=_stop_after(5 * MiB))
    with pytest.raises(ShutdownRequested):
        copy_and_verify(SPEC, plan, final, ctx)
    part = bt + b"/dst/" + temp_name("9-old", b"big.mov", "part")
    assert os.path.getsize(part) >= 5 * MiB  # kept for a later claim
    return src, final


def test_resume_adopts_an_older_claims_partial(bt: bytes) -> None:
    data = os.urandom(12 * MiB + 5)
    src, final = _partial_by_older_claim(bt, data)
    ctx = TransferContext("9", "new")
    plan = inspect_source(SPEC, src)
    result = copy_and_verify(SPEC, plan, final, ctx, resume=True)
    assert result.resumed_from >= 4 * MiB and result.resumed_from % MiB == 0
    assert result.temp_path.endswith(temp_name("9-new", b"big.mov", "part"))
    place(SPEC, result, ctx)
    assert read(final) == data
    assert ketter_names(bt) == []
    import hashlib

    assert result.hashes["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_partial_that_does_not_match_restarts_from_zero(bt: bytes) -> None:
    data = os.urandom(8 * MiB)
    src, final = _partial_by_older_claim(bt, data)
    part = bt + b"/dst/" + temp_name("9-old", b"big.mov", "part")
    with open(part, "r+b") as f:
        f.seek(MiB)
        f.write(b"corrupt")
    ctx = TransferContext("9", "new")
    result = copy_and_verify(SPEC, inspect_source(SPEC, src), final, ctx, resume=True)
    assert result.resumed_from == 0
    place(SPEC, result, ctx)
    assert read(final) == data


def test_small_partials_are_removed_not_resumed(bt: bytes) -> None:
    src = bt + b"/src/s"
    write(src, b"s" * 1000)
    write(bt + b"/dst/" + temp_name("9-old", b"s", "part"), b"s" * 10)
    ctx = TransferContext("9", "new")
    result = copy_and_verify(SPEC, inspect_source(SPEC, src), bt + b"/dst/s", ctx, resume=True)
    assert result.resumed_from == 0
    assert sorted(os.listdir(bt + b"/dst")) == [os.path.basename(result.temp_path)]


def _run_with_fault(point: str, code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KETTER_FAULT=point, PYTHONPATH=os.getcwd())
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


#: One attempt of a job by the workers' path in a process of its own (the
#: routes and the store of the test's :class:`Workers`), killed at a fault point.
ATTEMPT = """
import json, sys
from tests.integration.engine.workers_bench import Workers
Workers(sys.argv[1].encode(), json.loads(sys.argv[2])).run(int(sys.argv[3]))
"""


@pytest.mark.parametrize(
    "point", ["mid-copy", "after-fsync-before-place", "after-place", "between-source-deletes"]
)
@pytest.mark.parametrize("pmf", [0, 2])
def test_sigkill_at_each_fault_point_then_recover(bt: bytes, point: str, pmf: int) -> None:
    """A worker killed at each point of an as_unit move; the next claim of
    the job recovers it (rolls back and starts again before the placement,
    only moves forward after it)."""
    src = bt + b"/src/pkg"
    files = {b"a": os.urandom(3 * MiB), b"b": b"bee", b"c/\xff": b"sea"}
    for rel, data in files.items():
        write(src + b"/" + rel, data)
    routes = {
        "r": {
            "source": "src", "destination": "dst", "mode": "move", "folders": "as_unit",
            "package_min_files": pmf, "mhl": False,
        }
    }  # fmt: skip
    w = Workers(bt, routes)
    try:
        (job_id,) = w.submit("r", src)
        r = subprocess.run(
            [sys.executable, "-c", ATTEMPT, os.fsdecode(bt), json.dumps(routes), str(job_id)],
            env=cli_env(KETTER_FAULT=point), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == -signal.SIGKILL, r.stderr
        final = bt + b"/dst/pkg"
        if point in ("mid-copy", "after-fsync-before-place"):
            # Not placed: nothing under the final name, sources intact.
            assert not os.path.exists(final)
            assert all(read(src + b"/" + rel) == d for rel, d in files.items())
            assert ketter_names(bt + b"/dst")
        else:
            # Placed: the job only moves forward.
            assert all(read(final + b"/" + rel) == d for rel, d in files.items())
        # The killed worker's lease has run out: the next claim recovers it.
        Job.update(lease_expires_at=0).where(Job.id == job_id).execute()
        job = w.run(job_id)
    finally:
        w.close()
    assert job.state == "completed", (job.state, job.error)
    assert all(read(final + b"/" + rel) == d for rel, d in files.items())
    assert len(inspect_source(TransferSpec(folders="as_unit"), final).files) == 3
    assert not os.path.exists(src)
    assert ketter_names(bt) == []


def test_orphan_sweep_removes_only_inactive_jobs(bt: bytes) -> None:
    dst = bt + b"/dst"
    write(dst + b"/" + temp_name("1-a", b"x", "part"), b"p")
    write(dst + b"/sub/" + temp_name("2-a", b"y", "part"), b"p")
    os.makedirs(dst + b"/" + temp_name("3-a", b"z", "dir") + b"/inner")
    write(dst + b"/keep.txt", b"k")
    found = find_orphans(dst, lambda job: job == "2")
    assert len(found) == 2
    assert ketter_names(bt) == [dst + b"/sub/" + temp_name("2-a", b"y", "part")]
    assert os.path.exists(dst + b"/keep.txt")


def test_rollback_restores_a_set_aside_version(bt: bytes) -> None:
    dst = bt + b"/dst"
    old_dir = dst + b"/" + temp_name("4-a", b"final.mov", "old")
    write(old_dir + b"/final.mov", b"old version")
    write(dst + b"/" + temp_name("4-a", b"final.mov", "part"), b"new partial")
    rollback(dst, "4-a")
    assert os.listdir(dst) == [b"final.mov"]
    assert read(dst + b"/final.mov") == b"old version"


def test_sigkill_mid_rollback_then_rollback_again(bt: bytes) -> None:
    dst = bt + b"/dst"
    for n in (b"a", b"b", b"c"):
        write(dst + b"/" + temp_name("6-a", n, "part"), b"p")
    code = f"""
        from ketter.engine import rollback
        rollback({dst!r}, ".ketter-6-")
    """
    r = _run_with_fault("mid-rollback", code)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert 0 < len(ketter_names(dst)) < 3
    rollback(dst, ".ketter-6-")
    assert ketter_names(dst) == []
