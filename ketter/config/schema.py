"""The configuration schema: frozen dataclasses whose field defaults are the
one table of defaults.

Each field carries a ``kind`` in its metadata telling the loader how to parse
and check the YAML value (see :mod:`ketter.config.loader`). Paths are kept as
``str`` here and resolved to absolute paths by the loader; the engine works on
``os.fsencode`` of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ketter.choices import Conflict, Folders, Mode, SameFsMove, Verify, WatchMode, values
from ketter.config.units import FreeSpace


def spec(
    kind: str,
    default: Any = None,
    *,
    choices: tuple[str, ...] = (),
    required: bool = False,
    secret: bool = False,
    factory: Any = None,
) -> Any:
    """Declare a config field: its parser ``kind`` and its default."""
    meta = {"kind": kind, "choices": choices, "required": required, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DEFAULT_EXCLUDE = (
    "**/.*",
    "**/.*/**",
    "**/*.part",
    "**/*.tmp",
    "**/~$*",
    "**/Thumbs.db",
)

#: Ketter's own temporaries; excluded on every route whatever ``exclude`` says.
KETTER_TEMP_PATTERNS = ("**/.ketter-*", ".ketter-*", "**/.ketter-*/**", ".ketter-*/**")


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = spec("int", 6)
    base_delay: float = spec("duration", 5.0)
    max_delay: float = spec("duration", 900.0)
    jitter: bool = spec("bool", True)


@dataclass(frozen=True)
class LeaseConfig:
    ttl: float = spec("positive_duration", 30.0)
    heartbeat: float = spec("positive_duration", 5.0)
    sweep_interval: float = spec("positive_duration", 10.0)
    stall_timeout: float = spec("positive_duration", 600.0)


@dataclass(frozen=True)
class HashesConfig:
    md5: bool = spec("bool", False)


@dataclass(frozen=True)
class AuditConfig:
    log_file: str = spec("state_path", "logs/audit.jsonl")
    rotate_max_bytes: int = spec("size", 100 * 10**6)
    rotate_when: str | None = spec("enum", None, choices=("midnight", "daily"))
    rotate_backups: int = spec("int", 400)
    hmac_key_file: str | None = spec("key_path", None)


@dataclass(frozen=True)
class RouteFailuresConfig:
    count: int = spec("int", 10)
    window: float = spec("duration", 900.0)


@dataclass(frozen=True)
class AlertsConfig:
    urls: tuple[str, ...] = spec("str_list", (), secret=True)
    min_interval: float = spec("duration", 300.0)
    route_failures: RouteFailuresConfig = spec("section", factory=RouteFailuresConfig)
    watch_lost_after: float = spec("duration", 300.0)


@dataclass(frozen=True)
class HealthConfig:
    min_free: FreeSpace = spec("free_space", FreeSpace(percent=5.0))
    heartbeat_stale: float = spec("duration", 60.0)
    #: Unhealthy when more of the SQLite job store's write-ahead log is in
    #: use (a read transaction left open pins it; 4 × journal_size_limit).
    max_wal: int = spec("size", 256 * 2**20)


def default_api_processes() -> int:
    """``api.processes`` when the config does not say: one per core, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class ApiConfig:
    """``ketter api``: the HTTP control plane (docs/configuration.md, api)."""

    #: ``HOST:PORT`` (IPv6 in brackets); required by ``ketter api`` only.
    listen: str | None = spec("address", None)
    tls_cert: str | None = spec("path", None)
    tls_key: str | None = spec("path", None)
    #: Client certificates required and verified against this CA (mTLS).
    client_ca: str | None = spec("path", None)
    #: Serve a non-loopback address without TLS on purpose.
    allow_plaintext: bool = spec("bool", False)
    #: The largest request body the API reads (larger: 413).
    max_body: int = spec("size", 2**20)
    cors: str = spec("cors", "none")
    #: A second ``HOST:PORT`` serving only ``/metrics``, without a token.
    metrics_listen: str | None = spec("address", None)
    #: Processes serving ``listen`` (a request is Python CPU under one
    #: interpreter lock): by default one per core, at most four.
    processes: int = spec("positive_int", factory=default_api_processes)


