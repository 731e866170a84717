"""The API in-process (Starlette's test client) over a real job store and
real files: submit, list, read, filters, pagination, path attacks, the
audit trail of every call."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.jobs.states import State
from ketter.jobs.transitions import transition
from tests.integration.api.harness import ApiNode, make_node


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiNode]:
    node = make_node(tmp_path)
    yield node
    node.client.close()
    node.node.close()


def submit(api: ApiNode, token: str, route: str, path: str):  # type: ignore[no-untyped-def]
    return api.client.post(
        "/api/v1/transfers", json={"route": route, "path": path}, headers=api.headers(token)
    )


def test_submit_twice_gives_one_job_and_says_which(api: ApiNode) -> None:
    (api.source("dub-fr") / "mix.wav").write_bytes(b"m" * 1000)
    token = api.token(["transfers:write", "transfers:read"], "dub-*")
    first = submit(api, token, "dub-fr", "mix.wav")
    assert first.status_code == 201, first.text
    (job,) = first.json()["jobs"]
    assert job["created"] is True
    again = submit(api, token, "dub-fr", "mix.wav")
    assert again.status_code == 200, again.text
    (same,) = again.json()["jobs"]
    assert same == {
        "job_id": job["job_id"],
        "created": False,
        "message": same["message"],
    }
    assert f"already queued as job {job['job_id']}" in same["message"]
    assert api.job_count() == 1
    detail = api.client.get(f"/api/v1/transfers/{job['job_id']}", headers=api.headers(token))
    assert detail.status_code == 200
    body = detail.json()
    assert body["transfer"]["state"] == "detected"
    assert body["transfer"]["source"].endswith("in/dub-fr/mix.wav")
    (detect,) = [e for e in body["events"] if e["event"] == "detect"]
    assert len(detect["hash"]) == 64 and len(detect["prev_hash"]) == 64
    assert body["progress"] is None and body["mhl"] is None
    # Both calls are in the chain, under the token's name, from the client.
    calls = api.events("api_call")
    assert [c.user for c in calls] == ["token:t1", "token:t1"]
    import json

    first_call = json.loads(calls[0].details)
    assert first_call["client_ip"] == "10.0.0.7"
    assert first_call["status"] == 201 and first_call["job_ids"] == [job["job_id"]]
    assert json.loads(calls[1].details)["status"] == 200


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("../secret.txt", 422, "'..' component"),
        ("sub/../../secret.txt", 422, "'..' component"),
        ("/etc/passwd", 422, "not absolute"),
        ("link.txt", 422, "symbolic link"),
        ("linkdir/inside.txt", 422, "symbolic link"),
        ("a\x00b", 422, "NUL"),
        ("x" * 4096, 422, "4096"),
        ("n" * 300, 422, "limit is 255"),
        ("./mix.wav", 422, "'.'"),
        ("nope.wav", 404, "does not exist"),
        ("mix.wav/deeper", 404, "does not exist"),
    ],
)
def test_path_attacks_are_refused_and_nothing_is_enqueued(
    api: ApiNode, path: str, status: int, reason: str
) -> None:
    source = api.source("dub-fr")
    (source / "mix.wav").write_bytes(b"m")
    secret = api.root / "secret.txt"
    secret.write_bytes(b"do not send")
    outside = api.root / "elsewhere"
    outside.mkdir()
    (outside / "inside.txt").write_bytes(b"do not send either")
    os.symlink(secret, source / "link.txt")
    os.symlink(outside, source / "linkdir")
    token = api.token(["transfers:write"], "*")
    answer = submit(api, token, "dub-fr", path)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert reason in answer.json()["detail"]
    assert api.job_count() == 0
    # A refused call is still on the record, with its outcome.
    (call,) = api.events("api_call")
    assert f'"status":{status}' in call.details.replace(" ", "")


def test_a_submission_on_an_unknown_route_lists_the_known_ones(api: ApiNode) -> None:
    token = api.token(["transfers:write"], "*")
    answer = submit(api, token, "nope", "x")
    assert answer.status_code == 404
    assert "dub-fr" in answer.json()["detail"]


def _jobs(api: ApiNode, n: int, route: str = "dub-fr", prefix: str = "f") -> list[int]:
    token = api.token(["transfers:write"], "*")
    ids = []
    for i in range(n):
        (api.source(route) / f"{prefix}{i}.wav").write_bytes(b"x" * (i + 1))
        (job,) = submit(api, token, route, f"{prefix}{i}.wav").json()["jobs"]
        ids.append(job["job_id"])
    return ids


def test_pages_are_stable_under_new_submissions(api: ApiNode) -> None:
    ids = _jobs(api, 5)
    token = api.token(["transfers:read"], "*")
    first = api.client.get("/api/v1/transfers?limit=2", headers=api.headers(token)).json()
    assert [j["job_id"] for j in first["items"]] == ids[::-1][:2]
    newer = _jobs(api, 2, prefix="g")
    seen = [j["job_id"] for j in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = api.client.get(
            f"/api/v1/transfers?limit=2&cursor={cursor}", headers=api.headers(token)
        ).json()
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1]  # none twice, none missed, the newer ones not mixed in
    latest = api.client.get("/api/v1/transfers?limit=1", headers=api.headers(token)).json()
    assert latest["items"][0]["job_id"] == newer[-1]


def test_filters(api: ApiNode) -> None:
    fr = _jobs(api, 2, "dub-fr", "fr")
    de = _jobs(api, 2, "dub-de", "de")
    token = api.token(["transfers:read"], "*")

    def ids(query: str) -> list[int]:
        answer = api.client.get(f"/api/v1/transfers?{query}", headers=api.headers(token))
        assert answer.status_code == 200, answer.text
        return [j["job_id"] for j in answer.json()["items"]]

    assert ids("route=dub-de") == de[::-1]
    assert ids("name=fr1") == [fr[1]]
    assert ids("state=detected&route=dub-fr") == fr[::-1]
    assert ids("state=completed") == []
    assert ids("since=2000-01-01T00:00:00Z") == (fr + de)[::-1]
    assert ids("until=2000-01-01T00:00:00Z") == []
    bad = api.client.get("/api/v1/transfers?state=bogus", headers=api.headers(token))
    assert bad.status_code == 422 and "state" in bad.json()["detail"]
    # A token for dub-fr alone sees nothing of dub-de, even when it asks.
    narrow = api.token(["transfers:read"], "dub-fr")
    answer = api.client.get("/api/v1/transfers?route=dub-de", headers=api.headers(narrow))
    assert answer.status_code == 200 and answer.json()["items"] == []
    mine = api.client.get("/api/v1/transfers", headers=api.headers(narrow)).json()["items"]
    assert [j["job_id"] for j in mine] == fr[::-1]


def test_requeue_a_failed_job_and_refuse_one_that_is_not(api: ApiNode) -> None:
    (job_id,) = _jobs(api, 1)
    now = time.time()
    transition(api.store, job_id, State.DETECTED, State.ROLLING_BACK, claim=None, now=now,
               event="rollback")
    transition(api.store, job_id, State.ROLLING_BACK, State.FAILED, claim=None, now=now,
               event="fail", error="disk on fire")
    token = api.token(["transfers:requeue"], "dub-*")
    answer = api.client.post(f"/api/v1/transfers/{job_id}/requeue", headers=api.headers(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "detected"
    again = api.client.post(f"/api/v1/transfers/{job_id}/requeue", headers=api.headers(token))
    assert again.status_code == 409
    assert "it is detected" in again.json()["detail"]
    (requeue,) = [e for e in api.store.events_after(0, limit=1000) if e.event == "requeue"]
    assert '"by":"token:' in requeue.details.replace(" ", "")
    missing = api.client.post("/api/v1/transfers/999/requeue", headers=api.headers(token))
    assert missing.status_code == 404


def test_events_in_chain_order_for_a_siem(api: ApiNode) -> None:
    _jobs(api, 3)
    token = api.token(["audit:read"], "*")
    page = api.client.get("/api/v1/events?after=0&limit=4", headers=api.headers(token)).json()
    seqs = [e["seq"] for e in page["items"]]
    assert seqs == sorted(seqs) and page["last_seq"] == seqs[-1]
    rest = api.client.get(
        f"/api/v1/events?after={page['last_seq']}", headers=api.headers(token)
    ).json()
    everything = page["items"] + rest["items"]
    for before, after in itertools.pairwise(everything):
        assert after["prev_hash"] == before["hash"]


def test_body_over_max_body_is_refused(api: ApiNode) -> None:
    token = api.token(["transfers:write"], "*")
    answer = api.client.post(
        "/api/v1/transfers",
        content=b'{"route": "dub-fr", "path": "' + b"x" * (2 << 20) + b'"}',
        headers={**api.headers(token), "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert "max_body" in answer.json()["detail"]


def test_failed_authentications_are_recorded_then_rate_limited(api: ApiNode) -> None:
    bad = {"Authorization": "Bearer ketter_" + "A" * 43}
    codes = [api.client.get("/api/v1/transfers", headers=bad).status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    limited = api.client.get("/api/v1/transfers", headers=bad)
    assert int(limited.headers["retry-after"]) >= 1
    failures = api.events("api_auth_failed")
    assert len(failures) == 10  # the refusals past the limit do not grow the chain
    assert failures[0].user == "anonymous:10.0.0.7"
    assert '"reason":"unknown"' in failures[0].details.replace(" ", "")
