"""The peer of ``make bench-api``: the same stack with nothing of Ketter's.

FastAPI on uvicorn (the same server options as ``ketter api``: httptools,
uvloop's event loop, no access log), one sync handler that answers a fixed page
of 50 transfers (the JSON ``GET /api/v1/transfers?limit=50`` answered in the
same run) and one that answers a fixed transfer's detail (``GET
/api/v1/transfers/{id}``, whatever the id), with no token check, no store
and no audit, served by as many
processes as ``ketter api`` uses (``api.processes``), each on its own
``SO_REUSEPORT`` socket as Ketter's are. What it serves per second on this
machine is the ceiling of any API written on this stack here:
``benchmarks/api.py`` prints Ketter's figures as a ratio of it.

Usage: ``python benchmarks/api_peer.py PORT PAGE.json [PROCESSES]`` (the
detail in ``peer-detail.json`` beside ``PAGE.json``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path

import uvicorn
import uvloop
from fastapi import FastAPI
from fastapi.responses import JSONResponse


def build(page: dict, detail: dict) -> FastAPI:  # type: ignore[type-arg]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/api/v1/transfers")
    def transfers() -> JSONResponse:
        return JSONResponse(page)

    @app.get("/api/v1/transfers/{job_id}")
    def transfer(job_id: int) -> JSONResponse:
        return JSONResponse(detail)

    return app


def serve(port: int, page: dict, detail: dict) -> None:  # type: ignore[type-arg]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    config = uvicorn.Config(
        build(page, detail), log_level=logging.WARNING, access_log=False, server_header=False
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvicorn.Server(config).serve(sockets=[sock]))


def main() -> None:
    import json

    port, page_path = int(sys.argv[1]), Path(sys.argv[2])
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    page = json.loads(page_path.read_text())
    detail = json.loads(page_path.with_name("peer-detail.json").read_text())
    others = [
        subprocess.Popen([sys.executable, __file__, str(port), str(page_path), "1"])
        for _ in range(processes - 1)
    ]
    try:
        serve(port, page, detail)
    finally:
        for proc in others:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
