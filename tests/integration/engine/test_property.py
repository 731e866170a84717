"""Property: any tree of odd names arrives byte-identical with a true manifest."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketter.engine import TransferContext, TransferSpec, transfer

from .helpers import ketter_names, snapshot, write

# Names as bytes: any byte but '/' and NUL, including invalid UTF-8, newlines,
# spaces, NFC/NFD pairs; never '.', '..' or our own temporary prefix.
name = st.one_of(
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
    st.sampled_from(["caf\u00e9", "cafe\u0301", "a b", "new\nline", "\u00c5ngstr\u00f6m"]).map(
        str.encode
    ),
    st.just(b"N" * 255),
).filter(lambda n: n not in (b".", b"..") and not n.startswith(b".ketter-"))

tree = st.dictionaries(
    st.lists(name, min_size=1, max_size=3).map(tuple),
    st.tuples(st.binary(max_size=3000), st.integers(0, 2**40), st.sampled_from([0o600, 0o644])),
    min_size=1,
    max_size=12,
)


def _materialize(root: bytes, files: dict[tuple[bytes, ...], tuple[bytes, int, int]]) -> int:
    written = 0
    for parts, (data, mtime, mode) in files.items():
        path = os.path.join(root, *parts)
        # Skip paths that would need a file to also be a folder.
        if any(os.path.isfile(os.path.join(root, *parts[:i])) for i in range(1, len(parts))):
            continue
        if os.path.isdir(path):
            continue
        write(path, data, mtime_ns=mtime * 1000, mode=mode)
        written += 1
    return written


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=tree,
    folders=st.sampled_from(["as_unit", "packaged", "per_file"]),
    mode=st.sampled_from(["copy", "move"]),
)
def test_random_trees_round_trip(
    files: dict[tuple[bytes, ...], tuple[bytes, int, int]], folders: str, mode: str
) -> None:
    base = os.fsencode(tempfile.mkdtemp(prefix="ketter-prop-"))
    try:
        src, dst = base + b"/src/tree", base + b"/dst"
        os.makedirs(src)
        os.mkdir(dst)
        if _materialize(src, files) == 0:
            return
        before = snapshot(src)
        spec = TransferSpec(
            mode=mode,  # type: ignore[arg-type]
            folders="per_file" if folders == "per_file" else "as_unit",
            package_min_files=1 if folders == "packaged" else 0,
        )
        out = transfer(spec, src, dst, TransferContext())
        after = snapshot(dst + b"/tree")
        if folders == "per_file":  # folder mtimes are best effort in per_file
            before = {k: v for k, v in before.items() if v[0] == "file"}
            after = {k: v for k, v in after.items() if v[0] == "file"}
        assert after == before
        manifest = out.plan.files
        assert [e.relpath for e in manifest] == sorted(
            k for k, v in before.items() if v[0] == "file"
        )
        hashes = (
            [f.hashes["sha256"] for f in out.results[0].files]
            if folders != "per_file"
            else [r.hashes["sha256"] for r in out.results]
        )
        assert hashes == [hashlib.sha256(before[e.relpath][1]).hexdigest() for e in manifest]
        assert os.path.exists(src) == (mode == "copy")
        assert ketter_names(base) == []
    finally:
        shutil.rmtree(base)
