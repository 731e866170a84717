"""The collector over the in-memory store: what each metric reads, the
configured routes shown at 0, bounded labels, and no side effect on
prometheus_client's global registry."""

from __future__ import annotations

import prometheus_client

from ketter import __version__
from ketter.audit.chain import AuditChain
from ketter.config.schema import Config, RouteConfig
from ketter.jobs.states import State
from ketter.metrics.collector import RESULTS, registry_for
from ketter.metrics.exposition import render_metrics
from ketter.store.memory import MemoryJobStore
from ketter.store.ports.jobs import JobChange
from ketter.store.rows import RouteStatusRow
from tests.contract.seed import put_job

NOW = 10_000.0


def _config(*names: str) -> Config:
    return Config(routes=tuple(RouteConfig(name=n, source="/s", destination="/d") for n in names))


def _value(store: MemoryJobStore, config: Config, name: str, **labels: str) -> float | None:
    registry = registry_for(store, config, clock=lambda: NOW)
    return registry.get_sample_value(name, labels)


def test_configured_routes_show_every_state_and_result_at_zero() -> None:
    store = MemoryJobStore(AuditChain(node="n"))
    config = _config("dailies", "vfx")
    for route in ("dailies", "vfx"):
        for state in State:
            assert _value(store, config, "ketter_jobs", route=route, state=state.value) == 0
        for result in RESULTS:
            labels = {"route": route, "result": result}
            assert _value(store, config, "ketter_transfers_total", **labels) == 0
        assert _value(store, config, "ketter_retries_total", route=route) == 0
        assert _value(store, config, "ketter_route_paused", route=route, reason="") == 0
        assert _value(store, config, "ketter_oldest_waiting_job_age_seconds", route=route) == 0
        assert _value(store, config, "ketter_last_success_timestamp_seconds", route=route) is None
    assert set(RESULTS) >= {"completed", "failed", "superseded"}


def test_gauges_read_the_store_at_scrape_time() -> None:
    store = MemoryJobStore(AuditChain(node="n"))
    config = _config("dailies")
    put_job(store, route="dailies", created_at=NOW - 700)
    put_job(store, route="dailies", state="retry_wait", created_at=NOW - 4000)
    put_job(store, route="gone", state="transferring")  # no longer configured: still shown
    with store.transaction():
        store.tables.route_status["dailies"] = RouteStatusRow(
            route="dailies",
            updated_at=1.0,
            paused=1,
            reason="full: 3 GB by 12:00",
            since=1.0,
            room_needed=3_000_000_000,
        )
    store.hold_route("dailies", reason="grading session", now=NOW)
    store.hold_route("vfx", reason="grading session", now=NOW)
    store.beat("n", {"workers": "{}", "watcher": "{}"}, pid=1, now=NOW - 3)
    store.beat("other", {"workers": "{}"}, pid=2, now=NOW - 30)  # older: the newest counts
    job = put_job(store, route="dailies", state="verifying")
    store.advance(
        job,
        "verifying",
        [JobChange("completed", "complete", {"size": 9})],
        claim=None,
        now=NOW - 60,
    )

    def get(name: str, **labels: str) -> float | None:
        return _value(store, config, name, **labels)

    assert get("ketter_oldest_waiting_job_age_seconds", route="dailies") == 4000
    assert get("ketter_jobs", route="dailies", state="retry_wait") == 1
    assert get("ketter_jobs", route="gone", state="transferring") == 1
    assert get("ketter_route_paused", route="dailies", reason="destination_full") == 1
    assert get("ketter_route_paused", route="dailies", reason="operator") == 1
    assert get("ketter_route_paused", route="vfx", reason="operator") == 1
    assert get("ketter_route_paused", route="dailies", reason="") is None
    assert get("ketter_heartbeat_age_seconds", process="workers") == 3
    assert get("ketter_heartbeat_age_seconds", process="watcher") == 3
    assert get("ketter_last_success_timestamp_seconds", route="dailies") == NOW - 60
    assert get("ketter_transfers_total", route="dailies", result="completed") == 1
    assert get("ketter_bytes_verified_total", route="dailies") == 9
    assert get("ketter_build_info", version=__version__) == 1
    body, content_type = render_metrics(store, config, now=NOW)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"3 GB" not in body  # the free-text reason is never a label


def test_nothing_is_registered_globally() -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    render_metrics(MemoryJobStore(AuditChain(node="n")), _config("r"), now=NOW)
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before
    assert not any(n.startswith("ketter_") for n in before)
