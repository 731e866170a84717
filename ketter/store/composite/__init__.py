"""The job store's composite operations, written once for every backend.

A composite operation is a sequence of primitive reads and writes and their
audit events inside one transaction, whose rules are Ketter's, not the
backend's: a transition and its event (:meth:`CompositeJobs.advance`), a
claim and its ``claim``/``recover``/``resume`` event, a route paused with
its room episode counted. Each lives here, in one mixin per area, as a
concrete method over small abstract primitives (``_chain_head()``,
``_insert_event(row)``, ``compare_and_set()``, ``_claim_row()``,
``_put_route_status(row)``, …) that each backend implements: SQLite
(:mod:`ketter.store.sqlite`, raw statements on the hot paths), the
in-memory fake (:mod:`ketter.store.memory`) and, next, PostgreSQL.

A backend class lists its area mixin before the composite one
(``class JobsSql(SqliteCore, CompositeJobs)``), so its primitives fill the
abstract methods; a backend that misses one cannot be instantiated, and
``tests/contract/test_composites.py`` checks that none overrides a
composite operation (it would no longer be written once).
"""

from ketter.store.composite.core import CompositeCore
from ketter.store.composite.heartbeats import CompositeHeartbeats
from ketter.store.composite.jobs import CompositeJobs
from ketter.store.composite.leases import CompositeLeases
from ketter.store.composite.manifests import CompositeManifests
from ketter.store.composite.metrics import CompositeMetrics
from ketter.store.composite.routes import CompositeRoutes

__all__ = [
    "CompositeCore",
    "CompositeHeartbeats",
    "CompositeJobs",
    "CompositeLeases",
    "CompositeManifests",
    "CompositeMetrics",
    "CompositeRoutes",
]
