"""``ketter health``'s check of the audit shipper against the workers'
heartbeat, when the workers are several processes (``worker_processes``)
beating one row: the row's pid is whichever beat last, the service it names
is the same."""

from __future__ import annotations

from ketter.health import HealthReport, _check_audit

MAIN, CHILD, SHIPPER = 100, 101, 102
NOW = 1_000.0


def _audit(beats: dict) -> tuple[bool, str]:
    report = HealthReport(node="n", checked_at=NOW)
    _check_audit(report, beats, stale=3.0, now=NOW)
    (check,) = report.checks
    return check.ok, check.detail


def _silent_shipper(workers_pid: int, workers_details: dict) -> dict:
    return {
        "workers": (workers_pid, NOW - 0.5, workers_details),
        "audit": (SHIPPER, NOW - 10, {"shipped_seq": 7, "workers_pid": MAIN, "service": MAIN}),
    }


def test_a_silent_shipper_is_seen_whichever_process_beat_last() -> None:
    for pid in (MAIN, CHILD):
        ok, detail = _audit(_silent_shipper(pid, {"running": [], "service": MAIN}))
        assert not ok and "shipping stopped" in detail, (pid, detail)


def test_another_service_s_shipper_is_not_blamed_on_these_workers() -> None:
    # The workers restarted (a new service): the old shipper's row is not theirs.
    ok, _ = _audit(_silent_shipper(200, {"running": [], "service": 200}))
    assert ok


def test_rows_from_before_the_service_field_compare_pids() -> None:
    beats = {
        "workers": (MAIN, NOW - 0.5, {"running": []}),
        "audit": (SHIPPER, NOW - 10, {"shipped_seq": 7, "workers_pid": MAIN}),
    }
    assert not _audit(beats)[0]
    beats["workers"] = (CHILD, NOW - 0.5, {"running": []})
    assert _audit(beats)[0]  # the old rows' limit: a child's beat hid it


def test_a_beating_shipper_is_fine() -> None:
    beats = _silent_shipper(CHILD, {"running": [], "service": MAIN})
    beats["audit"] = (SHIPPER, NOW - 1, beats["audit"][2])
    ok, detail = _audit(beats)
    assert ok and "shipped to seq 7" in detail
