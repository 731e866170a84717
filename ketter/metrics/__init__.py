"""Prometheus metrics (issue #17): a collector that reads the job store at
scrape time (:mod:`ketter.metrics.collector`) and one scrape rendered in the
text format (:mod:`ketter.metrics.exposition`), served by the API at
``/metrics`` and printed by ``ketter metrics``. See docs/observability.md."""
