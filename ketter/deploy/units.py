"""The systemd units of a Ketter node, rendered from its config.

``ketter deploy units`` writes ``ketter-workers.service``,
``ketter-watcher.service``, ``ketter-api.service`` (when ``api.listen`` is
set) and ``ketter.target``. They are rendered, not hand-edited, because the
sandbox has to name the route folders: the workers may write only the
destinations, the move sources and the state directory, the watcher and the
API only the state directory; everything else is read-only
(``ProtectSystem=strict``). Change a route, render again, restart.

Why each directive is there is written above it in the unit itself (every
other line is a comment, as in huey's example unit), so that an auditor
reading ``/etc/systemd/system/ketter-workers.service`` needs nothing else.
The texts are the files in ``templates/`` (shipped in the wheel); this
module works out the values, escapes them for systemd and fills them in.
The trade-offs are in docs/operations.md ("Hardening").

Python is called directly: ``/opt/ketter/bin/python -I -m ketter``. Naming
the venv's interpreter (rather than its ``ketter`` console script) keeps the
unit independent of the script's generated shebang and lets us pass ``-I``
(isolated mode): no ``PYTHON*`` environment variables, no user site-packages,
and neither the working directory nor a script folder on ``sys.path``, so no
file dropped in a writable folder can shadow a Ketter module.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from urllib.parse import parse_qs, unquote, urlsplit

from ketter.config import Config
from ketter.config.api import split_address
from ketter.config.credentials import credential_name, valid_name
from ketter.config.text import control_char
from ketter.errors import ConfigError

#: Where deploy/install.sh puts the venv.
DEFAULT_PYTHON = "/opt/ketter/bin/python"
DEFAULT_USER = "ketter"
#: Added to ``shutdown_timeout`` for ``TimeoutStopSec``: the time to record
#: the stop in the job store and ship the last audit events after the
#: transfers have checkpointed.
STOP_MARGIN = 15.0
#: ``WatchdogSec``: above the longest pass of a main loop (a recovery sweep
#: walking a large destination, a full scan of a big share), far below what
#: a hung loop would cost in unattended hours.
WATCHDOG_SEC = 300
#: ``TimeoutStartSec`` of the workers: their main process migrates the job
#: store before ``READY=1`` (no ``ExecStartPre=``, whose exit status
#: ``RestartPreventExitStatus=`` ignores), and that may rewrite a big store.
START_TIMEOUT_SEC = 300
#: The credential name under which systemd hands over the audit HMAC key.
HMAC_CREDENTIAL = "audit-hmac-key"
#: Folders hidden or replaced by ProtectHome= / PrivateTmp=.
HOME_DIRS = ("/home", "/root", "/run/user")
TMP_DIRS = ("/tmp", "/var/tmp")

UNIT_NAMES = ("ketter-workers.service", "ketter-watcher.service", "ketter.target")
#: Rendered (and part of ketter.target) only when ``api.listen`` is set.
API_UNIT = "ketter-api.service"


@dataclass(frozen=True)
class Sandbox:
    """The filesystem view of one unit."""

    #: Written (destinations, move sources, the state directory...).
    read_write: tuple[str, ...]
    #: Read only, spelled out even though ProtectSystem=strict implies it, so
    #: the unit says which folders Ketter reads.
    read_only: tuple[str, ...]


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _unique(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(os.path.normpath(p) for p in paths))


def state_directory(config: Config) -> str | None:
    """``StateDirectory=`` value when state_dir is under /var/lib (systemd then
    creates it for the service user), else None (install.sh creates it)."""
    rel = os.path.relpath(config.state_dir, "/var/lib")
    if rel.startswith("..") or rel == ".":
        return None
    return rel


def workers_sandbox(config: Config) -> Sandbox:
    """Workers: write destinations, move sources, state and audit log folders."""
    rw = [config.state_dir, os.path.dirname(config.audit.log_file)]
    for route in config.routes:
        rw.append(route.destination)
        if route.mode == "move":
            rw.append(route.source)
    read_write = _outermost(rw)
    ro = [r.source for r in config.routes if not any(_inside(r.source, w) for w in read_write)]
    return Sandbox(read_write, _unique(ro))


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    """``paths`` without those inside another one (already covered)."""
    unique = _unique(paths)
    return tuple(p for p in unique if not any(p != q and _inside(p, q) for q in unique))


def watcher_sandbox(config: Config) -> Sandbox:
    """Watcher: reads every source, writes the state directory only."""
    read_write = _unique([config.state_dir])
    ro = [r.source for r in config.routes if not any(_inside(r.source, w) for w in read_write)]
    return Sandbox(read_write, _unique(ro))


def api_sandbox(config: Config) -> Sandbox:
    """API: writes the state directory only (the job store); reads the
    route folders (a submitted path is resolved under its source, the free
    space of a destination is shown) and never writes a share."""
    read_write = _unique([config.state_dir])
    roots = [p for r in config.routes for p in (r.source, r.destination)]
    ro = [p for p in _outermost(roots) if not any(_inside(p, w) for w in read_write)]
    return Sandbox(read_write, tuple(ro))


def warnings(config: Config) -> list[str]:
    """Paths the sandbox would hide from the services."""
    found = []
    paths = [("state_dir", config.state_dir)]
    for route in config.routes:
        paths += [
            (f"route {route.name} source", route.source),
            (f"route {route.name} destination", route.destination),
        ]
    for label, path in paths:
        if any(_inside(path, d) for d in TMP_DIRS):
            found.append(
                f"{label} {path} is under a temporary folder: the service has "
                "a private /tmp (PrivateTmp=yes) and will not see it"
            )
    return found


def _quote(path: str) -> str:
    # systemd unquotes like a shell (paths with spaces need quotes) and
    # expands % specifiers and $VARIABLES: double them to keep them literal.
    return shlex.quote(path).replace("%", "%%").replace("$", "$$")


def _literal(path: str) -> str:
    # Settings that take one path as is (no quotes), specifiers still expanded.
    return path.replace("%", "%%")


def _path_list(paths: Iterable[str]) -> str:
    # "-": a folder missing at start (its share is not mounted) is skipped
    # instead of failing the unit: the route pauses, the node keeps running.
    return " ".join("-" + _quote(p) for p in paths)


def _uses_home(config: Config) -> bool:
    paths = [config.state_dir, config.audit.log_file]
    for route in config.routes:
        paths += [route.source, route.destination]
    return any(_inside(p, d) for p in paths for d in HOME_DIRS)


def _command(python: str, config_path: str, *args: str) -> str:
    return " ".join([_quote(python), "-I", "-m", "ketter", "--config", _quote(config_path), *args])


def _template(name: str) -> str:
    return (files("ketter.deploy") / "templates" / name).read_text(encoding="utf-8")


def _fill(name: str, fields: dict[str, str], fragments: dict[str, str | None]) -> str:
    """Template ``name`` with ``fields`` (one line each, escaped by the caller)
    and ``fragments`` (a line holding only ``{fragment}``: that template, or
    nothing for None). Lines starting with ``## `` are notes, not rendered."""
    for key, value in fields.items():
        # Every value is checked upstream; a control character here would
        # still start a directive of its own, so refuse it at the last step.
        bad = control_char(value)
        if bad is not None:
            raise ConfigError(f"unit field {key} {value!r} contains {bad}: not rendered")
    out = []
    for line in _template(name).splitlines(keepends=True):
        if line.startswith("## "):
            continue
        block = line.strip()
        if block.startswith("{") and block.endswith("}") and block[1:-1] in fragments:
            fragment = fragments[block[1:-1]]
            if fragment is not None:
                out.append(_fill(fragment, fields, {}))
            continue
        out.append(line.format_map(fields))
    return "".join(out)


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def local_postgres(config: Config) -> bool:
    """Whether the job store is a PostgreSQL on this machine: ``store.dsn``'s
    host is localhost, 127.0.0.1, ::1, a unix socket path, or none (libpq's
    default socket)."""
    dsn = config.store.dsn
    if config.store.backend != "postgresql" or dsn is None:
        return False
    hosts: list[str] = []
    if "://" in dsn:
        parts = urlsplit(dsn)
        hosts = [unquote(parts.hostname or "")]
        hosts += [h for v in parse_qs(parts.query).get("host", []) for h in v.split(",")]
    else:
        for word in dsn.split():
            key, _, value = word.partition("=")
            if key.strip() in ("host", "hostaddr"):
                hosts += value.strip("'").split(",")
    hosts = [h for h in hosts if h]
    if not hosts:
        return True  # libpq's default: the local unix socket
    return all(h in LOCAL_HOSTS or h.startswith("/") for h in hosts)


