"""Generation 1 written without the library's model (:mod:`ketter.audit.mhl_fresh`)
is the library's own output, byte for byte, and the ascmhl tools and the XSDs
accept it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ketter.audit.mhl as mhl
from ketter.audit.mhl import MHLWriteFailed
from ketter.audit.mhl_fresh import write_fresh

from .test_mhl_tools import FILES, accepted, deliver, make_roll

TRICKY = {
    **FILES,
    ".DS_Store": b"mac",
    "sound/.DS_Store": b"mac",
    "R&D <cut> 'one' \"two\".mov": b"amp",
    "empty.txt": b"",
    "deep/er/still/frame 0001.dpx": b"d" * 5000,
    "café.mov": b"utf8",
    "日本語/テスト.wav": b"jp",
}


def _roll(base: Path) -> Path:
    roll = make_roll(base / "in" / "A001", TRICKY)
    raw = os.fsencode(roll)
    with open(raw + b"/caf\xe9.mov", "wb") as f:
        f.write(b"latin-1")
    os.mkdir(raw + b"/take\xff")
    with open(raw + b"/take\xff/x.mov", "wb") as f:
        f.write(b"x")
    return roll


def _history(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "ascmhl").iterdir())}


def test_the_same_bytes_as_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names to escape, an empty file, nested folders, ignored and non-UTF-8
    names: the direct writer and ascmhl 1.2 write identical files."""
    roll = _roll(tmp_path)
    direct: list[str] = []
    with monkeypatch.context() as m:
        m.setattr(mhl, "write_fresh", lambda *a, **k: direct.append(a[1]) or write_fresh(*a, **k))
        fast = deliver(roll, tmp_path / "fast", now=1_700_000_000.25)
    assert direct == ["0001_A001_2023-11-14_221320Z.mhl"]  # not through the library
    with monkeypatch.context() as m:
        m.setattr(mhl, "_without_history", lambda *_: False)
        slow = deliver(roll, tmp_path / "slow", now=1_700_000_000.25)
    assert (fast.formats, fast.left_out, fast.patterns) == (
        slow.formats,
        slow.left_out,
        slow.patterns,
    )
    ours, theirs = _history(tmp_path / "fast" / "A001"), _history(tmp_path / "slow" / "A001")
    assert list(ours) == list(theirs) == ["0001_A001_2023-11-14_221320Z.mhl", "ascmhl_chain.xml"]
    for name in ours:
        assert ours[name] == theirs[name], name
    accepted(tmp_path / "fast" / "A001")


def test_a_history_is_still_continued_by_the_library(tmp_path: Path) -> None:
    """Generation 2 of a folder the direct writer started: the library reads
    it and continues it (``verified`` entries), and the tools accept both."""
    roll = make_roll(tmp_path / "in" / "A001")
    deliver(roll, tmp_path / "mid")
    second = deliver(tmp_path / "mid" / "A001", tmp_path / "out", now=2e9)
    assert os.path.basename(second.path).startswith(b"0002_A001_")
    accepted(tmp_path / "out" / "A001")


def test_a_name_xml_cannot_carry_is_refused_as_before(tmp_path: Path) -> None:
    """A control character in a name: left to the library, which refuses it
    (the job's permanent MHLWriteFailed), as before the direct writer."""
    roll = make_roll(tmp_path / "in" / "A001", {**FILES, "bell\x07.mov": b"b"})
    with pytest.raises(MHLWriteFailed):
        deliver(roll, tmp_path / "out")
