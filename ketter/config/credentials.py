"""The audit HMAC key file: where it is, and reading it with a clear error.

Two ways to name it in ``audit.hmac_key_file`` (docs/audit.md, "Keyed
chain"):

* the key file's own path (``/etc/ketter/audit.key``, root-only): the
  rendered units hand systemd's copy to the services (``LoadCredential=``)
  and show it at the same path (``BindReadOnlyPaths=``);
* ``${CREDENTIALS_DIRECTORY}/NAME``: systemd's credentials folder, which
  systemd sets only inside the service. The loader expands it when the
  variable is set; outside the service (``config check``, ``deploy units``)
  it stays unresolved, the units load credential ``NAME`` from systemd's
  credential store (``/etc/credstore/NAME``), and ``config check`` says
  that it can only check the store.

Before, the ``${…}`` form was joined to the config folder as a literal
relative path: ``config check`` said OK, the units named a bogus source, and
the workers died on a raw ``[Errno 2]`` with exit 1, restarted five times.
"""

from __future__ import annotations

import os
import re
import stat

from ketter.errors import ConfigError

VARIABLE = "CREDENTIALS_DIRECTORY"
#: How an unresolved credential path is kept in the loaded config.
UNRESOLVED = "${" + VARIABLE + "}/"
_FORMS = (UNRESOLVED, "$" + VARIABLE + "/")
#: Where systemd (250 and newer) looks for ``LoadCredential=NAME`` without a path.
CREDSTORE_DIRS = ("/etc/credstore", "/run/credstore", "/usr/lib/credstore")
KEY = "audit.hmac_key_file"
#: A credential name the units can carry as it is: ``LoadCredential=NAME``
#: is one systemd word, and a space, ``%``, ``$``, ``;``, a quote or a
#: backslash in it would split, expand or end the directive (unit
#: injection, #14 finding 6).
NAME = re.compile(r"[A-Za-z0-9_.-]+")


def valid_name(name: str) -> bool:
    """Whether ``name`` may be a systemd credential name in the units."""
    return bool(NAME.fullmatch(name)) and name not in (".", "..")


def resolve(raw: str, base_dir: str) -> str:
    """The key path from the config value (ValueError for a bad one)."""
    for form in _FORMS:
        if raw.startswith(form):
            name = raw.removeprefix(form)
            if not valid_name(name):
                raise ValueError(
                    f"write ${{{VARIABLE}}}/NAME with one credential name of letters, "
                    f"digits, '_', '.' and '-' only, got {raw!r}"
                )
            directory = os.environ.get(VARIABLE)
            if directory:
                return os.path.join(directory, name)
            return UNRESOLVED + name
    if "$" in raw:
        raise ValueError(
            f"only ${{{VARIABLE}}}/NAME is expanded in this key, got {raw!r}; "
            "name the key file's path or systemd's credential"
        )
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(raw)))


def credential_name(path: str | None) -> str | None:
    """NAME when ``path`` is an unresolved ``${CREDENTIALS_DIRECTORY}/NAME``."""
    if path and path.startswith(UNRESOLVED):
        return path.removeprefix(UNRESOLVED)
    return None


def _where(config_path: str, line: int | None) -> str:
    if not config_path:
        return KEY
    return f"{config_path}:{line}: {KEY}" if line else f"{config_path}: {KEY}"


def read_hmac_key(
    path: str | None, *, config_path: str = "", line: int | None = None
) -> bytes | None:
    """The key's bytes (surrounding whitespace stripped), None without a key
    file; :class:`ConfigError` (exit 2: a restart cannot fix it) saying what
    is wrong and how to fix it otherwise."""
    if not path:
        return None
    where = _where(config_path, line)
    name = credential_name(path)
    if name is not None:
        raise ConfigError(
            f"{where}: {path} names systemd's credentials folder, but {VARIABLE} is "
            f"not set (systemd sets it only inside a service with LoadCredential=): "
            f"start Ketter from the rendered units (ketter deploy units), which load "
            f"credential {name!r}, or name the key file's own path"
        )
    try:
        # O_NONBLOCK + fstat: a FIFO named as the key must not block the start.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IsADirectoryError(path)
            key = fh.read().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: the key file {path} does not exist; create it (head -c 32 "
            "/dev/urandom | base64 > FILE, mode 0600) or correct the path"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: {path} is not a regular file") from None
    except PermissionError:
        raise ConfigError(
            f"{where}: the key file {path} cannot be read by {_user()}; start the "
            "services from the rendered units (systemd hands them a copy with "
            "LoadCredential=) or let this user read it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the key file {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError(
            f"{where}: the key file {path} is empty; a keyed chain needs a key "
            "(head -c 32 /dev/urandom | base64 > FILE)"
        )
    return key


def check_hmac_key(
    path: str | None, *, config_path: str, line: int | None
) -> tuple[list[str], list[str]]:
    """Errors and warnings about the key file for ``ketter config check``."""
    if not path:
        return [], []
    where = _where(config_path, line)
    name = credential_name(path)
    if name is not None:
        stored = [d + "/" + name for d in CREDSTORE_DIRS if os.path.isfile(d + "/" + name)]
        if not stored:
            return [
                f"{where}: {path} cannot be resolved here ({VARIABLE} is set by "
                f"systemd only inside the service), and credential {name!r} is in none "
                f"of {', '.join(CREDSTORE_DIRS)}, where the rendered units load it "
                f"from: put the key in /etc/credstore/{name} (root, 0600) or name "
                "the key file's own path"
            ], []
        return [], [
            f"{where}: {path} cannot be resolved here ({VARIABLE} is set by systemd "
            f"only inside the service); the rendered units load credential {name!r} "
            f"from {stored[0]}, which exists (its content is checked when the service "
            "starts)"
        ]
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError:
        # The runbook checks as the service account, which a root-only key
        # (or its folder) keeps out: the rendered units hand systemd's copy over.
        return [], [
            f"{where}: {_user()} may not read the key file {path} (permission "
            "denied); the services started from the rendered units get a copy "
            "through LoadCredential= (read by systemd as root): run this check "
            "as root to check the key itself"
        ]
    except OSError:
        pass  # read_hmac_key below says what is wrong
    try:
        read_hmac_key(path, config_path=config_path, line=line)
    except ConfigError as exc:
        return [str(exc)], []
    return [], []


def _user() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name!r}"
    except (KeyError, ImportError):
        return f"uid {os.geteuid()}"
