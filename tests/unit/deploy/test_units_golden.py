"""The units rendered from the templates are byte-identical to the reviewed
golden/<case>/<unit> files, for every branch of the units (state directory
or not, a key file or a credential, alerts or none, home folders, odd paths,
own user). First written by the renderer the templates replaced (#16 item
8); updated for issue #15 (no ExecStartPre=, the target's Requires=, start
limits, SyslogIdentifier=): a change to a unit shows here as a diff to review."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ketter.config import load_config
from ketter.deploy.units import API_UNIT, UNIT_NAMES, render_units

GOLDEN = Path(__file__).parent / "golden"

#: case -> (config text, render_units options)
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "routes": (
        """
        state_dir: /var/lib/ketter
        shutdown_timeout: 42s
        routes:
          - {name: ingest, source: /mnt/ingest/out, destination: /mnt/dub/in}
          - {name: dub, source: /mnt/dub/out, destination: /mnt/qc/in, mode: move}
          - {name: stage, source: /mnt/dub/in/stems, destination: /mnt/qc/stems}
        """,
        {},
    ),
    "alerts_keyfile": (
        """
        state_dir: /var/lib/ketter
        audit: {hmac_key_file: /etc/ketter/audit-hmac.key}
        alerts: {urls: ["json://10.1.2.3:8080/ketter"]}
        routes:
          - {name: a, source: /mnt/a/out, destination: /mnt/b/in}
        """,
        {"python": "/usr/bin/python3", "user": "xfer", "group": "ops"},
    ),
    "credential_home": (
        """
        state_dir: /var/lib/ketter/node-1
        shutdown_timeout: 2.5s
        audit: {hmac_key_file: '${CREDENTIALS_DIRECTORY}/Audit_key-2.v1'}
        routes:
          - {name: a, source: /home/edit/out, destination: /mnt/b, mode: move}
        """,
        {},
    ),
    "odd_paths": (
        """
        state_dir: /srv/ketter state
        routes:
          - {name: a, source: "/mnt/a/100% out", destination: "/mnt/b/in $HOME"}
        """,
        {"config_path": "/etc/ketter/my 100% $config.yaml"},
    ),
    # #17: the third unit, only when api.listen is set; ketter.target requires it.
    "api": (
        """
        state_dir: /var/lib/ketter
        audit: {hmac_key_file: /etc/ketter/audit-hmac.key}
        api:
          listen: 0.0.0.0:8443
          tls_cert: /etc/ketter/tls/api.pem
          tls_key: /etc/ketter/tls/api.key
          metrics_listen: '[::]:9464'
        routes:
          - {name: a, source: /mnt/a/out, destination: /mnt/b/in}
          - {name: b, source: /mnt/b/out, destination: /mnt/c/in, mode: move}
        """,
        {},
    ),
    # #18: a job store on a local PostgreSQL: every service waits for it.
    "postgres_local": (
        """
        state_dir: /var/lib/ketter
        node: ingest-1
        store: {backend: postgresql, dsn: 'postgresql://ketter@localhost/ketter'}
        routes:
          - {name: a, source: /mnt/a/out, destination: /mnt/b/in}
        """,
        {},
    ),
}


def render(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text, options = CASES[case]
    path = tmp_path / "ketter.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    options = {"config_path": "/etc/ketter/ketter.yaml", **options}
    return render_units(load_config(path), **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_units_match_the_old_renderer(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units = render(case, tmp_path, monkeypatch)
    if case == "api":
        assert tuple(units) == (*UNIT_NAMES[:2], API_UNIT, UNIT_NAMES[2])
    else:
        assert tuple(units) == UNIT_NAMES
    for name, text in units.items():
        golden = (GOLDEN / case / name).read_bytes().decode("utf-8")
        assert text == golden, f"{case}/{name} differs from the old renderer's output"
