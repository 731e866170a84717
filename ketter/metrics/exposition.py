"""One scrape in the Prometheus text format: what the API serves at
``/metrics`` and ``ketter metrics`` prints."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest

from ketter.config import Config
from ketter.metrics.collector import registry_for
from ketter.store.port import JobStore

#: The text format 0.0.4 (spelled out: older prometheus_client releases
#: within the pinned range call it ``CONTENT_TYPE_LATEST``, newer ones mean
#: 1.0.0 by that name).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(store: JobStore, config: Config, *, now: float) -> tuple[bytes, str]:
    """The body and content type of one scrape of ``store`` (ages counted to
    ``now``). The text format 0.0.4, which every Prometheus reads (Debian
    12's 2.42 included): Ketter's names and labels need nothing newer."""
    registry = registry_for(store, config, clock=lambda: now)
    return generate_latest(registry), CONTENT_TYPE
