"""The ``store:`` section: which backend holds the job store (issue #18).

``backend: sqlite`` (the default) keeps the store and the queue as files
under ``state_dir``, exactly as before. ``backend: postgresql`` names a
database by ``dsn`` (a ``postgresql://`` URL or libpq ``key=value`` words)
and reads its password from ``password_file``: a password is never written
in the YAML, which is read by every account that runs a command.

The rules no single key can check are here (:func:`check_store`), reported
like every config problem as ``FILE:LINE: KEY: reason``. One node runs
whole on PostgreSQL (the job store, the queue, the read model, ``db
upgrade``/``status``, ``audit verify``, ``health``, the API's reads;
``tests/integration/test_postgres_node.py``); several nodes share one
database, each with its own ``node:`` (required with ``postgresql``,
docs/scale-out.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from ketter.config.schema import Config

BACKENDS = ("sqlite", "postgresql")


def parse_dsn(raw: object) -> str:
    """A PostgreSQL connection string without a password; ValueError saying
    what is wrong otherwise."""
    example = "such as postgresql://ketter@db.example:5432/ketter"
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"expected a PostgreSQL connection string, {example}, got {raw!r}")
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"expected a postgresql:// URL, {example}, got scheme {parts.scheme!r}"
            )
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError(
                "the connection string holds a password: put it in store.password_file "
                "(readable by the Ketter account only) and leave it out of the YAML"
            )
        return raw
    words = raw.split()
    if not all("=" in word for word in words):
        raise ValueError(f"expected a postgresql:// URL or key=value words, {example}")
    if any(word.split("=", 1)[0].strip() == "password" for word in words):
        raise ValueError(
            "the connection string holds a password: put it in store.password_file "
            "(readable by the Ketter account only) and leave it out of the YAML"
        )
    return raw


def check_store(config: Config, key_lines: dict[str, int], path: str) -> list[str]:
    """The ``store:`` rules between keys (see the module docstring)."""
    store = config.store
    problems: list[str] = []

    def where(key: str) -> str:
        line = key_lines.get(f"store.{key}", key_lines.get("store", 1))
        return f"{path}:{line}: store.{key}"

    if store.backend == "sqlite":
        for key in ("dsn", "password_file"):
            if getattr(store, key) is not None:
                problems.append(
                    f"{where(key)}: only for backend: postgresql (the SQLite store is "
                    "state_dir/ketter.db); remove it or set store.backend"
                )
        return problems
    if "node" not in key_lines:
        # Several nodes share the database: a name taken by default (the
        # host name) could be another node's (a cloned VM, a container).
        problems.append(
            f"{where('backend')}: backend: postgresql needs node: set in the config, a name "
            "unique among the nodes on this database (e.g. node: ingest-1)"
        )
    if store.dsn is None:
        problems.append(
            f"{where('backend')}: backend: postgresql needs store.dsn, the database to use "
            "(e.g. postgresql://ketter@db.example:5432/ketter)"
        )
    return problems


def read_password(password_file: str | None) -> str | None:
    """The password in ``password_file`` (its first line), or None without one."""
    if password_file is None:
        return None
    try:
        with open(password_file, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot read store.password_file {password_file}: {exc.strerror}"
        ) from None
