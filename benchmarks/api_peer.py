"""The peer of ``make bench-api``: the same stack with nothing of Ketter's.

FastAPI on uvicorn (the same server options as ``ketter api``: httptools,
uvloop, no access log), one sync handler that answers a fixed page of 50
transfers (the JSON ``GET /api/v1/transfers?limit=50`` answered in the same
run) with no token check, no store and no audit. What it serves per second
on this machine is the ceiling of any API written on this stack here:
``benchmarks/api.py`` prints Ketter's figures as a ratio of it.

Usage: ``python benchmarks/api_peer.py PORT PAGE.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse


def build(page: dict) -> FastAPI:  # type: ignore[type-arg]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/v1/transfers")
    def transfers() -> JSONResponse:
        return JSONResponse(page)

    return app


def main() -> None:
    import json

    port, page = int(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    uvicorn.run(
        build(page),
        host="127.0.0.1",
        port=port,
        log_level=logging.WARNING,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
