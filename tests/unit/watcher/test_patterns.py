from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from watchdog.utils.patterns import match_any_paths

from ketter.config.schema import DEFAULT_EXCLUDE, KETTER_TEMP_PATTERNS
from ketter.watcher.patterns import RoutePatterns

PATHS = [
    "a.mov", ".DS_Store", "dir/.DS_Store", "Thumbs.db", "x/Thumbs.db", "~$doc.docx",
    "x.mov.part", "x.tmp", "deep/er/file.wav", ".hidden/file.wav", "a/.b/c.wav",
    ".ketter-tmp-1", "d/.ketter-part", "PKG", "PKG/audio/1.wav", "é/ü.mov",
    "name with spaces.mov", "a/b/c/d/e/f.exr", "x.MOV", "x.mov.done",
]
PATTERN_SETS = [
    (["**/*"], list(DEFAULT_EXCLUDE)),
    (["**/*.mov", "**/*.wav"], ["**/tmp/**"]),
    (["*.mov"], []),
    (["PKG/**"], ["**/*.wav"]),
    (["**"], ["a/**"]),
]


@pytest.mark.parametrize(("include", "exclude"), PATTERN_SETS)
@pytest.mark.parametrize("path", PATHS)
def test_agrees_with_watchdog(include: list[str], exclude: list[str], path: str) -> None:
    """Events and scans use RoutePatterns; it must say what watchdog says."""
    patterns = RoutePatterns(include, exclude)
    expected = match_any_paths([path], included_patterns=include,
                               excluded_patterns=[*exclude, *KETTER_TEMP_PATTERNS])
    assert patterns.matches(path.encode()) is expected


segment = st.text(alphabet="ab.*~$-_ é", min_size=1, max_size=6).filter(
    lambda s: s not in (".", ".."))


@settings(deadline=None, max_examples=200)
@given(st.lists(segment, min_size=1, max_size=4))
def test_agrees_with_watchdog_on_random_paths(parts: list[str]) -> None:
    path = "/".join(parts)
    patterns = RoutePatterns(["**/*"], DEFAULT_EXCLUDE)
    expected = match_any_paths([path], included_patterns=["**/*"],
                               excluded_patterns=[*DEFAULT_EXCLUDE, *KETTER_TEMP_PATTERNS])
    assert patterns.matches(path.encode()) is expected


def test_ketter_temporaries_always_excluded() -> None:
    patterns = RoutePatterns(["**/*"], [])
    assert not patterns.matches(b".ketter-abc")
    assert not patterns.matches(b"sub/.ketter-abc")
    assert patterns.prune_dir(b"sub/.ketter-x")


def test_markers_are_never_candidates() -> None:
    patterns = RoutePatterns(["**/*"], [], ".done")
    assert patterns.is_marker(b"x.mov.done")
    assert not patterns.is_candidate(b"x.mov.done")
    assert patterns.is_candidate(b"x.mov")
    assert patterns.marker_for(b"x.mov") == b"x.mov.done"
    assert patterns.marked_path(b"d/x.mov.done") == b"d/x.mov"
    assert not patterns.is_marker(b"d/.done")  # a bare suffix names no file


def test_non_utf8_names_match() -> None:
    patterns = RoutePatterns(["**/*"], DEFAULT_EXCLUDE)
    assert patterns.matches(b"caf\xe9.mov")
    assert not patterns.matches(b".caf\xe9")


def test_hidden_folders_are_pruned() -> None:
    patterns = RoutePatterns(["**/*"], DEFAULT_EXCLUDE)
    assert patterns.prune_dir(b".git")
    assert patterns.prune_dir(b"a/.cache")
    assert not patterns.prune_dir(b"a/b")


def test_conflicting_patterns_exclude_wins() -> None:
    patterns = RoutePatterns(["**/*.mov", "**/*.tmp"], ["**/*.tmp"])
    assert not patterns.matches(b"a.tmp")
    assert patterns.matches(b"a.mov")
