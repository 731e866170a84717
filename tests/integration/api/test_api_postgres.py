"""The HTTP API of a node whose job store is on PostgreSQL (issue #18): a
submission writes there, the list, the detail and the events read it back
through the API's read connections (``node.open_read(shared=True)``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ketter.api.app import build_app
from ketter.config import load_config
from ketter.node import Node
from tests.integration.api.harness import CONFIG, ApiNode


@pytest.fixture
def api(tmp_path: Path, pg_dsn: str) -> Iterator[ApiNode]:
    text = CONFIG + f"store: {{backend: postgresql, dsn: '{pg_dsn}'}}\n"
    (tmp_path / "ketter.yaml").write_text(text)
    for route in ("dub-fr", "dub-de", "qc"):
        (tmp_path / "in" / route).mkdir(parents=True)
        (tmp_path / "out" / route).mkdir(parents=True)
    node = Node.from_config(load_config(tmp_path / "ketter.yaml"), "api")
    app = build_app(node)
    api = ApiNode(tmp_path, node, TestClient(app, client=("10.0.0.7", 50000)), app)
    yield api
    api.client.close()
    node.close()
    app.state.reads.close()


def test_submit_list_detail_and_events_on_postgresql(api: ApiNode) -> None:
    (api.source("dub-fr") / "mix.wav").write_bytes(b"m" * 1000)
    token = api.token(["transfers:write", "transfers:read", "audit:read"], "*")
    made = api.client.post(
        "/api/v1/transfers",
        json={"route": "dub-fr", "path": "mix.wav"},
        headers=api.headers(token),
    )
    assert made.status_code == 201, made.text
    (job,) = made.json()["jobs"]
    listed = api.client.get("/api/v1/transfers", headers=api.headers(token))
    assert listed.status_code == 200, listed.text
    assert [j["job_id"] for j in listed.json()["items"]] == [job["job_id"]]
    detail = api.client.get(f"/api/v1/transfers/{job['job_id']}", headers=api.headers(token))
    assert detail.status_code == 200, detail.text
    assert detail.json()["transfer"]["state"] == "detected"
    events = api.client.get("/api/v1/events?after=0", headers=api.headers(token))
    assert events.status_code == 200, events.text
    names = [e["event"] for e in events.json()["items"]]
    assert "detect" in names and "api_call" in names
    assert not list((api.root / "state").glob("*.db"))  # nothing of SQLite's
