"""The API as a studio's tools use it: a real ``ketter api`` over HTTPS on
127.0.0.1 and real ``ketter workers`` moving real files, a token made with
``ketter token create``.

* submit → state changes and progress on the SSE stream → completed, and a
  reconnect with ``Last-Event-ID`` replays what came after, none twice;
* cancel mid-copy of a large file → ``cancelled``, no temporary left, the
  source intact; cancel after placement → 409 with the reason;
* a failed job re-queued over the API is delivered;
* an operator's pause holds new work until resumed;
* ``ketter audit verify`` passes on everything the API wrote.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.api.harness import ALL_SCOPES
from tests.integration.api.process import ApiProcess, free_port
from tests.integration.api.tls import make_certificates
from tests.integration.jobs.harness import Node, temporaries

MiB = 1024 * 1024
#: A pause at each 1 MiB checkpoint of a copy: a 24 MiB copy takes seconds.
SLOW = {"KETTER_FAULT_DELAY": "copy-progress=0.2"}


@dataclass
class Stack:
    node: Node
    api: ApiProcess
    client: httpx.Client
    base: str
    context: ssl.SSLContext
    token: str

    def submit(self, route: str, path: str) -> int:
        answer = self.client.post("/api/v1/transfers", json={"route": route, "path": path})
        assert answer.status_code == 201, answer.text
        return int(answer.json()["jobs"][0]["job_id"])

    def state(self, job_id: int) -> str:
        return str(self.client.get(f"/api/v1/transfers/{job_id}").json()["transfer"]["state"])

    def wait_state(self, job_id: int, *states: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(job_id)) not in states:
            assert time.monotonic() < deadline, f"job {job_id} is {state}, not {states}"
            time.sleep(0.1)
        return state


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    node = Node(tmp_path, max_attempts=1)
    certs = make_certificates(tmp_path / "tls")
    port = free_port()
    with node.config.open("a") as config:
        config.write(
            f"api: {{listen: '127.0.0.1:{port}', tls_cert: '{certs.server.cert}', "
            f"tls_key: '{certs.server.key}'}}\n"
        )
    made = node.ketter(
        "token", "create", "mam", "--scopes", ",".join(ALL_SCOPES), "--routes", "*", check=True
    )
    token = made.stdout.strip()
    assert token.startswith("ketter_")
    api = ApiProcess(node.config)
    context = ssl.create_default_context(cafile=str(certs.ca))
    base = f"https://127.0.0.1:{port}"
    client = httpx.Client(
        base_url=base, verify=context, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    try:
        api.wait_serving()
        yield Stack(node, api, client, base, context, token)
    finally:
        client.close()
        api.stop()
        node.cleanup()
    assert token not in api.stderr()


class Listener:
    """The SSE stream read on a thread: its events as (id, kind, data)."""

    def __init__(self, stack: Stack, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {stack.token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(base_url=stack.base, verify=stack.context, timeout=None)
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(headers,), daemon=True)
        self._thread.start()
        assert self._open.wait(30), "the stream did not open"

    def _read(self, headers: dict[str, str]) -> None:
        try:
            self._stream(headers)
        except (httpx.HTTPError, ssl.SSLError, OSError, RuntimeError):
            if not self._stop.is_set():  # closed by close(): expected
                raise

    def _stream(self, headers: dict[str, str]) -> None:
        with self._client.stream("GET", "/api/v1/stream", headers=headers) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            self._open.set()
            current: dict[str, Any] = {}
            for line in answer.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "data" in current:
                        self.events.append(
                            (current.get("id"), current.get("event", "message"),
                             json.loads(current["data"]))
                        )
                    current = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    current[key] = value

    def wait(self, predicate, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not any(predicate(*e) for e in list(self.events)):
            assert time.monotonic() < deadline, f"no {what} on the stream: {self.events[-5:]}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._client.close()


def test_submit_is_followed_on_the_stream_to_completed_and_resumes_by_id(stack: Stack) -> None:
    workers = stack.node.start_workers(env=SLOW)
    stack.node.wait_ready(workers)
    listener = Listener(stack)
    try:
        data = os.urandom(24 * MiB)
        (stack.node.root / "src" / "copy" / "reel.mov").write_bytes(data)
        job_id = stack.submit("copy", "reel.mov")
        listener.wait(lambda i, kind, d: kind == "progress" and d["job_id"] == job_id
                      and (d["bytes_done"] or 0) > 0, "progress")
        listener.wait(lambda i, kind, d: kind == "state" and d["job_id"] == job_id
                      and d["to_state"] == "completed", "completed")
    finally:
        listener.close()
    assert (stack.node.root / "dst" / "copy" / "reel.mov").read_bytes() == data
    states = [(i, d["to_state"]) for i, kind, d in listener.events
              if kind == "state" and d["job_id"] == job_id]
    assert [s for _, s in states][-1] == "completed"
    assert "transferring" in [s for _, s in states]
    ids = [int(i) for i, _ in states if i is not None]
    assert ids == sorted(set(ids))  # in chain order, none twice
    # A client that lost the stream after the first change gets the rest.
    again = Listener(stack, last_event_id=str(ids[0]))
    try:
        again.wait(lambda i, kind, d: kind == "state" and d["job_id"] == job_id
                   and d["to_state"] == "completed", "the replayed completion", timeout=30)
    finally:
        again.close()
    replayed = [int(i) for i, kind, d in again.events if kind == "state" and i is not None
                and d["job_id"] == job_id]
    assert replayed == ids[1:]
    detail = stack.client.get(f"/api/v1/transfers/{job_id}").json()
    assert detail["transfer"]["sha256"] and detail["transfer"]["state"] == "completed"


def test_cancel_mid_copy_then_after_placement(stack: Stack) -> None:
    workers = stack.node.start_workers(env=SLOW)
    stack.node.wait_ready(workers)
    source = stack.node.root / "src" / "copy" / "master.mov"
    data = os.urandom(24 * MiB)
    source.write_bytes(data)
    job_id = stack.submit("copy", "master.mov")
    deadline = time.monotonic() + 60
    while not (stack.client.get(f"/api/v1/transfers/{job_id}").json()["progress"] or {}).get(
        "bytes_done"
    ):
        assert time.monotonic() < deadline, "the copy did not start"
        time.sleep(0.05)
    answer = stack.client.post(f"/api/v1/transfers/{job_id}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["outcome"] == "requested"
    assert stack.wait_state(job_id, "cancelled", timeout=30) == "cancelled"
    assert temporaries(stack.node.root / "dst") == []
    assert not (stack.node.root / "dst" / "copy" / "master.mov").exists()
    assert source.read_bytes() == data
    # Re-queued, it is delivered; once placed, a cancel is refused with why.
    again = stack.client.post(f"/api/v1/transfers/{job_id}/requeue")
    assert again.status_code == 200, again.text
    stack.wait_state(job_id, "completed")
    late = stack.client.post(f"/api/v1/transfers/{job_id}/cancel")
    assert late.status_code == 409
    assert late.headers["content-type"] == "application/problem+json"
    assert "completed" in late.json()["detail"]
    assert (stack.node.root / "dst" / "copy" / "master.mov").read_bytes() == data
    audit = stack.node.ketter("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_failed_job_requeued_over_the_api_is_delivered(stack: Stack) -> None:
    # A destination that cannot be written: the job fails (max_attempts 1).
    dst = stack.node.root / "dst" / "move"
    (stack.node.root / "src" / "move" / "stem.wav").write_bytes(b"stem" * 1000)
    dst.rmdir()
    dst.write_bytes(b"not a folder")
    workers = stack.node.start_workers()
    stack.node.wait_ready(workers)
    job_id = stack.submit("move", "stem.wav")
    stack.wait_state(job_id, "failed")
    dst.unlink()
    dst.mkdir()
    answer = stack.client.post(f"/api/v1/transfers/{job_id}/requeue")
    assert answer.status_code == 200, answer.text
    stack.wait_state(job_id, "completed")
    assert (dst / "stem.wav").read_bytes() == b"stem" * 1000
    assert not (stack.node.root / "src" / "move" / "stem.wav").exists()


def test_an_operator_pause_holds_new_work_until_resumed(stack: Stack) -> None:
    workers = stack.node.start_workers()
    stack.node.wait_ready(workers)
    held = stack.client.post("/api/v1/routes/copy/pause", json={"reason": "QC freeze for ep 104"})
    assert held.status_code == 200 and held.json()["changed"] is True
    routes = {r["name"]: r for r in stack.client.get("/api/v1/routes").json()["items"]}
    assert routes["copy"]["held"] is True
    assert routes["copy"]["hold_reason"] == "QC freeze for ep 104"
    assert routes["copy"]["held_by"] == "token:mam"
    assert routes["copy"]["paused"] is False  # an outage pause is another thing
    (stack.node.root / "src" / "copy" / "ep104.mov").write_bytes(b"e" * 5000)
    job_id = stack.submit("copy", "ep104.mov")
    time.sleep(3)  # several sweeps: nothing may start while held
    assert stack.state(job_id) == "detected"
    resumed = stack.client.post("/api/v1/routes/copy/resume")
    assert resumed.status_code == 200 and resumed.json()["changed"] is True
    stack.wait_state(job_id, "completed")
    status = stack.node.ketter("status")
    assert status.returncode == 0
    # The API is one of the node's services: health checks its heartbeat.
    health = json.loads(stack.node.ketter("health", "--json").stdout)
    (api,) = [c for c in health["checks"] if c["name"] == "api"]
    assert api["ok"] is True, api
    over_http = stack.client.get("/api/v1/health")
    assert over_http.status_code in (200, 503)
    assert next(c for c in over_http.json()["checks"] if c["name"] == "api")["ok"] is True
    audit = stack.node.ketter("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr
