"""The shipper: sequence order, resume after a crash, one writer, rotation."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from ketter.audit.logfile import AuditFiles
from ketter.audit.verify import verify_files
from ketter.store.models import Event

from .conftest import Env, make_env


def seqs(path: Path) -> list[int]:
    return [json.loads(line)["event.sequence"] for line in path.read_text().splitlines()]


def test_ships_every_event_once_in_order(env: Env) -> None:
    env.transfer("a.wav")
    assert env.ship() == Event.select().count()
    env.transfer("b.wav")
    env.ship()
    assert env.ship() == 0
    assert seqs(env.log) == list(range(1, Event.select().count() + 1))


def test_partial_last_line_from_a_crash_is_repaired(env: Env) -> None:
    env.transfer("a.wav")
    env.ship()
    whole = env.log.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    env.log.write_bytes(whole[: -len(last)] + last[:25])  # killed mid-write
    env.transfer("b.wav")
    env.ship()
    assert seqs(env.log) == list(range(1, Event.select().count() + 1))
    assert verify_files([str(env.log)], store=env.store).ok


def test_resumes_from_the_last_shipped_line(env: Env) -> None:
    env.transfer("a.wav")
    first = env.shipper()
    first.ship_once()
    first.close()  # stands for a SIGKILL: nothing but the file survives
    env.transfer("b.wav")
    env.ship()
    assert seqs(env.log) == list(range(1, Event.select().count() + 1))


def test_a_second_shipper_does_not_interleave(env: Env) -> None:
    env.transfer("a.wav")
    one, two = env.shipper(), env.shipper()
    try:
        assert one.ship_once() > 0
        env.transfer("b.wav")
        assert two.ship_once() == 0  # the lock is held by `one`
        assert one.ship_once() > 0
    finally:
        one.close()
        two.close()
    assert seqs(env.log) == list(range(1, Event.select().count() + 1))


def test_thread_start_stop_drains(env: Env) -> None:
    env.transfer("a.wav")
    shipper = env.shipper(interval=0.05)
    shipper.start()
    shipper.stop()
    assert seqs(env.log)[-1] == Event.select().count()


def test_daily_rotation_keeps_one_utc_day_per_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, "{rotate_when: daily}")
    day = 86400.0
    env.clock.now = (env.clock.now // day) * day + 3600  # 01:00 UTC today
    env.transfer("monday.mov")
    env.clock.now += day
    env.transfer("tuesday.mov")
    env.ship()
    files = AuditFiles(str(env.log)).all_files()
    assert len(files) == 2
    days = [{json.loads(line)["@timestamp"][:10] for line in Path(f).read_text().splitlines()}
            for f in files]
    assert all(len(d) == 1 for d in days) and days[0] != days[1]
    assert verify_files(files, store=env.store, now=env.clock.now).ok


def test_non_utf8_name_carries_its_exact_bytes(env: Env) -> None:
    name = b"caf\xe9 take.mov"  # Latin-1 from an old Windows share
    path = os.fsencode(env.root / "r_in") + b"/" + name
    with open(path, "wb") as fh:
        fh.write(b"z" * 100)
    from ketter.jobs.submit import submit_path

    (result,) = submit_path(env.store, env.config, env.config.route("r"), path,
                            now=env.clock.now)
    env.runner.handle(result.job_id)
    env.ship()
    lines = [json.loads(line) for line in env.log.read_text().splitlines()]
    b64 = {line.get("ketter.path_b64") for line in lines if line.get("ketter.job_id")}
    assert b64 == {base64.b64encode(path).decode()}
    assert any(line["file.path"].endswith("caf\\xe9 take.mov") for line in lines
               if "file.path" in line)
    assert verify_files([str(env.log)], store=env.store).ok
