"""Property: any tree of odd names arrives byte-identical with a true manifest,
through the workers' path (:mod:`.workers_bench`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketter.store.models import JobFile

from .helpers import ketter_names, snapshot, write
from .workers_bench import Workers

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
        files_before = sorted(k for k, v in before.items() if v[0] == "file")
        workers = Workers(
            base,
            {
                "r": {
                    "source": "src",
                    "destination": "dst",
                    "mode": mode,
                    "folders": "per_file" if folders == "per_file" else "as_unit",
                    "package_min_files": 1 if folders == "packaged" else 0,
                    "mhl": False,  # no ascmhl/ folder in the delivered tree
                }
            },
        )
        try:
            jobs = workers.transfer("r", src)
            assert [j.state for j in jobs] == ["completed"] * len(jobs), [j.error for j in jobs]
            if folders == "per_file":  # one job per file, in the manifest's order
                manifest = [os.path.relpath(bytes(j.source_path), src) for j in jobs]
                hashes = [j.sha256 for j in jobs]
            else:
                (job,) = jobs
                rows = JobFile.select().where(JobFile.job_id == job.id).order_by(JobFile.id)
                manifest = [bytes(r.relpath) for r in rows]
                hashes = [r.sha256 for r in rows]
        finally:
            workers.close()
        after = snapshot(dst + b"/tree")
        if folders == "per_file":  # folder modes and mtimes: not per_file's
            before = {k: v for k, v in before.items() if v[0] == "file"}
            after = {k: v for k, v in after.items() if v[0] == "file"}
        assert after == before
        assert manifest == files_before
        assert hashes == [hashlib.sha256(before[rel][1]).hexdigest() for rel in manifest]
        assert os.path.exists(src) == (mode == "copy")
        assert ketter_names(base) == []
    finally:
        shutil.rmtree(base)
