"""The units wait for PostgreSQL when the job store is on this machine
(issue #18 item 8): ``After=``/``Wants=postgresql.service`` exactly when
``store.dsn``'s host is local (localhost, 127.0.0.1, ::1, a unix socket)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ketter.config import load_config
from ketter.deploy.units import render_units

CONFIG = """\
state_dir: {root}/state
node: n1
store: {{backend: postgresql, dsn: '{dsn}'}}
routes:
  - {{name: a, source: {root}/a, destination: {root}/b}}
"""


@pytest.mark.parametrize(
    ("dsn", "local"),
    [
        ("postgresql://ketter@localhost/ketter", True),
        ("postgresql://ketter@127.0.0.1:5433/ketter", True),
        ("postgresql://ketter@[::1]:5432/ketter", True),
        ("postgresql:///ketter", True),  # no host: libpq's unix socket
        ("postgresql://ketter@%2Fvar%2Frun%2Fpostgresql/ketter", True),  # a socket path
        ("postgresql:///ketter?host=/run/postgresql", True),
        ("host=/run/postgresql dbname=ketter", True),
        ("dbname=ketter user=ketter", True),
        ("host=localhost dbname=ketter", True),
        ("postgresql://ketter@db.example:5432/ketter", False),
        ("postgresql://ketter@10.0.0.5/ketter", False),
        ("host=db.example dbname=ketter", False),
        ("postgresql:///ketter?host=db.example", False),
    ],
)
def test_units_wait_for_a_local_postgresql_only(dsn: str, local: bool, tmp_path: Path) -> None:
    path = tmp_path / "ketter.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(root=tmp_path, dsn=dsn)))
    units = render_units(load_config(path), config_path="/etc/ketter/ketter.yaml")
    for name in ("ketter-workers.service", "ketter-watcher.service"):
        text = units[name]
        assert ("After=postgresql.service" in text) is local, (dsn, name)
        assert ("Wants=postgresql.service" in text) is local, (dsn, name)
        unit_section = text.split("[Service]")[0]
        if local:
            assert "After=postgresql.service" in unit_section


def test_sqlite_units_do_not_mention_postgresql(tmp_path: Path) -> None:
    path = tmp_path / "ketter.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/s\nroutes:\n"
        f"  - {{name: a, source: {tmp_path}/a, destination: {tmp_path}/b}}\n"
    )
    units = render_units(load_config(path), config_path="/etc/ketter/ketter.yaml")
    assert not any("postgresql" in text for text in units.values())
