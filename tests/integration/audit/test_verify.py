"""``ketter audit verify``: every kind of tampering named in the issue is caught,
and a clean log after real transfers verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketter.audit import chain
from ketter.audit.logfile import AuditFiles
from ketter.audit.verify import verify_db, verify_files
from ketter.cli.main import main
from ketter.store import open_store

from .conftest import Env, make_env


@pytest.fixture
def shipped(env: Env) -> Env:
    for i in range(3):
        env.transfer(f"take{i}.mov", bytes([i]) * 5000)
    assert env.ship() > 10
    return env


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def check(env: Env, **kw: object):
    files = AuditFiles(str(env.log)).all_files()
    return verify_files(files, store=env.store, now=env.clock.now, **kw)  # type: ignore[arg-type]


def edit(line: str, **changes: object) -> str:
    fields = json.loads(line)
    fields.update(changes)
    return json.dumps(fields, ensure_ascii=False) + "\n"


def test_clean_log_verifies_with_count(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    total = len(lines(shipped.log))
    assert main(["audit", "verify", "--config", shipped.config_path]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{total} records checked, OK")
    open_store(shipped.config.db_path)  # main() bound the models to a read-only handle


def test_edited_projected_field_is_caught(shipped: Env) -> None:
    content = lines(shipped.log)
    i = next(n for n, line in enumerate(content) if '"file.size"' in line)
    content[i] = edit(content[i], **{"file.size": 1})
    shipped.log.write_text("".join(content), encoding="utf-8")
    report = check(shipped)
    assert not report.ok
    assert "field 'file.size' does not match" in report.problems[0]
    assert f"audit.jsonl:{i + 1}" in report.problems[0]


def test_edited_record_is_caught(shipped: Env) -> None:
    content = lines(shipped.log)
    fields = json.loads(content[4])
    record = json.loads(fields["ketter.record"])
    record["user"] = "someone-else"
    content[4] = edit(content[4], **{"ketter.record": chain.canonical_json(record),
                                     "user.name": "someone-else"})
    shipped.log.write_text("".join(content), encoding="utf-8")
    report = check(shipped)
    assert f"record seq {record['seq']} was altered" in report.problems[0]


def test_edited_user_without_record_is_caught(shipped: Env) -> None:
    content = lines(shipped.log)
    content[2] = edit(content[2], **{"user.name": "intern"})
    shipped.log.write_text("".join(content), encoding="utf-8")
    assert "field 'user.name'" in check(shipped).problems[0]


def test_deleted_middle_line_is_caught(shipped: Env) -> None:
    content = lines(shipped.log)
    del content[5]
    shipped.log.write_text("".join(content), encoding="utf-8")
    report = check(shipped)
    assert "records 6 are missing before record seq 7" in report.problems[0]


def test_swapped_lines_are_caught(shipped: Env) -> None:
    content = lines(shipped.log)
    content[3], content[4] = content[4], content[3]
    shipped.log.write_text("".join(content), encoding="utf-8")
    report = check(shipped)
    assert not report.ok
    assert "missing before record seq 5" in report.problems[0]
    assert any("record seq 4 is out of order" in p for p in report.problems)


def test_truncated_last_line_is_caught(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    data = shipped.log.read_bytes()
    shipped.log.write_bytes(data[:-40])
    assert main(["audit", "verify", "--config", shipped.config_path]) == 1
    out = capsys.readouterr().out
    assert "BROKEN:" in out and "truncated" in out
    open_store(shipped.config.db_path)


def test_newest_records_deleted_from_the_log(shipped: Env) -> None:
    content = lines(shipped.log)
    shipped.log.write_text("".join(content[:-3]), encoding="utf-8")
    # Just shipped: could be the shipper's lag, so only a note...
    recent = check(shipped)
    assert recent.ok and "not shipped yet" in recent.notes[-1]
    # ...but once older than the allowed lag, a break.
    shipped.clock.now += 3600
    report = check(shipped)
    n = len(content)
    assert f"records {n - 2}..{n} are in the job store but not in the log" in report.problems[0]


def test_newest_records_deleted_from_the_job_store(shipped: Env) -> None:
    n = len(lines(shipped.log))
    shipped.store.db.execute_sql("DELETE FROM events WHERE id > ?", (n - 2,))
    report = check(shipped)
    assert not report.ok
    assert f"record seq {n - 1} is in the log but not in the job store" in report.problems[0]
    assert any("job store ends at seq" in p for p in report.problems)


def test_newest_records_deleted_from_log_and_job_store(shipped: Env) -> None:
    content = lines(shipped.log)
    n = len(content)
    shipped.log.write_text("".join(content[:-2]), encoding="utf-8")
    shipped.store.db.execute_sql("DELETE FROM events WHERE id > ?", (n - 2,))
    report = check(shipped)
    # The chain itself is consistent; the jobs table betrays it.
    assert any("is 'completed' but its last event" in p for p in report.problems)
    assert "newer events were deleted" in verify_db(shipped.store).problems[0]


def test_removed_rotated_file_without_anchor_is_caught(tmp_path: Path) -> None:
    env = make_env(tmp_path, "{rotate_max_bytes: 6KB, rotate_backups: 50}")
    for i in range(4):
        env.transfer(f"clip{i}.mxf")
    env.ship()
    files = AuditFiles(str(env.log))
    rotated = files.rotated()
    assert len(rotated) >= 2
    assert check(env).ok
    Path(rotated[0]).unlink()
    report = check(env)
    assert "no rotate record anchors it" in report.problems[0]


def test_pruned_files_leave_an_anchor(tmp_path: Path) -> None:
    env = make_env(tmp_path, "{rotate_max_bytes: 6KB, rotate_backups: 1}")
    for i in range(6):
        env.transfer(f"clip{i}.mxf")
        env.ship()  # once, as a user would (`ketter audit ship`)
    # Each ship drains until a pass ships nothing: the rotate record a prune
    # appends is shipped by the same drain (it stopped at the first short
    # pass and left it unshipped: verifying the files then found no anchor).
    report = check(env)
    assert report.ok, report.problems
    assert "pruned by rotation (anchored by rotate record" in report.notes[0]
    assert len(AuditFiles(str(env.log)).rotated()) == 1
    actions = [json.loads(line)["event.action"] for line in lines(env.log)]
    assert "rotate" in actions or any(
        "rotate" in Path(p).read_text() for p in AuditFiles(str(env.log)).rotated())


def test_db_chain_alone(shipped: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--db", "--config", shipped.config_path]) == 0
    assert capsys.readouterr().out.strip().endswith("records checked, OK")
    open_store(shipped.config.db_path)
    store = shipped.store
    store.db.execute_sql("UPDATE events SET details = ? WHERE id = 3", ('{"size":1}',))
    assert "events seq 3: altered" in verify_db(store).problems[0]
    store.db.execute_sql("DELETE FROM events WHERE id = 5")
    problems = verify_db(store).problems
    assert any("records 5 are missing from the job store" in p for p in problems)


def test_keyed_chain_needs_the_key(tmp_path: Path) -> None:
    env = make_env(tmp_path, key=b"secret-key")
    env.transfer("keyed.mov")
    env.ship()
    files = [str(env.log)]
    assert verify_files(files, key=b"secret-key", store=env.store).ok
    unkeyed = verify_files(files, store=env.store)
    assert "--key-file" in unkeyed.problems[0]
    env.store.close()


def test_files_alone_without_job_store(shipped: Env) -> None:
    report = verify_files([str(shipped.log)])
    assert report.ok and "job store not available" in report.notes[0]
    content = lines(shipped.log)
    content[1] = edit(content[1], **{"event.action": "complete"})
    shipped.log.write_text("".join(content), encoding="utf-8")
    assert "field 'event.action'" in verify_files([str(shipped.log)]).problems[0]


def _in_layout_1(env: Env) -> list[str]:
    """The shipped log as it was written before the ECS layout 2 (b72af96):
    every line recomputed with ``to_line(..., layout=1)`` (``destination.path``,
    no ``ketter.layout``)."""
    from ketter.audit.ecs import JobIdentity, to_line
    from ketter.audit.logfile import format_line

    jobs = {}
    out = []
    for text in lines(env.log):
        f = json.loads(text)
        record = json.loads(f["ketter.record"])
        job_id = record.get("job_id")
        if job_id is not None and job_id not in jobs:
            jobs[job_id] = JobIdentity.from_row(env.store.event_jobs([job_id])[job_id])
        old = to_line(f["ketter.record"], f["ketter.prev"], f["ketter.hash"],
                      jobs.get(job_id), layout=1)
        out.append(format_line(old) + "\n")
    return out


def test_a_log_shipped_in_the_old_layout_verifies(
    shipped: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lines shipped before the layout change verify as they were written
    (``layout_of`` each line); an edit of one of their fields is caught."""
    old = _in_layout_1(shipped)
    assert not any('"ketter.layout"' in line for line in old)
    at = next(n for n, line in enumerate(old) if '"destination.path"' in line)
    shipped.log.write_text("".join(old), encoding="utf-8")
    report = check(shipped)
    assert report.ok, report.problems
    assert verify_files([str(shipped.log)]).ok  # from the files alone too
    assert main(["audit", "verify", "--config", shipped.config_path]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{len(old)} records checked, OK")
    open_store(shipped.config.db_path)  # main() bound the models to a read-only handle
    old[at] = edit(old[at], **{"destination.path": "/elsewhere/take0.mov"})
    shipped.log.write_text("".join(old), encoding="utf-8")
    report = check(shipped)
    assert not report.ok
    assert "field 'destination.path' does not match" in report.problems[0]