def _service(
    config: Config, *, kind: str, python: str, config_path: str, user: str, group: str
) -> str:
    workers = kind == "workers"
    sandboxes = {"workers": workers_sandbox, "watcher": watcher_sandbox, "api": api_sandbox}
    sandbox = sandboxes[kind](config)
    statedir = state_directory(config)
    fields = {
        "config_path": config_path,
        "exec_start": _command(python, config_path, kind),
        "shutdown_timeout": f"{config.shutdown_timeout:g}",
        "stop_margin": f"{STOP_MARGIN:g}",
        "stop_timeout": str(int(config.shutdown_timeout + STOP_MARGIN + 0.999)),
        "watchdog_sec": str(WATCHDOG_SEC),
        "user": user,
        "group": group,
        "state_directory": statedir or "",
        "working_directory": _literal(config.state_dir),
        "read_write_paths": _path_list(sandbox.read_write),
        "read_only_paths": _path_list(sandbox.read_only),
        "protect_home": "read-only" if _uses_home(config) else "yes",
    }
    if workers:
        fields["start_timeout"] = str(START_TIMEOUT_SEC)
    network = "network-alerts.conf" if config.alerts.urls else "network-none.conf"
    fragments: dict[str, str | None] = {"metrics_bind": None}
    if kind == "api":
        network = "network-api.conf"
        api = config.api
        assert api.listen is not None
        fields["listen"] = ", ".join(a for a in (api.listen, api.metrics_listen) if a is not None)
        fields["listen_port"] = str(split_address(api.listen)[1])
        if api.metrics_listen is not None:
            fields["metrics_port"] = str(split_address(api.metrics_listen)[1])
            fragments["metrics_bind"] = "socket-bind-metrics.conf"
    fragments |= {
        "state_directory": "state-directory.conf" if statedir is not None else None,
        "credential": None,
        "read_only_paths": (
            None
            if not sandbox.read_only
            else "read-only-shares.conf"
            if kind == "api"
            else "read-only-paths.conf"
        ),
        "network": network,
        "postgres": "postgres-local.conf" if local_postgres(config) else None,
    }
    credential = credential_name(config.audit.hmac_key_file)
    if credential is not None:
        if not valid_name(credential):  # the loader refuses it; never render it raw
            raise ConfigError(
                f"audit.hmac_key_file: credential name {credential!r} may hold only "
                "letters, digits, '_', '.' and '-'"
            )
        fields["credential"] = credential
        fragments["credential"] = "credential-store.conf"
    elif config.audit.hmac_key_file:
        key = _literal(config.audit.hmac_key_file)
        fields["credential_name"] = HMAC_CREDENTIAL
        fields["key_file"] = key
        fields["bind_key"] = shlex.quote(f"%d/{HMAC_CREDENTIAL}:{key}")
        fragments["credential"] = "credential-file.conf"
    return _fill(f"ketter-{kind}.service", fields, fragments)


