"""Serving the HTTP API: ``ketter api``'s process around the application.

The application (:func:`ketter.api.app.build_app`) is served by uvicorn run
programmatically, one :class:`uvicorn.Server` per address, both in one event
loop: ``api.listen`` and, when set, ``api.metrics_listen`` (``/metrics``
only, for a Prometheus host). This module owns what is around them:

* **Sockets bound first**, by Ketter, before anything is announced: an
  address in use or not on this host is one clear error (exit 1, systemd
  tries again), a certificate that cannot be read is a config error naming
  its line (exit 2, no restart loop).
* **TLS 1.2 or newer** from an :class:`ssl.SSLContext` built here (uvicorn's
  ``ssl_version`` option picks a protocol, not a minimum), handed to uvicorn
  through ``ssl_context_factory``; with ``api.client_ca`` every client must
  present a certificate signed by that CA (``CERT_REQUIRED``).
* **Ketter's signals** (:mod:`ketter.runtime.signals`: the handlers only set
  a flag), not uvicorn's: :class:`_Server` keeps uvicorn from installing its
  own; the loop below sees the flag within :data:`TICK` and stops both
  servers gracefully (open requests finish, then the lifespan ends).
* **systemd**: ``READY=1`` once both servers accept connections, then
  ``WATCHDOG=1`` from the loop; ``STOPPING=1`` on the way out.
* **The record**: ``api_started``/``api_stopped`` in the audit chain, a
  heartbeat row (component ``api``) like the watcher's and the workers', and
  a "stopped cleanly" row on a graceful stop. The store is written from one
  thread of its own, never from the event loop (a write may wait for the
  workers' lock; the loop must keep answering).
* **Logs** through Ketter's JSON logging: uvicorn's own access log is off
  (its line carries the query string), and :class:`AccessLog` writes one
  line per request with the method, the path without its query, the status,
  the client address and the duration. No header is ever logged, so no
  token is either.

``proxy_headers`` is off: the client address is the peer's (audit events,
the rate limit of failed authentications), never an ``X-Forwarded-For`` a
client may write itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
import uvloop

from ketter import __version__
from ketter.config.api import split_address
from ketter.errors import ConfigError, KetterError
from ketter.runtime import sdnotify
from ketter.runtime.children import Children

if TYPE_CHECKING:
    from ketter.config import Config
    from ketter.node import Node
    from ketter.runtime.signals import Shutdown

log = logging.getLogger("ketter.api")
access_log = logging.getLogger("ketter.api.access")

#: Seconds between two checks of the stop flag (and watchdog pings).
TICK = 0.2
#: Threads that run the sync handlers (see _run).
HANDLER_THREADS = 4

#: Seconds between two heartbeat rows at most (``lease.heartbeat`` when
#: shorter: on a shared store a node's name stays taken while it beats,
#: :mod:`ketter.runtime.identity`).
HEARTBEAT_INTERVAL = 10.0
#: Seconds the open requests get to finish on a graceful stop (an SSE
#: stream is cut after this).
GRACEFUL_SECONDS = 10.0
#: Seconds to wait for both servers to accept connections.
START_TIMEOUT = 60.0
COMPONENT = "api"


class ListenError(KetterError):
    """The API cannot listen on its address."""


@dataclass(frozen=True)
class Listener:
    """One address the process serves, and what."""

    #: The config key naming it (``listen`` or ``metrics_listen``).
    key: str
    address: str
    app: Any


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2+, client certificates required
    with ``client_ca``), None without ``tls_cert``; a :class:`ConfigError`
    naming the key's line when a file cannot be used."""
    api = config.api
    if api.tls_cert is None or api.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # uvicorn's h11 speaks HTTP/1.1 only
    context.options |= ssl.OP_NO_COMPRESSION  # CRIME
    try:
        context.load_cert_chain(api.tls_cert, api.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise _file_error(
            config, "tls_cert", api.tls_cert, exc, also=("tls_key", api.tls_key)
        ) from None
    if api.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=api.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise _file_error(config, "client_ca", api.client_ca, exc) from None
    return context


def _file_error(
    config: Config, key: str, path: str, exc: Exception, *, also: tuple[str, str] | None = None
) -> ConfigError:
    line = config.line_of(f"api.{key}")
    where = f"{config.path}:{line}: api.{key}" if line else f"api.{key}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    files = f"{path}" + (f" with api.{also[0]} {also[1]}" if also else "")
    hint = (
        " (a PEM certificate chain and the PEM private key that goes with it; "
        "the service account must read both)"
        if also
        else " (a PEM file of CA certificates)"
    )
    return ConfigError(f"{where}: cannot use {files}: {reason}{hint}")


def bind(config: Config, key: str, address: str, *, share: int = 1) -> list[socket.socket]:
    """``share`` listening TCP sockets on ``address`` (one per process that
    serves it); :class:`ListenError` naming the config key and line otherwise.

    Several sockets share the port with ``SO_REUSEPORT``: the kernel spreads
    the connections over them, one accept queue per process (a single shared
    socket lets the least busy process win most connections). A plain
    socket is bound first and closed, so that a port another process
    already listens on, with ``SO_REUSEPORT`` or not, is refused as it was
    with one process instead of silently shared."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        if share > 1:
            _listening(family, host, port, reuse_port=False, listen=False).close()
        for _ in range(share):
            sockets.append(_listening(family, host, port, reuse_port=share > 1))
        return sockets
    except OSError as exc:
        for sock in sockets:
            sock.close()
        line = config.line_of(f"api.{key}")
        where = f"{config.path}:{line}: api.{key}" if line else f"api.{key}"
        raise ListenError(
            f"{where}: cannot listen on {address}: {exc.strerror or exc} (another "
            "process on that port, or an address this host does not have)"
        ) from None


def _listening(
    family: int, host: str, port: int, *, reuse_port: bool, listen: bool = True
) -> socket.socket:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that
    # say so (proto 0 from socket.create_server did not), and without it
    # every response waited for the client's delayed ACK: ~40 ms each.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # [::] means IPv6 only, as written
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
        return sock
    except OSError:
        sock.close()
        raise


class AccessLog:
    """ASGI wrapper: one JSON log line per HTTP request, headers never."""

    def __init__(self, app: Any, listener: str) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("", 0)
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status or 500,
                extra={
                    "http.request.method": scope["method"],
                    "url.path": scope["path"],
                    "http.response.status_code": status or 500,
                    "source.ip": client[0],
                    "event.duration": int((time.perf_counter() - started) * 1e9),
                    "ketter.listener": self.listener,
                },
            )


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ketter's set the stop flag."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_server(listener: Listener, context: ssl.SSLContext | None) -> uvicorn.Server:
    options: dict[str, Any] = {}
    if context is not None:
        options["ssl_context_factory"] = lambda config, default: context
    config = uvicorn.Config(
        AccessLog(listener.app, listener.key),
        log_config=None,  # the root logger's JSON handler (ketter.runtime.logs)
        access_log=False,  # AccessLog writes the line, without the query string
        # uvicorn's start/stop lines repeat "api serving"/"api stopped" (with
        # terminal colours); its warnings and errors stay.
        log_level=logging.WARNING,
        proxy_headers=False,  # the peer's address, never a client-written header
        server_header=False,
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
        **options,
    )
    return _Server(config)


def require_listen(config: Config) -> str:
    """``api.listen``, or the config error saying it is needed."""
    if config.api.listen is None:
        raise ConfigError(
            f"{config.path}: api.listen is not set: `ketter api` needs the address "
            "and port to serve on (api: {listen: 127.0.0.1:8443}; docs/configuration.md, api)"
        )
    return config.api.listen


def listeners(node: Node) -> list[Listener]:
    """What this node's API process serves, by its config."""
    from ketter.api.app import build_app, build_metrics_app

    api = node.config.api
    found = [
        Listener("listen", require_listen(node.config), build_app(node, processes=api.processes))
    ]
    if api.metrics_listen is not None:
        found.append(Listener("metrics_listen", api.metrics_listen, build_metrics_app(node)))
    return found


@dataclass
class Bound:
    """The sockets of one ``ketter api``, bound before anything else starts:
    the main process's, by config key, and one more on ``listen`` for each
    extra process (``api.processes``)."""

    sockets: dict[str, socket.socket]
    extra: list[socket.socket]

    def close(self) -> None:
        for sock in [*self.sockets.values(), *self.extra]:
            sock.close()


def bind_all(config: Config) -> Bound:
    """Every socket ``config`` asks for; :class:`ListenError` if one cannot be
    bound (none is left open then)."""
    listen = bind(config, "listen", require_listen(config), share=config.api.processes)
    bound = Bound({"listen": listen[0]}, listen[1:])
    if config.api.metrics_listen is not None:
        try:
            [bound.sockets["metrics_listen"]] = bind(
                config, "metrics_listen", config.api.metrics_listen
            )
        except ListenError:
            bound.close()
            raise
    return bound


def start_extra_processes(config: Config, bound: Bound) -> Children | None:
    """The extra processes serving ``listen`` (:mod:`ketter.runtime.children`),
    each handed its socket; call before this process starts any thread."""
    if not bound.extra:
        return None
    fds: list[tuple[int, ...]] = [(sock.fileno(),) for sock in bound.extra]
    children = Children(
        config,
        [["api", "--listen-fd", str(fd[0])] for fd in fds],
        what="api",
        pass_fds=fds,
    )
    children.start()
    for sock in bound.extra:  # each child holds its own now
        sock.close()
    bound.extra = []
    return children


def serve(
    node: Node,
    shutdown: Shutdown,
    context: ssl.SSLContext | None,
    bound: Bound,
    children: Children | None = None,
) -> None:
    """Serve the API on ``bound`` until ``shutdown`` is set, with ``context``
    (:func:`tls_context`) on both addresses, beside the ``children`` serving
    ``listen`` too; records the start and stop."""
    served = listeners(node)
    sockets = [bound.sockets[listener.key] for listener in served]
    try:
        if children is not None:
            children.watch(shutdown)  # a child that exits stops this process
        servers = [_uvicorn_server(listener, context) for listener in served]
        # One thread writes the store: peewee's connection is per thread.
        with concurrent.futures.ThreadPoolExecutor(1, "ketter-api-store") as writer:
            record = _Record(node, served, context, writer)
            _arun(_run(servers, sockets, shutdown, record))
    finally:
        if children is not None:
            shutdown.request()  # also when this process failed: the children stop too
            children.stop(GRACEFUL_SECONDS + 20)
        bound.close()
        for listener in served:
            listener.app.state.reads.close()
    if children is not None and children.failed:
        raise ListenError("an API process exited on its own (see the log); the API stopped")


def serve_extra(node: Node, shutdown: Shutdown, context: ssl.SSLContext | None, fd: int) -> None:
    """One extra process of a ``ketter api`` (``--listen-fd``): serve
    ``listen`` on the socket inherited as ``fd`` until ``shutdown`` is set.
    The main process records the start, the heartbeats and the stop."""
    from ketter.api.app import build_app

    app = build_app(node, processes=node.config.api.processes)
    listener = Listener("listen", require_listen(node.config), app)
    sock = socket.socket(fileno=fd)
    try:
        server = _uvicorn_server(listener, context)
        _arun(_run([server], [sock], shutdown, _Quiet()))
    finally:
        sock.close()
        app.state.reads.close()


def _arun(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop's event loop: its transports, selector and
    thread wake-ups are C where asyncio's are Python, about 5 % of an API
    request's CPU (docs/performance.md, the HTTP API)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _run(
    servers: list[uvicorn.Server],
    sockets: list[socket.socket],
    shutdown: Shutdown,
    record: _Record | _Quiet,
) -> None:
    # Few handler threads: a request is Python work under one GIL, and 40
    # threads (anyio's default) thrash it (make bench-api: fewer requests/s
    # at 32 connections than at 1). Waiting requests queue in the loop.
    anyio.to_thread.current_default_thread_limiter().total_tokens = HANDLER_THREADS
    # What start-up built (modules, the app, its schemas) lives as long as
    # the process: kept out of the collector's full passes, which otherwise
    # walk it all and stop every request for tens of milliseconds (the p99).
    gc.collect()
    gc.freeze()
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, sockets, strict=True)
    ]
    deadline = time.monotonic() + START_TIMEOUT
    while not all(server.started for server in servers):
        if shutdown.requested or any(task.done() for task in tasks):
            break
        if time.monotonic() > deadline:
            log.error("the API servers did not start within %ds", START_TIMEOUT)
            break
        await asyncio.sleep(0.02)
    started = all(server.started for server in servers)
    try:
        if started:
            await record.started()
            sdnotify.ready("serving")  # systemd (Type=notify): started
            while not shutdown.requested and not any(task.done() for task in tasks):
                sdnotify.watchdog()
                await record.beat_if_due()
                await asyncio.sleep(TICK)
    finally:
        sdnotify.stopping()
        for server in servers:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("an API server failed", exc_info=result)
        if started:
            await record.stopped()
    failed = any(isinstance(r, BaseException) for r in results)
    if failed or (not started and not shutdown.requested):
        raise ListenError("the API did not start or one of its servers failed (see the log)")


