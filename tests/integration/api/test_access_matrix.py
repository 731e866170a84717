"""Who may call what: a scope × route matrix generated from the app's own
operations (a new endpoint is in it without anyone adding a line), and the
OpenAPI schema those operations publish."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter

from ketter.access.limiter import FailedAuthLimiter
from ketter.api.app import OPENAPI, ROUTERS, api_operations
from ketter.api.guard import Operation, check_every_operation_guarded, operations
from tests.integration.api.harness import ALL_SCOPES, ApiNode, make_node

#: Operations whose answer streams without end: authorised calls are
#: checked over real HTTP (test_api_process.py), refusals here.
ENDLESS = {("GET", "/api/v1/stream")}


def on_a_route(op: Operation) -> bool:
    """An action on one route (its job's, its name, its body's)."""
    return "{" in op.path or (op.method, op.path) == ("POST", "/api/v1/transfers")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiNode]:
    node = make_node(tmp_path)
    # The matrix makes many refused calls from one address on purpose.
    node.client.app.state.limiter = FailedAuthLimiter(max_failures=100_000)
    yield node
    node.client.close()
    node.node.close()


def _request(api: ApiNode, op: Operation, job_id: int) -> dict[str, Any]:
    path = op.path.replace("{job_id}", str(job_id)).replace("{name}", "dub-fr")
    body: dict[str, Any] | None = None
    if (op.method, op.path) == ("POST", "/api/v1/transfers"):
        body = {"route": "dub-fr", "path": "take.wav"}
    elif op.path.endswith("/pause"):
        body = {"reason": "matrix"}
    return {"method": op.method, "url": path, "json": body}


def _call(api: ApiNode, op: Operation, job_id: int, token: str | None) -> Any:
    return api.client.request(**_request(api, op, job_id), headers=api.headers(token))


def test_every_operation_is_in_the_matrix_and_guarded(api: ApiNode) -> None:
    ops = api_operations()
    assert {(o.method, o.path) for o in ops} >= {
        ("GET", "/api/v1/transfers"),
        ("POST", "/api/v1/transfers"),
        ("GET", "/api/v1/transfers/{job_id}"),
        ("POST", "/api/v1/transfers/{job_id}/requeue"),
        ("GET", "/api/v1/routes"),
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/stream"),
        ("GET", "/metrics"),
    }
    assert {o.scope for o in ops} <= set(ALL_SCOPES)
    # The schema lists exactly what is served (nothing outside the matrix).
    spec = api.client.get(OPENAPI).json()
    served = {(m.upper(), p) for p, methods in spec["paths"].items() for m in methods}
    assert served == {(o.method, o.path) for o in ops}


def test_an_unguarded_operation_stops_the_app_from_building() -> None:
    oops = APIRouter()
    oops.add_api_route("/oops", lambda: {"open": True}, methods=["GET"])
    with pytest.raises(RuntimeError, match="GET /api/v1/oops is not guarded"):
        check_every_operation_guarded(operations([*ROUTERS, ("/api/v1", oops)]))


def test_scope_and_route_matrix(api: ApiNode) -> None:
    (api.source("dub-fr") / "take.wav").write_bytes(b"t" * 100)
    (api.source("dub-fr") / "first.wav").write_bytes(b"f" * 100)
    writer = api.token(["transfers:write"], "*", name="seed")
    seeded = api.client.post(
        "/api/v1/transfers", json={"route": "dub-fr", "path": "first.wav"},
        headers=api.headers(writer),
    )
    job_id = seeded.json()["jobs"][0]["job_id"]
    now = time.time()
    expired = api.token(ALL_SCOPES, "*", name="expired", expires_at=now + 0.5)
    revoked = api.token(ALL_SCOPES, "*", name="revoked")
    api.revoke("revoked")
    time.sleep(0.6)
    ops = api_operations()
    failures: list[str] = []

    def expect(op: Operation, who: str, token: str | None, allowed: set[int]) -> None:
        before = len(api.store.events_after(0, limit=1_000_000))
        answer = _call(api, op, job_id, token)
        if answer.status_code not in allowed:
            failures.append(
                f"{op.method} {op.path} as {who}: {answer.status_code} {answer.text[:200]}"
            )
            return
        if answer.status_code in (401, 403):
            assert answer.headers["content-type"] == "application/problem+json"
            new = api.store.events_after(0, limit=1_000_000)[before:]
            kinds = [e.event for e in new]
            want = "api_auth_failed" if answer.status_code == 401 else "api_denied"
            if kinds != [want]:
                failures.append(f"{op.method} {op.path} as {who}: events {kinds}, want [{want}]")

    for op in ops:
        others = [s for s in ALL_SCOPES if s != op.scope]
        expect(op, "no token", None, {401})
        expect(op, "a made-up token", "ketter_" + "Z" * 43, {401})
        expect(op, "a malformed token", "hunter2", {401})
        expect(op, "an expired token", expired, {401})
        expect(op, "a revoked token", revoked, {401})
        expect(op, "a token without the scope", api.token(others, "*"), {403})
        outside = api.token([op.scope], "qc")
        if on_a_route(op):
            expect(op, "a token for other routes", outside, {403})
        elif (op.method, op.path) not in ENDLESS:
            # Lists answer, with nothing of the routes the token does not cover.
            expect(op, "a token for other routes", outside, {200, 503})
        if (op.method, op.path) not in ENDLESS:
            # Allowed: whatever the operation answers, never a refusal.
            expect(op, "the right token", api.token([op.scope], "dub-*"),
                   {200, 201, 202, 404, 409, 503})
    assert not failures, "\n".join(failures)


def test_lists_hide_what_a_token_does_not_cover(api: ApiNode) -> None:
    (api.source("dub-fr") / "fr.wav").write_bytes(b"f")
    (api.source("qc") / "qc.wav").write_bytes(b"q")
    writer = api.token(["transfers:write"], "*", name="w")
    for route, name in (("dub-fr", "fr.wav"), ("qc", "qc.wav")):
        api.client.post("/api/v1/transfers", json={"route": route, "path": name},
                        headers=api.headers(writer))
    reader = api.token(ALL_SCOPES, "qc", name="r")
    h = api.headers(reader)
    transfers = api.client.get("/api/v1/transfers", headers=h).json()["items"]
    assert {t["route"] for t in transfers} == {"qc"}
    routes = api.client.get("/api/v1/routes", headers=h).json()["items"]
    assert [r["name"] for r in routes] == ["qc"]
    events = api.client.get("/api/v1/events", headers=h).json()["items"]
    assert events and all(e["route"] in (None, "qc") for e in events)


def test_the_schema_is_openapi_3_1_and_lists_every_status(api: ApiNode) -> None:
    answer = api.client.get(OPENAPI)
    assert answer.status_code == 200
    spec = answer.json()
    assert spec["openapi"].startswith("3.1")
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = set(op["responses"])
            assert {"401", "403", "422", "429", "500"} <= codes, (method, path, codes)
            if "{" in path:
                assert "404" in codes, (method, path)
    # No documentation UI: it would load its scripts from a CDN.
    assert api.client.get("/docs").status_code == 404
