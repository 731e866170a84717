"""The real ASC MHL tools accept every history Ketter writes or continues.

Each test copies a folder with Ketter's engine (the verified copy of an
``as_unit`` job), writes its generation with :func:`write_generation` as the
job's ``verified`` step does, renames it into place, and then runs the
``ascmhl`` command line itself (``ascmhl info``, ``ascmhl diff``,
``ascmhl-debug verify``) and ``xmllint --schema`` against the ASC MHL XSDs of
ascmhl 1.2 vendored in ``tests/data/ascmhl/`` on the delivered folder.
Histories made by a camera-offload tool are stood for by ``ascmhl create -h
FORMAT`` on the source folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ascmhl.history import MHLHistory

from ketter.audit.mhl import FORMATS, MHLWriteFailed, MHLWritten, write_generation
from ketter.config.schema import RetryConfig
from ketter.engine.context import TransferContext
from ketter.engine.source import inspect_source
from ketter.engine.spec import TransferSpec
from ketter.engine.transfer import copy_and_verify
from ketter.errors import ManifestError, PermanentError
from ketter.jobs.policy import Action, JobFacts, Stop, decide, triage
from ketter.jobs.states import State

DATA = Path(__file__).resolve().parents[2] / "data" / "ascmhl"
BIN = Path(sys.executable).parent
SOURCE_FORMATS = ("md5", "sha1", "c4", "xxh3", "xxh64", "xxh128")
FILES = {
    "A001C001.mov": b"a" * 4000,
    "sound/A001.wav": b"b" * 300,
    "reports/notes é.txt": b"c" * 10,
}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(
            f"{name} is not installed next to {sys.executable} (pip: ascmhl, the [test] extras)"
        )
    return str(path)


def _xmllint() -> str:
    path = shutil.which("xmllint")
    if path is None:
        pytest.fail("xmllint is missing: install the Debian package libxml2-utils")
    return path


def run(*args: str) -> str:
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        errors="replace",
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def accepted(folder: Path) -> None:
    """The ascmhl CLI and the XSDs accept the folder's history."""
    info = run(_tool("ascmhl"), "info", str(folder))
    assert "Generation" in info, info
    diff = run(_tool("ascmhl"), "diff", str(folder))
    assert "ERROR" not in diff and "missing" not in diff.lower(), diff
    verify = run(_tool("ascmhl-debug"), "verify", str(folder))
    assert "ERROR" not in verify, verify
    gens = sorted((folder / "ascmhl").glob("*.mhl"))
    assert gens
    run(_xmllint(), "--noout", "--schema", str(DATA / "ASCMHL.xsd"), *map(str, gens))
    run(
        _xmllint(),
        "--noout",
        "--schema",
        str(DATA / "ASCMHLDirectory.xsd"),
        str(folder / "ascmhl" / "ascmhl_chain.xml"),
    )


def make_roll(folder: Path, files: dict[str, bytes] | None = None) -> Path:
    for rel, data in (files or FILES).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def deliver(source: Path, out: Path, now: float = 1e9, *, md5: bool = False) -> MHLWritten:
    """Copy ``source`` into ``out`` as one verified unit, write its generation
    and rename it into place."""
    out.mkdir(exist_ok=True)
    spec = TransferSpec(folders="as_unit", destination_root=os.fsencode(out), md5=md5)
    src = os.fsencode(source)
    plan = inspect_source(spec, src)
    final = os.fsencode(out / source.name)
    result = copy_and_verify(spec, plan, final, TransferContext())
    written = write_generation(
        result.temp_path, src, result, now=now, node="mhl-node", root=os.fsencode(out)
    )
    os.rename(result.temp_path, final)
    return written


def entries(folder: Path, generation: int) -> dict[str, dict[str, tuple[str, str]]]:
    history = MHLHistory.load_from_path(str(folder))
    hash_list = history.hash_lists[generation - 1]
    return {
        m.path: {e.hash_format: (e.hash_string, e.action) for e in m.hash_entries}
        for m in hash_list.media_hashes
    }


def test_generation_1_is_accepted(tmp_path: Path) -> None:
    written = deliver(make_roll(tmp_path / "in" / "A001"), tmp_path / "out")
    out = tmp_path / "out" / "A001"
    assert written.formats == FORMATS and written.computed == ()
    assert set(entries(out, 1)) == set(FILES)
    accepted(out)


