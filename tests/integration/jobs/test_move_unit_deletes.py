"""What a move decides right before each irreversible step (issue #14
finding 15, review): real files, real writer processes.

* an ``as_unit`` move looks at each file's identity and open writers right
  before that file's unlink, after the stop hook: a writer that opens frame
  N while frames 1..N-1 are being deleted keeps frame N;
* the folders an ``as_unit`` move emptied are removed descriptor-relative:
  a symlink swapped in for a middle folder is never followed;
* ``same_fs_move: rename`` (the workers' path) looks for writers after the
  hash, right before the rename: a writer that opened the file during the
  hash is seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ketter.engine.context import TransferContext
from ketter.engine.move import delete_source
from ketter.engine.results import Placement
from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.errors import SourceInUse
from tests.integration.engine.workers_bench import Once, Workers, events

#: Holds a file open for writing, without writing, until its stdin closes.
HOLD = """
import sys
with open(sys.argv[1], "ab") as f:
    print("open", flush=True)
    sys.stdin.read()
"""

Hold = Callable[[Path], subprocess.Popen]


@pytest.fixture
def holder() -> Iterator[Hold]:
    procs: list[subprocess.Popen] = []

    def hold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class OnDelete(TransferContext):
    """Runs ``action`` once, from the stop hook, right before the engine
    deletes the source whose name contains ``name``."""

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.name = name
        self.action = action
        self.fired = False

    def before_irreversible(self, what: str) -> None:
        if not self.fired and self.name in what:
            self.fired = True
            self.action()


def _unit(tmp_path: Path, files: dict[str, bytes]) -> tuple[TransferSpec, Path, Placement]:
    """An as_unit source folder and its verified copy, in place."""
    unit = tmp_path / "in" / "shot"
    for rel, data in files.items():
        (unit / rel).parent.mkdir(parents=True, exist_ok=True)
        (unit / rel).write_bytes(data)
    (tmp_path / "out").mkdir()
    delivered = tmp_path / "out" / "shot"
    shutil.copytree(unit, delivered)
    st = delivered.stat()
    placement = Placement(os.fsencode(delivered), st.st_ino, st.st_dev, False, "rename")
    spec = TransferSpec(mode="move", folders="as_unit", source_root=os.fsencode(tmp_path / "in"))
    return spec, unit, placement


def test_as_unit_move_checks_writers_right_before_each_unlink(tmp_path: Path, holder) -> None:
    """A render that opens frame 3 for writing (no byte written yet, its
    ctime unchanged) while frames 1 and 2 are being deleted: frame 3 is kept,
    not unlinked under the writer; the job waits (SourceInUse) and finishes
    once the writer has closed it."""
    frames = {f"f{i}.exr": os.urandom(50_000) for i in range(1, 6)}
    spec, unit, placement = _unit(tmp_path, frames)
    plan = inspect_source(spec, os.fsencode(unit))
    writers: list[subprocess.Popen] = []
    ctx = OnDelete("f3.exr", lambda: writers.append(holder(unit / "f3.exr")))
    with pytest.raises(SourceInUse, match="still open for writing") as err:
        delete_source(spec, plan, placement, ctx)
    assert ctx.fired
    assert f"pid {writers[0].pid}" in str(err.value)
    assert (unit / "f3.exr").read_bytes() == frames["f3.exr"]  # never unlinked
    assert not (unit / "f1.exr").exists() and not (unit / "f2.exr").exists()
    assert (unit / "f4.exr").exists() and (unit / "f5.exr").exists()
    writers[0].stdin.close()  # type: ignore[union-attr]
    writers[0].wait(30)
    result = delete_source(spec, plan, placement, TransferContext())  # the retry
    assert sorted(os.path.basename(p) for p in result.deleted) == [
        b"f3.exr",
        b"f4.exr",
        b"f5.exr",
    ]
    assert not unit.exists() and (tmp_path / "in").is_dir()


def test_as_unit_move_never_removes_a_folder_through_a_swapped_link(tmp_path: Path) -> None:
    """``sub`` is swapped for a link to a folder elsewhere once its files are
    deleted: removing ``shot/sub/deep`` by path would follow the link and
    remove ``elsewhere/deep``."""
    spec, unit, placement = _unit(tmp_path, {"sub/deep/a.exr": b"a" * 1000, "z.exr": b"z"})
    plan = inspect_source(spec, os.fsencode(unit))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)

    def swap() -> None:
        assert not (unit / "sub" / "deep" / "a.exr").exists()  # deleted before z.exr
        (unit / "sub").rename(tmp_path / "sub.old")
        (unit / "sub").symlink_to(elsewhere)

    ctx = OnDelete("z.exr", swap)
    delete_source(spec, plan, placement, ctx)
    assert ctx.fired
    assert (elsewhere / "deep").is_dir()  # not removed through the link
    assert (unit / "sub").is_symlink()  # the link itself is left, as is its folder
    assert not (unit / "z.exr").exists()


def test_same_fs_rename_looks_for_writers_after_the_hash(tmp_path: Path, holder) -> None:
    """A writer that opens the file while it is being hashed (after the look
    made before the hash) is seen right before the rename: the file is not
    renamed into place, and the job waits without using attempts."""
    w = Workers(
        os.fsencode(tmp_path),
        {"r": {"source": "in", "destination": "out", "mode": "move", "same_fs_move": "rename"}},
    )
    try:
        (tmp_path / "in").mkdir()
        (tmp_path / "out").mkdir()
        src = tmp_path / "in" / "stem.wav"
        src.write_bytes(os.urandom(12 << 20))
        writers: list[subprocess.Popen] = []
        w.hooks.append(Once("hash", lambda: writers.append(holder(src))))
        (job_id,) = w.submit("r", os.fsencode(src))
        job = w.run(job_id)
        assert writers, "the hash reported no progress"
        assert job.state == "retry_wait", (job.state, job.error)
        assert "still open for writing" in (job.error or "")
        assert f"pid {writers[0].pid}" in (job.error or "")
        assert src.exists() and not (tmp_path / "out" / "stem.wav").exists()
        assert [e for e, _ in events(job_id)].count("verify") == 1  # hashed, recorded
        writers[0].stdin.close()  # type: ignore[union-attr]
        writers[0].wait(30)
        ino = src.stat().st_ino
        job = w.run(job_id)
        assert job.state == "completed", job.error
        assert not src.exists() and (tmp_path / "out" / "stem.wav").stat().st_ino == ino
    finally:
        w.close()
