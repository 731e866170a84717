"""Refuse request bodies above ``api.max_body`` (413), whether announced by
``Content-Length`` or streamed without one, before a handler reads them."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]


class BodyLimit:
    """ASGI middleware: at most ``limit`` bytes of request body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.limit:
                        await self._refuse(scope, send)
                        return
                except ValueError:
                    await self._refuse(scope, send, status=400, detail="bad Content-Length")
                    return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, send)

    async def _refuse(
        self, scope: Scope, send: Any, *, status: int = 413, detail: str | None = None
    ) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large" if status == 413 else "Bad Request",
                "status": status,
                "detail": detail or f"the request body is over {self.limit} bytes (api.max_body)",
                "instance": scope.get("path", ""),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
