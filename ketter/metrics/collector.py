"""The Prometheus collector: every value read from the job store when
Prometheus scrapes, nothing kept in the process.

Ketter's processes are killed and restarted by design (a crash is a normal
stop), so no in-process counter or multiprocess mode could be trusted: the
totals are the job store's ``counters`` (incremented in the transaction of
the transition they count, :mod:`ketter.store.composite.counting`), the
gauges its rows now. The collector is registered on its own
:class:`CollectorRegistry` (:func:`registry_for`), never on
``prometheus_client``'s global one: importing this module changes nothing.

Labels are bounded: routes (from the config, plus any the store still has
jobs or totals for), results and states (:class:`ketter.jobs.states.State`),
process names, a pause kind. Never a path, a job id or a free-text reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ketter import __version__
from ketter.config import Config
from ketter.jobs.states import TERMINAL, State
from ketter.store.composite import counting
from ketter.store.port import JobStore
from ketter.store.ports.metrics import ScrapeFacts
from ketter.store.rows import RouteStatusRow
from ketter.store.wal_watch import wal_state


@dataclass(frozen=True)
class CounterSpec:
    """A Prometheus counter read from one ``counters`` name."""

    #: The metric's name without ``_total`` (prometheus_client adds it).
    metric: str
    name: str
    help: str


#: The per-route totals other than the transfers by result.
ROUTE_COUNTERS = (
    CounterSpec(
        "ketter_bytes_verified",
        counting.BYTES_VERIFIED,
        "Bytes copied and verified at the destination (read back and compared).",
    ),
    CounterSpec(
        "ketter_files_transferred",
        counting.FILES_TRANSFERRED,
        "Files in verified copies (a folder counts its files).",
    ),
    CounterSpec(
        "ketter_retries",
        counting.RETRIES,
        "Jobs put in retry_wait (transient error, route pause, source in use).",
    ),
    CounterSpec(
        "ketter_verify_failures",
        counting.VERIFY_FAILURES,
        "Copies whose read-back did not match the source.",
    ),
    CounterSpec(
        "ketter_source_deletes",
        counting.SOURCE_DELETES,
        "Sources deleted by a move route after their verified placement.",
    ),
    CounterSpec(
        "ketter_transfer_seconds",
        counting.TRANSFER_SECONDS,
        "Active copy-and-verify time of verified copies (waits excluded).",
    ),
)

#: Results of ``ketter_transfers_total``: every terminal state.
RESULTS = tuple(state.value for state in State if state in TERMINAL)


#: The ``reason`` of a route an operator holds (``ketter pause``, the API).
OPERATOR = "operator"


def pause_kinds(status: RouteStatusRow) -> list[str]:
    """The ``reason`` labels of a paused or held route: kinds, never the
    free-text reason (it holds sizes and times: a new series at each
    pause). A route both held and paused for an outage has both."""
    kinds = []
    if status.paused:
        kinds.append("destination_full" if status.room_needed is not None else "unavailable")
    if status.held:
        kinds.append(OPERATOR)
    return kinds


class StoreCollector(Collector):
    """Reads ``store`` at each scrape; ``config`` names the routes (each
    shown at 0 until it has something), ``clock`` is the time ages are
    counted to."""

    def __init__(self, store: JobStore, config: Config, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.config = config
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        facts = self.store.scrape_facts()
        now = self.clock()
        routes = self._routes(facts)
        yield from self._counters(facts, routes)
        yield self._jobs(facts, routes)
        yield self._oldest_waiting(facts, routes, now)
        yield self._paused(facts, routes)
        yield self._last_success(facts, routes)
        yield self._heartbeats(facts, now)
        if self.config.store.backend == "sqlite":
            yield self._store_log()
        build = GaugeMetricFamily("ketter_build_info", "Ketter's version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build

    def _routes(self, facts: ScrapeFacts) -> list[str]:
        names = {route.name for route in self.config.routes}
        names.update(c.route for c in facts.counters)
        names.update(c.route for c in facts.jobs)
        return sorted(names)

    def _counters(self, facts: ScrapeFacts, routes: list[str]) -> Iterator[Metric]:
        totals = {(c.route, c.name): c.value for c in facts.counters}
        transfers = CounterMetricFamily(
            "ketter_transfers",
            "Jobs that reached a terminal state, by result.",
            labels=["route", "result"],
        )
        for route in routes:
            for result in RESULTS:
                value = totals.get((route, counting.TRANSFERS + result), 0.0)
                transfers.add_metric([route, result], value)
        yield transfers
        for spec in ROUTE_COUNTERS:
            family = CounterMetricFamily(spec.metric, spec.help, labels=["route"])
            for route in routes:
                family.add_metric([route], totals.get((route, spec.name), 0.0))
            yield family

    def _jobs(self, facts: ScrapeFacts, routes: list[str]) -> Metric:
        counts = {(c.route, c.state): c.jobs for c in facts.jobs}
        family = GaugeMetricFamily(
            "ketter_jobs", "Jobs in the job store, by route and state.", labels=["route", "state"]
        )
        states = [state.value for state in State]
        states += sorted({state for _, state in counts} - set(states))
        for route in routes:
            for state in states:
                family.add_metric([route, state], counts.get((route, state), 0))
        return family

    def _oldest_waiting(self, facts: ScrapeFacts, routes: list[str], now: float) -> Metric:
        family = GaugeMetricFamily(
            "ketter_oldest_waiting_job_age_seconds",
            "Age (since detection) of the route's oldest job in detected or "
            "retry_wait; 0 when none waits.",
            labels=["route"],
        )
        for route in routes:
            created = facts.oldest_waiting.get(route)
            family.add_metric([route], max(now - created, 0.0) if created is not None else 0.0)
        return family

    def _paused(self, facts: ScrapeFacts, routes: list[str]) -> Metric:
        family = GaugeMetricFamily(
            "ketter_route_paused",
            "1 while the route is paused, one series per kind of pause "
            '(unavailable, destination_full, operator); 0 (reason "") while it runs.',
            labels=["route", "reason"],
        )
        paused = {status.route: status for status in facts.paused}
        for route in sorted(set(routes) | set(paused)):
            kinds = pause_kinds(paused[route]) if route in paused else []
            if not kinds:
                family.add_metric([route, ""], 0)
            for kind in kinds:
                family.add_metric([route, kind], 1)
        return family

    def _last_success(self, facts: ScrapeFacts, routes: list[str]) -> Metric:
        family = GaugeMetricFamily(
            "ketter_last_success_timestamp_seconds",
            "Unix time of the route's latest completed job (absent before its first).",
            labels=["route"],
        )
        marks = {c.route: c.value for c in facts.counters if c.name == counting.LAST_SUCCESS_AT}
        for route in routes:
            if route in marks:
                family.add_metric([route], marks[route])
        return family

    def _heartbeats(self, facts: ScrapeFacts, now: float) -> Metric:
        family = GaugeMetricFamily(
            "ketter_heartbeat_age_seconds",
            "Seconds since the process (watcher, workers, a route's watch) last "
            "wrote its heartbeat.",
            labels=["process"],
        )
        newest: dict[str, float] = {}
        for beat in facts.heartbeats:  # one series per process, its newest beat
            newest[beat.component] = max(newest.get(beat.component, beat.ts), beat.ts)
        for process, ts in sorted(newest.items()):
            family.add_metric([process], max(now - ts, 0.0))
        return family

    def _store_log(self) -> Metric:
        family = GaugeMetricFamily(
            "ketter_store_wal_in_use_bytes",
            "Bytes of the SQLite job store's write-ahead log in use (since it last "
            "started again): a read transaction left open makes it grow.",
        )
        in_use = wal_state(self.config.db_path).in_use_bytes
        if in_use is not None:  # not readable by this account: no sample
            family.add_metric([], in_use)
        return family


def registry_for(
    store: JobStore, config: Config, *, clock: Callable[[], float]
) -> CollectorRegistry:
    """A registry of its own holding only the store collector (no process or
    platform collectors: they would describe whichever process scrapes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, config, clock=clock))
    return registry
