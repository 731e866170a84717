"""The API application: :func:`build_app` for ``ketter api``'s listener and
:func:`build_metrics_app` for the optional ``metrics_listen`` one.

Sync handlers only (Starlette runs them on its thread pool); each opens and
closes its own connections (:mod:`ketter.api.session`). Every operation is
guarded by :func:`ketter.api.guard.require` — the app refuses to build
otherwise — and answers errors as problem details
(:mod:`ketter.api.problems`). No CORS: browsers on other origins get
nothing (``api.cors: none``). The OpenAPI 3.1 schema is at
``/api/v1/openapi.json``, generated from the models that validate the
requests; no documentation UI is served (it would load scripts from a
CDN, and the node is offline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from ketter import __version__
from ketter.api import problems
from ketter.api.bodylimit import BodyLimit
from ketter.api.endpoints import metrics, routes, stream, transfers
from ketter.api.endpoints import node as node_endpoints
from ketter.api.guard import Operation, check_every_operation_guarded, operations
from ketter.api.session import read_connections

if TYPE_CHECKING:
    from ketter.node import Node

PREFIX = "/api/v1"
OPENAPI = f"{PREFIX}/openapi.json"
#: Default ``api.max_body``.
MAX_BODY = 1 << 20


def _app(node: Node, *, openapi_url: str | None, processes: int = 1) -> FastAPI:
    from ketter.access.limiter import MAX_FAILURES, FailedAuthLimiter

    app = FastAPI(
        title="Ketter",
        version=__version__,
        summary="Verified, audited file transfers between studio network zones",
        openapi_url=openapi_url,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.node = node
    app.state.reads = read_connections(node)
    # Counted per process: each of ``processes`` allows its share, so an
    # address gets no more failures from all of them than from one.
    app.state.limiter = FailedAuthLimiter(max_failures=max(1, MAX_FAILURES // processes))
    problems.install(app)
    api = getattr(node.config, "api", None)
    app.add_middleware(BodyLimit, limit=getattr(api, "max_body", None) or MAX_BODY)
    return app


#: Every router of the API with the prefix it is served under.
ROUTERS = (
    (PREFIX, transfers.router),
    (PREFIX, stream.router),
    (PREFIX, routes.router),
    (PREFIX, node_endpoints.router),
    # Where Prometheus looks by default; with a token of scope metrics:read.
    ("", metrics.router),
)


def api_operations() -> list[Operation]:
    """Every operation :func:`build_app` serves besides its schema."""
    return operations(ROUTERS)


def build_app(node: Node, *, processes: int = 1) -> FastAPI:
    """The HTTP API of ``node`` (built with role ``api``), served by
    ``processes`` processes."""
    check_every_operation_guarded(api_operations())
    app = _app(node, openapi_url=OPENAPI, processes=processes)
    for prefix, router in ROUTERS:
        app.include_router(router, prefix=prefix)
    return app


def build_metrics_app(node: Node) -> FastAPI:
    """``/metrics`` alone, without a token: for a listener only a Prometheus
    host reaches (``api.metrics_listen``)."""
    app = _app(node, openapi_url=None)
    app.add_api_route("/metrics", metrics.scrape, methods=["GET"], include_in_schema=False)
    return app
