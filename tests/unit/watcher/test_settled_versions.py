"""Which jobs settle a source key (issue #14 finding 2, review): a finished
job with a known, different ctime does not; an active job, or a finished one
whose ctime is unknown (0/NULL: before migration 0003, folders), does."""

from __future__ import annotations

from ketter.jobs.create import NewJob, create_job, file_source_key
from ketter.store.models import Job
from ketter.watcher.enqueue import settled_keys


def _job(job_store, key: str, state: str, ctime: int | None) -> None:
    new = NewJob(route="r", mode="copy", kind="file", source_path=b"/in/a", source_key=key, size=1)
    created = create_job(job_store, new, node="n", now=1.0)
    Job.update(state=state, source_ctime_ns=ctime).where(Job.id == created.job_id).execute()


def test_settled_keys_tell_versions_by_stored_ctime(job_store) -> None:
    done, old, running, fresh = (file_source_key("r", b"a%d" % i, 1, 2, 3) for i in range(4))
    _job(job_store, done, "completed", 100)
    _job(job_store, old, "completed", None)  # a row from before ctimes were kept
    _job(job_store, running, "copying", 100)
    # no ctimes known
    assert settled_keys(job_store, [done, old, running, fresh]) == {done, old, running}
    now = {done: 200, old: 200, running: 200, fresh: 200}
    # done: rewritten
    assert settled_keys(job_store, [done, old, running, fresh], now) == {old, running}
    assert settled_keys(job_store, [done], {done: 100}) == {done}  # the same version
    _job(job_store, done, "completed", 200)  # the new version delivered: settled again
    assert settled_keys(job_store, [done], {done: 200}) == {done}
