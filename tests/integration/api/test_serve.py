"""``ketter api`` as a real process over HTTP on 127.0.0.1 (#17 items 1-2):
TLS 1.2 or newer only, client certificates under ``client_ca``, plaintext
on the network refused at start (exit 2), a graceful SIGTERM recorded in
the chain, and no Authorization header value in any log line."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KETTER, cli_env
from tests.integration.api.process import (
    ApiProcess,
    events,
    free_port,
    upgrade,
    write_config,
)
from tests.integration.api.tls import Certificates, Pair, make_certificates

#: An answer from the API's health endpoint (503: this node has no workers
#: running; 401: it wants a token): either way the HTTP exchange worked.
ANSWERED = {200, 401, 503}


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


def _client(certs: Certificates, *, cert: Pair | None = None,
            version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs.ca)
    if version is not None:
        with warnings.catch_warnings():  # TLSv1_1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            # OpenSSL's default security level refuses TLS 1.1 in the client
            # itself; level 0 makes the client offer it, so the refusal is
            # the server's.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = version
            context.maximum_version = version
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


def _get(port: int, path: str, context: ssl.SSLContext | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    """(status, TLS version) of GET ``path``."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        version = conn.sock.version() if isinstance(conn.sock, ssl.SSLSocket) else None
        return response.status, version
    finally:
        conn.close()


@pytest.fixture
def tls_api(tmp_path: Path, certs: Certificates) -> Iterator[tuple[ApiProcess, int]]:
    port = free_port()
    config = write_config(tmp_path, {
        "listen": f"127.0.0.1:{port}",
        "tls_cert": str(certs.server.cert), "tls_key": str(certs.server.key),
        "client_ca": str(certs.ca),
    })
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        yield api, port


def test_tls_1_2_and_1_3_answer_and_tls_1_1_is_refused(tls_api, certs: Certificates) -> None:
    api, port = tls_api
    status, version = _get(port, "/api/v1/health", _client(certs, cert=certs.client))
    assert status in ANSWERED and version == "TLSv1.3"
    status, version = _get(port, "/api/v1/health", _client(
        certs, cert=certs.client, version=ssl.TLSVersion.TLSv1_2))
    assert status in ANSWERED and version == "TLSv1.2"
    old = _client(certs, cert=certs.client, version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(port, "/api/v1/health", old)
    # The same client does speak TLS 1.1 to a server that allows it: the
    # refusal above is the API's minimum version, not the client's.
    assert _tls11_control(certs, old) == "TLSv1.1"
    assert api.proc.poll() is None


def _tls11_control(certs: Certificates, client: ssl.SSLContext) -> str | None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.minimum_version = ssl.TLSVersion.TLSv1_1
    server.load_cert_chain(certs.server.cert, certs.server.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()
        thread.join(30)
        return version


def test_client_certificates_are_required_and_verified(tls_api, certs: Certificates) -> None:
    _, port = tls_api
    for context in (_client(certs), _client(certs, cert=certs.stranger)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(port, "/api/v1/health", context)
    status, _ = _get(port, "/api/v1/health", _client(certs, cert=certs.client))
    assert status in ANSWERED
    # Plain HTTP on the TLS port gets no answer from the API either.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        status, _ = _get(port, "/api/v1/health")
        assert status == 400  # uvicorn never reads it as a request


def test_sigterm_stops_cleanly_and_records_the_stop(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}"})
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        secret = "kt_never_in_a_log_0123456789abcdef"
        status, _ = _get(port, f"/api/v1/health?access_token={secret}q",
                         headers={"Authorization": f"Bearer {secret}"})
        assert status in ANSWERED | {403}
        assert api.stop() == 0, api.stderr()
        stderr = api.stderr()
    db = tmp_path / "state" / "ketter.db"
    (started,) = events(db, "api_started")
    assert started["pid"] == api.proc.pid and started["listen"] == f"127.0.0.1:{port}"
    assert started["tls"] is False and started["client_certificates"] is False
    (stopped,) = events(db, "api_stopped")
    assert stopped == {"pid": api.proc.pid}
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [ln for ln in lines if ln["message"] == "api stopped"], stderr
    (access,) = [ln for ln in lines if ln.get("url.path") == "/api/v1/health"]
    assert access["http.request.method"] == "GET" and access["source.ip"] == "127.0.0.1"
    # Neither the header's value nor a token put in the query string.
    assert secret not in stderr, stderr
    assert "Bearer" not in stderr and "access_token" not in stderr, stderr
    done = subprocess.run([*KETTER, "--config", str(config), "audit", "verify", "--db"],
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _start_fails(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KETTER, "--config", str(config), "api"], env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_plaintext_on_a_network_address_is_refused_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"listen": "0.0.0.0:18080"})
    done = _start_fails(config)
    assert done.returncode == 2, done.stderr
    assert f"{config}:" in done.stderr and "api.listen: 0.0.0.0:18080 is not a loopback" \
        in done.stderr, done.stderr
    assert not (tmp_path / "state" / "ketter.db").exists()  # nothing opened


def test_no_listen_address_and_broken_certificates_are_config_errors(
        tmp_path: Path, certs: Certificates) -> None:
    config = write_config(tmp_path, {})
    done = _start_fails(config)
    assert done.returncode == 2 and "api.listen is not set" in done.stderr, done.stderr
    # A key that is not the certificate's: exit 2 with the line, no restart loop.
    config = write_config(tmp_path, {
        "listen": f"127.0.0.1:{free_port()}",
        "tls_cert": str(certs.server.cert), "tls_key": str(certs.client.key)})
    done = _start_fails(config)
    assert done.returncode == 2, done.stderr
    assert f"{config}:" in done.stderr and "api.tls_cert: cannot use" in done.stderr, done.stderr


def test_an_address_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}"})
        upgrade(config)
        done = _start_fails(config)
    assert done.returncode == 1, done.stderr
    assert f"api.listen: cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr


def test_metrics_listen_is_a_second_server_in_the_same_process(tmp_path: Path) -> None:
    port, metrics = free_port(), free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}",
                                     "metrics_listen": f"127.0.0.1:{metrics}"})
    upgrade(config)
    with ApiProcess(config) as api:
        api.wait_serving()
        # No token asked there (the exposition itself: tests/integration/metrics).
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=60) as got:
            assert got.status == 200 and b"ketter_build_info" in got.read()
        status, _ = _get(port, "/metrics")
        assert status == 401  # on the API's own address: a token with metrics:read
        status, _ = _get(metrics, "/api/v1/health")
        assert status == 404  # only /metrics there
        api.proc.send_signal(signal.SIGINT)  # Ctrl-C in a terminal: graceful too
        assert api.proc.wait(60) == 0, api.stderr()


