"""``/metrics``: the Prometheus exposition (:mod:`ketter.metrics`), read from
the job store at scrape time."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Request, Response

from ketter.api.guard import Caller, require
from ketter.api.problems import responses
from ketter.api.session import session

router = APIRouter(tags=["metrics"])


def scrape(request: Request) -> Response:
    """One scrape of the node's metrics."""
    from ketter.metrics.exposition import render_metrics

    node = request.app.state.node
    with session(request) as s:
        body, content_type = render_metrics(s.store, node.config, now=time.time())
    return Response(body, media_type=content_type)


@router.get(
    "/metrics",
    response_class=Response,
    responses=responses(
        401,
        403,
        429,
        also={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    ),
)
def metrics(request: Request, caller: Annotated[Caller, require("metrics:read")]) -> Response:
    """The Prometheus metrics (scope ``metrics:read``)."""
    return scrape(request)