def test_the_vendored_schema_rejects_a_broken_generation(tmp_path: Path) -> None:
    """The XSD check is a real check: a generation with an action the schema
    does not know fails it."""
    deliver(make_roll(tmp_path / "in" / "A001"), tmp_path / "out")
    (gen,) = (tmp_path / "out" / "A001" / "ascmhl").glob("*.mhl")
    broken = tmp_path / "broken.mhl"
    broken.write_text(
        gen.read_text(encoding="utf-8").replace('action="original"', 'action="copied"'),
        encoding="utf-8",
    )
    done = subprocess.run(
        [_xmllint(), "--noout", "--schema", str(DATA / "ASCMHL.xsd"), str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "copied" in done.stderr


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_a_camera_history_is_continued_in_its_own_formats(tmp_path: Path, fmt: str) -> None:
    """An offload made with ``fmt``: the generation carries ``fmt`` (verified
    against the original) besides Ketter's formats, and the official tools
    accept the delivered folder — and the next delivery of it again."""
    roll = make_roll(tmp_path / "in" / "A001")
    run(_tool("ascmhl"), "create", "-h", fmt, str(roll))
    written = deliver(roll, tmp_path / "out")
    out = tmp_path / "out" / "A001"
    assert written.formats == tuple(dict.fromkeys((*FORMATS, fmt)))
    assert written.computed == (() if fmt in FORMATS else (fmt,))
    gen2 = entries(out, 2)
    assert set(gen2) == set(FILES)
    for rel, by_format in gen2.items():
        assert set(by_format) == set(written.formats), rel
        assert by_format[fmt][1] == "verified"
        assert entries(out, 1)[rel][fmt][0] == by_format[fmt][0]
    accepted(out)
    # Continued once more from Ketter's own generation (a second hop).
    again = tmp_path / "in2" / "A001"
    again.parent.mkdir()
    shutil.copytree(out, again)
    deliver(again, tmp_path / "out2", now=1e9 + 60)
    assert len(list((tmp_path / "out2" / "A001" / "ascmhl").glob("*.mhl"))) == 3
    accepted(tmp_path / "out2" / "A001")


def test_md5_from_the_copy_read_is_used(tmp_path: Path) -> None:
    """With the route's ``md5`` the copy's one read has md5: nothing is read again."""
    roll = make_roll(tmp_path / "in" / "A001")
    run(_tool("ascmhl"), "create", "-h", "md5", str(roll))
    written = deliver(roll, tmp_path / "out", md5=True)
    assert "md5" in written.formats and written.computed == ()
    accepted(tmp_path / "out" / "A001")


def test_a_copy_that_disagrees_in_the_history_format_is_refused(tmp_path: Path) -> None:
    roll = make_roll(tmp_path / "in" / "A001")
    run(_tool("ascmhl"), "create", "-h", "sha1", str(roll))
    (roll / "A001C001.mov").write_bytes(b"z" * 4000)
    with pytest.raises(PermanentError, match=r"do not match their ascmhl/ history: A001C001\.mov"):
        deliver(roll, tmp_path / "out")


def test_ignored_files_are_not_listed(tmp_path: Path) -> None:
    """``.DS_Store`` is copied (it is part of the folder) but not listed: the
    generation's own ignore patterns exclude it."""
    roll = make_roll(
        tmp_path / "in" / "A001", {**FILES, ".DS_Store": b"mac", "sound/.DS_Store": b"mac"}
    )
    deliver(roll, tmp_path / "out")
    out = tmp_path / "out" / "A001"
    assert (out / ".DS_Store").exists()
    assert set(entries(out, 1)) == set(FILES)
    accepted(out)


def test_names_not_utf8_are_named_by_ignore_patterns(tmp_path: Path) -> None:
    """A Latin-1 name beside its UTF-8 twin, and a folder whose name is not
    UTF-8: left out of the list, named in the generation's ignore patterns so
    that ``ascmhl diff`` and ``ascmhl-debug verify`` accept the folder, and
    the UTF-8 twin stays listed and verified."""
    roll = make_roll(tmp_path / "in" / "A001", {**FILES, "café.mov": b"utf8"})
    raw = os.fsencode(roll)
    with open(raw + b"/caf\xe9.mov", "wb") as f:
        f.write(b"latin-1")
    os.mkdir(raw + b"/take\xff")
    with open(raw + b"/take\xff/x.mov", "wb") as f:
        f.write(b"x")
    written = deliver(roll, tmp_path / "out")
    assert written.patterns == ("caf[!é].mov", "take?/")
    assert sorted(written.left_out) == ["caf\\xe9.mov", "take\\xff/x.mov"]
    out = tmp_path / "out" / "A001"
    assert set(entries(out, 1)) == {*FILES, "café.mov"}
    history = MHLHistory.load_from_path(str(out))
    assert set(written.patterns) <= set(history.latest_ignore_patterns() or [])
    accepted(out)


def test_a_manifest_error_is_permanent_never_retried() -> None:
    """A manifest the library refuses is refused again on every attempt: the
    job fails at once (rolled back, not retried), whatever attempt it is."""
    assert issubclass(MHLWriteFailed, ManifestError)
    error = MHLWriteFailed("ascmhl cannot write a generation")
    seen = triage(error, state_dir=None, where=b"/x")
    assert seen.stop is Stop.JOB_ERROR and seen.error is error
    decision = decide(
        error, JobFacts(State.TRANSFERRING, attempt=1, placed=False), 0.0, retry=RetryConfig()
    )
    assert decision.action is Action.ROLL_BACK
    assert decision.then is State.FAILED and decision.permanent