def test_sigterm_with_an_open_event_stream_still_stops_cleanly(tmp_path: Path) -> None:
    # An SSE client never closes its request: the stop cuts it after the
    # grace period (the client resumes with Last-Event-ID) and exits 0.
    port = free_port()
    config = write_config(tmp_path, {"listen": f"127.0.0.1:{port}"})
    upgrade(config)
    token = subprocess.run(
        [*KETTER, "--config", str(config), "token", "create", "sse", "--scopes",
         "transfers:read", "--routes", "*"],
        env=cli_env(), capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    with ApiProcess(config) as api:
        api.wait_serving()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/v1/stream", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline() == b"retry: 2000\n"
        started = time.monotonic()
        code = api.stop(timeout=60)
        took = time.monotonic() - started
        conn.close()
    assert code == 0, api.stderr()
    assert took < 30, took  # the grace period (10 s) and the record, not TimeoutStopSec
    assert events(tmp_path / "state" / "ketter.db", "api_stopped")


@pytest.mark.parametrize("share", [1, 2])
def test_accepted_connections_send_without_waiting_for_acks(tmp_path: Path, share: int) -> None:
    # The sockets ketter api binds itself must let asyncio set TCP_NODELAY on
    # every accepted connection: with proto 0 it did not, and each response
    # (headers, then body) waited for the client's delayed ACK, ~40 ms: the
    # first make bench-api measured 60 ms for a 4 ms request.
    import asyncio

    from ketter.api.server import bind
    from ketter.config import load_config

    config = load_config(write_config(tmp_path, {"listen": f"127.0.0.1:{free_port()}"}))
    assert config.api.listen is not None
    sock, *others = bind(config, "listen", config.api.listen, share=share)
    assert len(others) == share - 1  # SO_REUSEPORT sockets of the other processes
    for other in others:  # closed: the probe's connection can only reach ``sock``
        other.close()
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
                accepted.set_result(None)

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await asyncio.wait_for(accepted, 30)
        writer.close()
        server.close()

    asyncio.run(main())
    assert seen == [1]
