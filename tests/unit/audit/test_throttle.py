"""Alert throttling and the route-failure count, driven by an explicit clock."""

from __future__ import annotations

from ketter.alerts.throttle import Throttle


def test_one_message_per_kind_and_route_per_interval() -> None:
    t = Throttle(min_interval=300, failures_count=100, failures_window=900)
    assert [a.body for a in t.offer("stalled", "r", "first", 0)] == ["first"]
    assert t.offer("stalled", "r", "second", 10) == []
    assert t.offer("stalled", "r", "third", 20) == []
    assert len(t.offer("stalled", "other", "other route", 30)) == 1  # another key
    assert len(t.offer("route_paused", "r", "another kind", 30)) == 1
    (late,) = t.offer("stalled", "r", "fourth", 301)
    assert late.body.startswith("fourth")
    assert "2 more 'stalled' alert(s) were held back" in late.body
    assert "- second" in late.body and "- third" in late.body


def test_held_back_alerts_are_summarised_when_due() -> None:
    t = Throttle(min_interval=60, failures_count=100, failures_window=900)
    t.offer("job_failed", "r", "a", 0)
    for i in range(8):
        t.offer("job_failed", "r", f"held {i}", 1 + i)
    assert t.due(59) == []
    (summary,) = t.due(60)
    assert summary.summary and summary.failure
    assert "8 more 'job_failed' alert(s)" in summary.body
    assert "- held 4" in summary.body and "held 5" not in summary.body
    assert "… and 3 more" in summary.body
    assert t.due(500) == []  # nothing held any more


def test_route_failures_fires_above_count_within_window() -> None:
    t = Throttle(min_interval=0, failures_count=3, failures_window=100)
    kinds = []
    for now in (0, 10, 20):
        kinds += [a.kind for a in t.offer("job_failed", "r", "x", now)]
    assert "route_failures" not in kinds
    kinds = [a.kind for a in t.offer("verify_mismatch", "r", "x", 30)]
    assert kinds == ["verify_mismatch", "route_failures"]


def test_old_failures_fall_out_of_the_window() -> None:
    t = Throttle(min_interval=0, failures_count=2, failures_window=100)
    for now in (0, 50, 200, 260):
        kinds = [a.kind for a in t.offer("job_failed", "r", "x", now)]
        assert "route_failures" not in kinds
    assert "route_failures" in [a.kind for a in t.offer("job_failed", "r", "x", 270)]
