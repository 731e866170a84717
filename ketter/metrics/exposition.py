"""One scrape in the Prometheus text format: what the API serves at
``/metrics`` and ``ketter metrics`` prints."""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ketter.config import Config
from ketter.metrics.collector import registry_for
from ketter.store.port import JobStore


def render_metrics(store: JobStore, config: Config, *, now: float) -> tuple[bytes, str]:
    """The body and content type of one scrape of ``store`` (ages counted to ``now``)."""
    registry = registry_for(store, config, clock=lambda: now)
    return generate_latest(registry), CONTENT_TYPE_LATEST
