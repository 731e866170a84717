"""The systemd units of a Ketter node, rendered from its config.

``ketter deploy units`` writes ``ketter-workers.service``,
``ketter-watcher.service`` and ``ketter.target``. They are rendered, not
hand-edited, because the sandbox has to name the route folders: the workers
may write only the destinations, the move sources and the state directory,
the watcher only the state directory; everything else is read-only
(``ProtectSystem=strict``). Change a route, render again, restart.

Why each directive is there is written above it in the unit itself (every
other line is a comment, as in huey's example unit), so that an auditor
reading ``/etc/systemd/system/ketter-workers.service`` needs nothing else.
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

from ketter.config import Config
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
#: ``TimeoutStartSec`` of the workers: ``db upgrade`` may rewrite a big store.
START_TIMEOUT_SEC = 300
#: The credential name under which systemd hands over the audit HMAC key.
HMAC_CREDENTIAL = "audit-hmac-key"
#: Folders hidden or replaced by ProtectHome= / PrivateTmp=.
HOME_DIRS = ("/home", "/root", "/run/user")
TMP_DIRS = ("/tmp", "/var/tmp")

UNIT_NAMES = ("ketter-workers.service", "ketter-watcher.service", "ketter.target")


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


def _service(
    config: Config, *, kind: str, python: str, config_path: str, user: str, group: str
) -> str:
    workers = kind == "workers"
    sandbox = workers_sandbox(config) if workers else watcher_sandbox(config)
    alerts = bool(config.alerts.urls)
    statedir = state_directory(config)
    stop_timeout = int(config.shutdown_timeout + STOP_MARGIN + 0.999)
    lines = [
        f"# Ketter {kind} — rendered by `ketter deploy units` from {config_path}.",
        "# Do not edit: change the config, render again, then daemon-reload and restart.",
        "[Unit]",
    ]
    if workers:
        lines += [
            "# Runs the transfer jobs (copy, verify, place, delete moved sources).",
            "Description=Ketter workers: verified transfers between network zones",
        ]
    else:
        lines += [
            "# Only detects finished files and enqueues jobs; never copies or deletes.",
            "Description=Ketter watcher: detects new files on the route sources",
        ]
    lines += [
        "# The runbook for whoever is on call.",
        "Documentation=file:///opt/ketter/share/doc/ketter/operations.md",
        "# Shares are mounted by remote-fs.target; one still missing pauses its route.",
        "After=network-online.target remote-fs.target",
        "# network-online only orders us after the network is up; it is not required.",
        "Wants=network-online.target",
        "# `systemctl stop/restart ketter.target` acts on both services.",
        "PartOf=ketter.target",
    ]
    if not workers:
        lines += [
            "# After the workers: their ExecStartPre has migrated the job store first.",
            "After=ketter-workers.service",
        ]
    lines += [
        "# At most 5 failed starts in 10 minutes, then stay failed for a human.",
        "StartLimitIntervalSec=600",
        "# (A crash loop would hide the first, useful error in the journal.)",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "# Started only when the process says READY=1 (sd_notify), after start-up.",
        "Type=notify",
        "# Only the main process may notify (no child can fake READY or WATCHDOG).",
        "NotifyAccess=main",
    ]
    if workers:
        lines += [
            "# Migrations before start, under a lock; a no-op when the schema is current.",
            "ExecStartPre=" + _command(python, config_path, "db", "upgrade"),
            "# Migrating a large job store may take a while.",
            f"TimeoutStartSec={START_TIMEOUT_SEC}",
        ]
    lines += [
        "# The venv's Python directly, isolated (-I): no wrapper, no stray modules.",
        "ExecStart=" + _command(python, config_path, kind),
        (
            "# SIGHUP re-reads the config (route folders may not change without restart)."
            if workers
            else "# SIGHUP is accepted; detection settings apply at restart (which is safe)."
        ),
        "ExecReload=/bin/kill -HUP $MAINPID",
        (
            "# Ketter's handler makes SIGTERM graceful: transfers checkpoint and release."
            if workers
            else "# Ketter's handler makes SIGTERM graceful: the watcher records its stop."
        ),
        "KillSignal=SIGTERM",
        *(
            [
                "# SIGTERM to the main process only: it passes one on to its",
                "# children (worker_processes > 1); a second would stop them at once.",
                "KillMode=mixed",
            ]
            if workers
            else []
        ),
        f"# shutdown_timeout ({config.shutdown_timeout:g}s) + {STOP_MARGIN:g}s to record "
        "the stop; then SIGKILL.",
        f"TimeoutStopSec={stop_timeout}",
        (
            "# A crash (or a watchdog kill) restarts the service; the sweep recovers jobs."
            if workers
            else "# A crash (or a watchdog kill) restarts it; a full scan catches up."
        ),
        "Restart=on-failure",
        "# Give a share or the disk a moment before trying again.",
        "RestartSec=5",
        "# Exit 2 = invalid config: restarting cannot fix it, so do not loop.",
        "RestartPreventExitStatus=2",
        "# The main loop sends WATCHDOG=1; silence this long (a hang) means restart.",
        f"WatchdogSec={WATCHDOG_SEC}",
        "",
        "# --- identity -------------------------------------------------------------",
        "# A dedicated system account, created by deploy/install.sh.",
        f"User={user}",
        "# Its group: operators in it may read the job store and the audit log.",
        f"Group={group}",
        "# New files rw for ketter, read-only for its group, nothing for others.",
        "UMask=0027",
    ]
    if statedir is not None:
        lines += [
            f"# /var/lib/{statedir}: created and owned by {user}, writable despite ProtectSystem.",
            f"StateDirectory={statedir}",
            "# Group may read (sqlite3 -readonly, ketter health); others nothing.",
            "StateDirectoryMode=0750",
        ]
    lines += [
        "# The state directory: relative paths and core dumps stay there.",
        f"WorkingDirectory={_literal(config.state_dir)}",
    ]
    credential = credential_name(config.audit.hmac_key_file)
    if credential is not None:
        if not valid_name(credential):  # the loader refuses it; never render it raw
            raise ConfigError(
                f"audit.hmac_key_file: credential name {credential!r} may hold only "
                "letters, digits, '_', '.' and '-'"
            )
        lines += [
            "# The audit HMAC key: systemd loads this credential from its store",
            f"# (/etc/credstore/{credential}, root-only) and shows it in $CREDENTIALS_DIRECTORY.",
            f"LoadCredential={credential}",
        ]
    elif config.audit.hmac_key_file:
        key = config.audit.hmac_key_file
        lines += [
            "# The audit HMAC key stays root-only on disk; systemd hands the service a copy.",
            f"LoadCredential={HMAC_CREDENTIAL}:{_literal(key)}",
            "# ...shown at the path the config names (%d = the credentials folder).",
            "BindReadOnlyPaths=" + shlex.quote(f"%d/{HMAC_CREDENTIAL}:{_literal(key)}"),
        ]
    lines += [
        "",
        "# --- filesystem: read/write only where the routes point ---------------------",
        "# The whole tree read-only, /dev /proc /sys too...",
        "ProtectSystem=strict",
        "# ...except these folders (a missing one, an unmounted share, is skipped).",
        "ReadWritePaths=" + _path_list(sandbox.read_write),
    ]
    if sandbox.read_only:
        lines += [
            "# Route sources this service only reads (copy routes; every source for the watcher).",
            "ReadOnlyPaths=" + _path_list(sandbox.read_only),
        ]
    lines += [
        "# Home folders: a route under /home gets read-only access instead of none.",
        "ProtectHome=" + ("read-only" if _uses_home(config) else "yes"),
        "# A private /tmp: no other process sees or plants Ketter's temporary files.",
        "PrivateTmp=yes",
        "# No physical devices (only /dev/null, /dev/zero, /dev/urandom...).",
        "PrivateDevices=yes",
        "# Unmounting, remounting, new mounts: not from here.",
        "PrivateMounts=yes",
        "# No System V IPC objects shared with other services.",
        "PrivateIPC=yes",
        "# Removed when the service stops.",
        "RemoveIPC=yes",
        "# Kernel keyring not shared with other services of the user.",
        "KeyringMode=private",
        "",
        "# --- privileges -----------------------------------------------------------",
        "# No setuid binary, no new privilege through exec.",
        "NoNewPrivileges=yes",
        "# Not a single capability: Ketter needs none (it only reads and writes files).",
        "CapabilityBoundingSet=",
        "# None inherited either.",
        "AmbientCapabilities=",
        "# No setuid/setgid bits on files it creates (it copies permissions).",
        "RestrictSUIDSGID=yes",
        "# No user, mount, network... namespaces of its own.",
        "RestrictNamespaces=yes",
        "# No realtime scheduling (cannot starve the machine).",
        "RestrictRealtime=yes",
        "# Memory cannot be both writable and executable (no code injection).",
        "MemoryDenyWriteExecute=yes",
        "# Personality (e.g. 32-bit emulation) locked.",
        "LockPersonality=yes",
        "",
        "# --- kernel ---------------------------------------------------------------",
        "# /proc/sys, /sys: read-only.",
        "ProtectKernelTunables=yes",
        "# No module loading.",
        "ProtectKernelModules=yes",
        "# No kernel log (dmesg).",
        "ProtectKernelLogs=yes",
        "# cgroup tree read-only.",
        "ProtectControlGroups=yes",
        "# System clock untouched.",
        "ProtectClock=yes",
        "# Host name untouched.",
        "ProtectHostname=yes",
        "# Other users' processes invisible in /proc.",
        "ProtectProc=invisible",
        "# Only /proc/PID entries, not the kernel's files under /proc.",
        "ProcSubset=pid",
        "# Hardware devices: none.",
        "DevicePolicy=closed",
        "",
        "# --- system calls ---------------------------------------------------------",
        "# Only the native ABI (no x32 / i386 tricks around the filter).",
        "SystemCallArchitectures=native",
        "# What an ordinary service needs...",
        "SystemCallFilter=@system-service",
        "# ...minus privileged calls and resource limits (Ketter uses neither).",
        "SystemCallFilter=~@privileged @resources",
        "# A refused call fails with EPERM (Ketter logs the error) instead of a kill.",
        "SystemCallErrorNumber=EPERM",
        "",
        "# --- network --------------------------------------------------------------",
    ]
    if alerts:
        lines += [
            "# Alerts (alerts.urls) need IP; IPAddressAllow= takes addresses, not host",
            "# names: see docs/operations.md (alert relay on the management network).",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        ]
    else:
        lines += [
            "# Local sockets only (sd_notify, name service); no alerts configured.",
            "RestrictAddressFamilies=AF_UNIX",
            "# No network at all: not even loopback. Shares are the kernel's, unaffected.",
            "PrivateNetwork=yes",
            "# And no IP traffic, should the namespace ever be shared.",
            "IPAddressDeny=any",
        ]
    lines += [
        "",
        "[Install]",
        "# `systemctl enable ketter.target` starts both services at boot.",
        "WantedBy=ketter.target",
    ]
    return "\n".join(lines) + "\n"


def _target(config_path: str) -> str:
    return "\n".join(
        [
            f"# Ketter — rendered by `ketter deploy units` from {config_path}.",
            "# `systemctl enable --now ketter.target` starts the node now and at boot.",
            "[Unit]",
            "# Both services; stopping or restarting the target acts on both (PartOf=).",
            "Description=Ketter transfer node (watcher and workers)",
            "# The runbook.",
            "Documentation=file:///opt/ketter/share/doc/ketter/operations.md",
            "# Pulls in the two services.",
            "Wants=ketter-workers.service ketter-watcher.service",
            "# Reached once both are up.",
            "After=ketter-workers.service ketter-watcher.service",
            "",
            "[Install]",
            "# Part of the normal boot.",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def render_units(
    config: Config,
    *,
    python: str = DEFAULT_PYTHON,
    config_path: str | None = None,
    user: str = DEFAULT_USER,
    group: str | None = None,
) -> dict[str, str]:
    """The three unit files, name → text, for ``config``.

    ``config_path`` is the path written into the units (default: the file
    the config was read from, made absolute); ``python`` the interpreter of
    the venv Ketter is installed in.
    """
    path = config_path or os.path.abspath(config.path)
    group = group or user
    _refuse_control_characters(config, python=python, config_path=path, user=user, group=group)
    common = {"python": python, "config_path": path, "user": user, "group": group}
    return {
        "ketter-workers.service": _service(config, kind="workers", **common),
        "ketter-watcher.service": _service(config, kind="watcher", **common),
        "ketter.target": _target(path),
    }


def _refuse_control_characters(config: Config, **settings: str) -> None:
    """A newline in any value written into a unit would start a directive of
    its author's choosing (``ExecStartPre=…``): the loader refuses them, and
    so does the renderer, for a config built in code or a bad option."""
    values = dict(settings)
    values["state_dir"] = config.state_dir
    values["audit.log_file"] = config.audit.log_file
    values["audit.hmac_key_file"] = config.audit.hmac_key_file or ""
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
