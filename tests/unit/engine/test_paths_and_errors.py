"""Temporary names, rename candidates, error classification, spec checks."""

from __future__ import annotations

import errno

import pytest

from ketter.engine import TransferContext, TransferSpec, classify_oserror, temp_name
from ketter.engine.cleanup import temp_job_id
from ketter.engine.paths import rename_candidate
from ketter.errors import (
    DestinationFull,
    PermanentError,
    RouteNotWritable,
    RouteUnavailable,
    SourceChanged,
    TransientError,
)


def test_temp_names_fit_and_stay_distinct() -> None:
    assert temp_name("1-c", b"a.mov", "part") == b".ketter-1-c-a.mov.part"
    long_a, long_b = b"x" * 250 + b"a", b"x" * 250 + b"b"
    ta, tb = temp_name("1-c", long_a, "part"), temp_name("1-c", long_b, "part")
    assert len(ta) <= 255 and len(tb) <= 255 and ta != tb
    assert ta.startswith(b".ketter-1-c-") and ta.endswith(b".part")
    assert temp_job_id(ta) == "1"


@pytest.mark.parametrize(
    "name,n,is_dir,expected",
    [
        (b"take.mov", 1, False, b"take (1).mov"),  # extension kept last
        (b".bashrc", 2, False, b".bashrc (2)"),  # a leading dot is no extension
        (b"reel.v2", 1, True, b"reel.v2 (1)"),  # folders have no extension
        (b"take.mov", 0, False, b"take.mov"),  # 0 is the name itself
        (b"y" * 255, 3, False, b"y" * 251 + b" (3)"),  # still fits in 255 bytes
    ],
)
def test_rename_candidates(name: bytes, n: int, is_dir: bool, expected: bytes) -> None:
    assert rename_candidate(name, n, is_dir) == expected


@pytest.mark.parametrize(
    "code,action,cls",
    [
        (errno.ENOSPC, "write the temporary file", DestinationFull),  # route pauses
        (errno.EDQUOT, "write the temporary file", DestinationFull),  # same as full
        (errno.EIO, "read the source", RouteUnavailable),  # a share down, or a hiccup (#15)
        (errno.ESTALE, "read the source", RouteUnavailable),  # share remounted
        (errno.ENOENT, "read the source", SourceChanged),  # source vanished
        (errno.ENOENT, "create the temporary file", TransientError),  # dest folder gone
        (errno.EACCES, "create the temporary file", PermanentError),  # fix ACLs first
        (errno.EPERM, "delete the source", PermanentError),
        (errno.ENAMETOOLONG, "create the temporary file", PermanentError),
        (errno.EROFS, "create the temporary file", RouteNotWritable),  # a route pause (#15)
    ],
)
def test_classification(code: int, action: str, cls: type) -> None:
    err = classify_oserror(OSError(code, "x"), b"/mnt/dub/bad\xff name", action)
    assert type(err) is cls
    assert "/mnt/dub/bad\\xff name" in err.message
    assert errno.errorcode[code] in err.message


def test_spec_and_context_validation() -> None:
    with pytest.raises(ValueError):
        TransferSpec(conflict="clobber")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TransferSpec(source_root="/str")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TransferContext("has-dash", "c")
    ctx = TransferContext("17", "abc")
    assert (ctx.tag, ctx.job_prefix) == ("17-abc", ".ketter-17-")
    assert TransferSpec(md5=True).algorithms == ("sha256", "xxh128", "xxh64", "md5")