class _Quiet:
    """An extra API process records nothing (the main process does)."""

    async def started(self) -> None:
        log.info("api process serving", extra={"ketter.pid": os.getpid()})

    async def beat_if_due(self) -> None:
        pass

    async def stopped(self) -> None:
        pass


class _Record:
    """The API process's start, heartbeats and stop in the job store."""

    def __init__(
        self,
        node: Node,
        served: Iterable[Listener],
        context: ssl.SSLContext | None,
        writer: concurrent.futures.Executor,
    ) -> None:
        self.node = node
        self.writer = writer
        self.addresses = {listener.key: listener.address for listener in served}
        self.tls = context is not None
        self.mtls = context is not None and context.verify_mode == ssl.CERT_REQUIRED
        self.started_at = time.time()
        self._next_beat = 0.0

    async def _write(self, what: str, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.writer, fn)
        except Exception:
            # The API keeps answering reads on a full or locked state disk;
            # the watcher's and the workers' guard pauses the routes.
            log.exception("could not record the API's %s in the job store", what)

    async def started(self) -> None:
        details = {
            "version": __version__,
            "pid": os.getpid(),
            "config": self.node.config.path,
            **self.addresses,
            "tls": self.tls,
            "client_certificates": self.mtls,
        }
        await self._write("start", lambda: self._event("api_started", details))
        log.info(
            "api serving on %s",
            ", ".join(self.addresses.values()),
            extra={"ketter.listen": self.addresses, "ketter.tls": self.tls},
        )
        await self.beat_if_due()

    async def beat_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + min(HEARTBEAT_INTERVAL, self.node.config.lease.heartbeat)
        details = {"version": __version__, "started_at": self.started_at, **self.addresses}
        await self._write("heartbeat", lambda: self._beat(details))

    async def stopped(self) -> None:
        await self._write("stop", lambda: self._event("api_stopped", {"pid": os.getpid()}))
        stamp = time.time()
        stop = {"stopped": True, "clean": True, "stopped_at": stamp}
        await self._write("stop heartbeat", lambda: self._beat(stop, now=stamp))
        log.info("api stopped")

    def _event(self, event: str, details: dict[str, Any]) -> None:
        store = self.node.store
        assert store is not None
        with store.transaction():
            store.append_event(event, now=time.time(), details=details)

    def _beat(self, details: dict[str, Any], *, now: float | None = None) -> None:
        import json

        store = self.node.store
        assert store is not None
        store.beat(
            self.node.config.node,
            {COMPONENT: json.dumps(details, sort_keys=True)},
            pid=os.getpid(),
            now=time.time() if now is None else now,
        )
