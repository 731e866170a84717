"""docs/api.md runs as written: every ``sh`` example with an ``# expect:``
line is run with bash and curl against a real ``ketter api`` over TLS, and
its scope table is the app's own list of operations."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketter.api.app import api_operations
from tests.conftest import KETTER, ROOT, cli_env
from tests.integration.api.harness import ALL_SCOPES
from tests.integration.api.process import ApiProcess, free_port
from tests.integration.api.tls import make_certificates

DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"```sh\n(# expect: ([^\n]+)\n.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2).strip()) for m in BLOCK.finditer(DOC.read_text())]
    assert len(found) >= 10
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    for folder in ("in/dub-fr", "out/dub-fr", "state"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "in" / "dub-fr" / "mix_fr.wav").write_bytes(b"mix" * 1000)
    certs = make_certificates(tmp_path / "tls")
    port = free_port()
    config = tmp_path / "ketter.yaml"
    config.write_text(json.dumps({
        "state_dir": "state",
        "routes": [{"name": "dub-fr", "source": "in/dub-fr", "destination": "out/dub-fr"}],
        "api": {"listen": f"127.0.0.1:{port}", "tls_cert": str(certs.server.cert),
                "tls_key": str(certs.server.key)},
    }))

    def ketter(*args: str) -> str:
        done = subprocess.run([*KETTER, "--config", str(config), *args], env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    ketter("db", "upgrade")
    token = ketter("token", "create", "docs", "--scopes", ",".join(ALL_SCOPES),
                   "--routes", "*").strip()
    api = ApiProcess(config)
    try:
        api.wait_serving()
        yield cli_env(KETTER_API=f"https://127.0.0.1:{port}", TOKEN=token,
                      CURL_CA_BUNDLE=str(certs.ca))
    finally:
        api.stop()


def test_every_example_runs_and_answers_what_it_says(served: dict[str, str]) -> None:
    for script, expect in examples():
        if expect == "stream":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=served,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 28, (script, done.returncode, done.stderr)  # --max-time
            assert done.stdout.startswith("retry: "), done.stdout
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.rstrip() + " -w '\\n%{http_code}'"],
            env=served, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, (script, done.stderr)
        body, _, status = done.stdout.rpartition("\n")
        assert status in expect.split(), (script, status, body)
        if body.strip():
            json.loads(body) if not script.rstrip().endswith('/metrics"') else None


def test_the_scope_table_is_the_apps_own() -> None:
    rows = re.findall(r"^\| `(GET|POST) ([^`]+)` \| `([a-z:]+)` \|$", DOC.read_text(), re.M)
    assert {(m, p, s) for m, p, s in rows} == {
        (o.method, o.path, o.scope) for o in api_operations()
    }
