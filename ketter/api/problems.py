"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API answers is a :class:`Problem`: its status, a short
title and a detail that says what and where. The OpenAPI schema lists, for
each operation, every status it can answer (:func:`responses`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"


class ProblemDetail(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class Problem(Exception):
    """An error answer: ``status``, ``detail`` (what and where)."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int, detail: str | None, instance: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ProblemDetail(
        title=HTTPStatus(status).phrase, status=status, detail=detail, instance=instance
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


#: Answered by every operation: a request that cannot be read or that the
#: schema refuses, a server fault.
COMMON = (400, 422, 500)


def responses(
    *statuses: int, also: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of an operation's error statuses
    (and ``also``: its other answers)."""
    return dict(also or {}) | {
        status: {
            "model": ProblemDetail,
            "description": HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
        }
        for status in sorted({*statuses, *COMMON})
    }


def install(app: FastAPI) -> None:
    """Answer every error as problem details."""

    @app.exception_handler(Problem)
    def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, request.url.path, exc.headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()))
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return problem_response(422, "; ".join(parts) or "invalid request", request.url.path)

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, detail, request.url.path, headers)

    @app.exception_handler(Exception)
    def _fault(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log (uvicorn's error logger); the client
        # learns nothing about the server's insides.
        import logging

        logging.getLogger("ketter.api").error(
            "unhandled error on %s", request.url.path, exc_info=exc
        )
        return problem_response(500, "internal error; see the node's log", request.url.path)