def _target(config_path: str, services: Iterable[str]) -> str:
    return _fill("ketter.target", {"config_path": config_path, "services": " ".join(services)}, {})


def render_units(
    config: Config,
    *,
    python: str = DEFAULT_PYTHON,
    config_path: str | None = None,
    user: str = DEFAULT_USER,
    group: str | None = None,
) -> dict[str, str]:
    """The unit files, name → text, for ``config``: the workers, the
    watcher, the API when ``api.listen`` is set, and ketter.target.

    ``config_path`` is the path written into the units (default: the file
    the config was read from, made absolute); ``python`` the interpreter of
    the venv Ketter is installed in.
    """
    path = config_path or os.path.abspath(config.path)
    group = group or user
    _refuse_control_characters(config, python=python, config_path=path, user=user, group=group)
    common = {"python": python, "config_path": path, "user": user, "group": group}
    units = {
        "ketter-workers.service": _service(config, kind="workers", **common),
        "ketter-watcher.service": _service(config, kind="watcher", **common),
    }
    if config.api.listen is not None:
        units[API_UNIT] = _service(config, kind="api", **common)
    units["ketter.target"] = _target(path, units)
    return units


def _refuse_control_characters(config: Config, **settings: str) -> None:
    """A newline in any value written into a unit would start a directive of
    its author's choosing (``ExecStartPre=…``): the loader refuses them, and
    so does the renderer, for a config built in code or a bad option."""
    values = dict(settings)
    values["state_dir"] = config.state_dir
    values["audit.log_file"] = config.audit.log_file
    values["audit.hmac_key_file"] = config.audit.hmac_key_file or ""
    values["api.listen"] = config.api.listen or ""
    values["api.metrics_listen"] = config.api.metrics_listen or ""
    for route in config.routes:
        values[f"route {route.name!r} name"] = route.name
        for side in ("source", "destination", "source_mount", "destination_mount"):
            values[f"route {route.name!r} {side}"] = getattr(route, side) or ""
    for label, value in values.items():
        bad = control_char(value)
        if bad is not None:
            raise ConfigError(
                f"{label} {value!r} contains {bad}: refusing to write it into a "
                "systemd unit (it would start a new directive)"
            )


def exec_start(unit_text: str) -> list[str]:
    """The argv of a rendered unit's ``ExecStart=`` (tests run the same command)."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
            return [a.replace("%%", "%").replace("$$", "$") for a in argv]
    raise ValueError("no ExecStart= in the unit")


def write_units(units: dict[str, str], out_dir: str) -> list[str]:
    """Write the units into ``out_dir`` (0644, atomically); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, text in units.items():
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return written