@dataclass(frozen=True)
class StoreConfig:
    """Where the job store lives (:mod:`ketter.config.store`, issue #18)."""

    #: ``sqlite``: ``state_dir/ketter.db`` (the default); ``postgresql``: ``dsn``.
    backend: str = spec("enum", "sqlite", choices=("sqlite", "postgresql"))
    #: The PostgreSQL database (URL or key=value words), never with a password.
    dsn: str | None = spec("dsn", None)
    #: The file holding the database password (first line).
    password_file: str | None = spec("key_path", None)


@dataclass(frozen=True)
class RouteConfig:
    name: str = spec("name", "", required=True)
    source: str = spec("path", "", required=True)
    destination: str = spec("path", "", required=True)
    source_mount: str | None = spec("path", None)
    destination_mount: str | None = spec("path", None)
    mode: str = spec("enum", "copy", choices=values(Mode))
    watch: str = spec("enum", "auto", choices=values(WatchMode))
    poll_interval: float = spec("positive_duration", 5.0)
    rescan_interval: float = spec("positive_duration", 600.0)
    stable_seconds: float = spec("duration", 10.0)
    ready_marker: str | None = spec("str", None)
    include: tuple[str, ...] = spec("str_list", ("**/*",))
    exclude: tuple[str, ...] = spec("str_list", DEFAULT_EXCLUDE)
    folders: str = spec("enum", "per_file", choices=values(Folders))
    package_min_files: int = spec("int", 0)
    conflict: str = spec("enum", "fail", choices=values(Conflict))
    verify: str = spec("enum", "sha256", choices=values(Verify))
    mhl: bool = spec("bool", True)
    max_parallel: int = spec("int", 0)
    priority: int = spec("signed_int", 0)
    min_free: FreeSpace = spec("free_space", FreeSpace(percent=2.0))
    same_fs_move: str = spec("enum", "copy", choices=values(SameFsMove))
    #: Line of each key in the config file (and "" = the route's own line),
    #: so checks made after loading (``config check``'s route roots) can say
    #: FILE:LINE like every other config error. Empty for a route built in code.
    lines: tuple[tuple[str, int], ...] = field(
        default=(), compare=False, repr=False, metadata={"kind": "internal"}
    )

    def line_of(self, key: str = "") -> int | None:
        """The config file line of ``key`` (or of the route), None if unknown."""
        found = dict(self.lines)
        return found.get(key, found.get(""))


@dataclass(frozen=True)
class Config:
    """A validated Ketter configuration (see docs/configuration.md)."""

    state_dir: str = spec("path", "/var/lib/ketter")
    node: str = spec("str", "")  # "" = the host name, filled in by the loader
    workers: int = spec("positive_int", 4)
    worker_processes: int = spec("positive_int", 1)
    shutdown_timeout: float = spec("positive_duration", 60.0)
    retry: RetryConfig = spec("section", factory=RetryConfig)
    lease: LeaseConfig = spec("section", factory=LeaseConfig)
    resume_min_bytes: int = spec("size", 256 * 2**20)
    hashes: HashesConfig = spec("section", factory=HashesConfig)
    audit: AuditConfig = spec("section", factory=AuditConfig)
    alerts: AlertsConfig = spec("section", factory=AlertsConfig)
    health: HealthConfig = spec("section", factory=HealthConfig)
    api: ApiConfig = spec("section", factory=ApiConfig)
    store: StoreConfig = spec("section", factory=StoreConfig)
    routes: tuple[RouteConfig, ...] = spec("routes", ())
    #: The file this config was read from ("" for a config built in code).
    path: str = field(default="", metadata={"kind": "internal"})
    #: Line of each top-level and section key, by dotted name ("audit.hmac_key_file").
    lines: tuple[tuple[str, int], ...] = field(
        default=(), compare=False, repr=False, metadata={"kind": "internal"}
    )

    def line_of(self, key: str) -> int | None:
        """The config file line of the dotted ``key``, None if not in the file."""
        return dict(self.lines).get(key)

    def route(self, name: str) -> RouteConfig:
        """The route called ``name``; KeyError naming the known routes otherwise."""
        for route in self.routes:
            if route.name == name:
                return route
        known = ", ".join(r.name for r in self.routes) or "none"
        raise KeyError(f"no route named {name!r} in the config (routes: {known})")

    @property
    def db_path(self) -> str:
        return f"{self.state_dir}/ketter.db"

    @property
    def queue_path(self) -> str:
        return f"{self.state_dir}/queue.db"
