"""The ``store:`` section (issue #18): the backend, its DSN without a
password, its password in a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketter.config.loader import parse_config
from ketter.config.store import read_password
from ketter.errors import ConfigError


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config("state_dir: /tmp/k\n" + text, path="k.yaml")
    return str(caught.value)


def test_the_default_is_sqlite_under_state_dir() -> None:
    config = parse_config("state_dir: /tmp/k\n", path="k.yaml")
    assert (config.store.backend, config.store.dsn, config.store.password_file) == (
        "sqlite",
        None,
        None,
    )
    assert config.db_path == "/tmp/k/ketter.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A password in the URL or in the key=value words: never in the YAML.
        ("  backend: postgresql\n  dsn: postgresql://k:secret@db/k\n", "k.yaml:4: store.dsn: "),
        ("  backend: postgresql\n  dsn: host=db password=secret\n", "store.password_file"),
        ("  backend: postgresql\n  dsn: mysql://db/k\n", "got scheme 'mysql'"),
        ("  backend: postgresql\n", "k.yaml:3: store.backend: backend: postgresql needs store.dsn"),
        ("  dsn: postgresql://k@db/k\n", "k.yaml:3: store.dsn: only for backend: postgresql"),
        ("  backend: mariadb\n", "choose one of sqlite, postgresql"),
    ],
)
def test_store_problems_name_their_line(text: str, expected: str) -> None:
    problems = _problems("store:\n" + text)
    assert expected in problems
    assert "secret" not in problems


def test_postgresql_names_the_database_and_its_password_file(tmp_path: Path) -> None:
    config = parse_config(
        "state_dir: /tmp/k\nnode: k1\nstore:\n  backend: postgresql\n"
        "  dsn: postgresql://ketter@db/ketter\n  password_file: /etc/ketter/db-password\n",
        path="k.yaml",
    )
    assert (config.store.backend, config.store.dsn, config.store.password_file) == (
        "postgresql",
        "postgresql://ketter@db/ketter",
        "/etc/ketter/db-password",
    )


def test_the_password_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    assert read_password(str(tmp_path / "pw")) == "s3cret"
    assert read_password(None) is None
    with pytest.raises(OSError, match=r"store\.password_file"):
        read_password(str(tmp_path / "missing"))


def test_postgresql_needs_the_node_named_in_the_config() -> None:
    # Several nodes share the database: the host name is no default there.
    problems = _problems("store:\n  backend: postgresql\n  dsn: postgresql://k@db/k\n")
    assert "k.yaml:3: store.backend: backend: postgresql needs node: set in the config" in (
        problems
    )
    named = parse_config(
        "state_dir: /tmp/k\nnode: k1\nstore: {backend: postgresql, dsn: 'postgresql://k@db/k'}\n",
        path="k.yaml",
    )
    assert named.node == "k1"
    # On SQLite the default stays the host name.
    assert parse_config("state_dir: /tmp/k\n", path="k.yaml").node
