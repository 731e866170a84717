"""The rendered units: sandbox paths follow the routes, every directive is
explained, the committed examples are current."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from ketter.config import load_config
from ketter.deploy.units import exec_start, render_units, workers_sandbox
from ketter.errors import ConfigError
from tests.conftest import KETTER, ROOT, cli_env

EXAMPLE = ROOT / "configs" / "ketter.example.yaml"


def _values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


@pytest.fixture
def config(write_config, tmp_path: Path):
    path = write_config("""
        state_dir: /var/lib/ketter
        shutdown_timeout: 42s
        routes:
          - {name: ingest, source: /mnt/ingest/out, destination: /mnt/dub/in}
          - {name: dub, source: /mnt/dub/out, destination: /mnt/qc/in, mode: move}
          - {name: stage, source: /mnt/dub/in/stems, destination: /mnt/qc/stems}
        """)
    return load_config(path)


def test_committed_examples_are_rendered_from_the_example_config() -> None:
    units = render_units(load_config(EXAMPLE), config_path="/etc/ketter/ketter.yaml")
    for name, text in units.items():
        committed = (ROOT / "deploy" / name).read_text(encoding="utf-8")
        assert committed == text, (
            f"deploy/{name} is stale: run `ketter --config configs/ketter.example.yaml "
            "deploy units --config-path /etc/ketter/ketter.yaml --out deploy`")


def test_every_directive_is_preceded_by_its_reason(config) -> None:
    for name, text in render_units(config).items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith(("#", "[")):
                assert lines[i - 1].startswith("#"), f"{name}: no comment above {line!r}"


def test_workers_write_destinations_and_move_sources_only(config) -> None:
    sandbox = workers_sandbox(config)
    # the stage route's copy source lies inside the ingest destination: it
    # stays writable there (ingest delivers into it), so it is not made RO
    assert sandbox.read_write == ("/var/lib/ketter", "/mnt/dub/in", "/mnt/qc/in",
                                  "/mnt/dub/out", "/mnt/qc/stems")
    assert sandbox.read_only == ("/mnt/ingest/out",)
    unit = render_units(config)["ketter-workers.service"]
    assert _values(unit, "ReadWritePaths") == [
        "-/var/lib/ketter -/mnt/dub/in -/mnt/qc/in -/mnt/dub/out -/mnt/qc/stems"]
    assert _values(unit, "ReadOnlyPaths") == ["-/mnt/ingest/out"]
    assert _values(unit, "ProtectSystem") == ["strict"]
    assert _values(unit, "StateDirectory") == ["ketter"]


def test_watcher_writes_the_state_directory_only(config) -> None:
    unit = render_units(config)["ketter-watcher.service"]
    assert _values(unit, "ReadWritePaths") == ["-/var/lib/ketter"]
    assert _values(unit, "ReadOnlyPaths") == [
        "-/mnt/ingest/out -/mnt/dub/out -/mnt/dub/in/stems"]
    assert "After=ketter-workers.service" in unit.splitlines()
    assert not _values(unit, "ExecStartPre")


def test_service_settings(config) -> None:
    units = render_units(config, python="/opt/ketter/bin/python",
                         config_path="/etc/ketter/ketter.yaml")
    workers = units["ketter-workers.service"]
    for unit in (workers, units["ketter-watcher.service"]):
        assert _values(unit, "TimeoutStopSec") == ["57"]  # 42 s + 15 s
        assert _values(unit, "Type") == ["notify"]
        assert _values(unit, "WatchdogSec")
        assert _values(unit, "Restart") == ["on-failure"]
        assert _values(unit, "RestartPreventExitStatus") == ["2"]
        assert _values(unit, "KillSignal") == ["SIGTERM"]
        assert _values(unit, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
        assert _values(unit, "User") == ["ketter"]
        assert _values(unit, "UMask") == ["0027"]
        assert _values(unit, "CapabilityBoundingSet") == [""]
        assert _values(unit, "RestrictAddressFamilies") == ["AF_UNIX"]
        assert _values(unit, "PrivateNetwork") == ["yes"]
        assert not _values(unit, "LoadCredential")
    # Issue #15: RestartPreventExitStatus= looks at the main process only, so
    # an exit 2 from an ExecStartPre= (`db upgrade` on a broken config)
    # restarted the workers until the start limit. The main process migrates.
    assert not _values(workers, "ExecStartPre")
    assert _values(workers, "TimeoutStartSec") == ["300"]
    assert exec_start(workers) == ["/opt/ketter/bin/python", "-I", "-m", "ketter",
                                   "--config", "/etc/ketter/ketter.yaml", "workers"]
    target = units["ketter.target"]
    assert "WantedBy=multi-user.target" in target


def test_the_target_waits_for_and_fails_with_its_services(config) -> None:
    # Issue #15: with Wants= `systemctl start ketter.target` exited 0 while
    # both services failed. Requires= + After=: start and restart wait for
    # READY=1 of both and fail when either fails to start.
    units = render_units(config)
    target = units["ketter.target"]
    assert _values(target, "Requires") == ["ketter-workers.service ketter-watcher.service"]
    assert _values(target, "After") == ["ketter-workers.service ketter-watcher.service"]
    assert not _values(target, "Wants")
    # A target runs nothing: no start limit of its own to trip on restarts.
    assert _values(target, "StartLimitIntervalSec") == ["0"]
    for name in ("ketter-workers.service", "ketter-watcher.service"):
        unit = units[name]
        assert _values(unit, "PartOf") == ["ketter.target"]  # stop/restart reach both
        # A crash loop (RestartSec=5) hits the limit in about a minute; a few
        # manual restarts do not.
        assert _values(unit, "StartLimitIntervalSec") == ["120"]
        assert _values(unit, "StartLimitBurst") == ["10"]
        assert _values(unit, "RestartSec") == ["5"]


def test_each_unit_has_its_journal_identifier_and_priorities(config) -> None:
    # Issue #15: the journal showed every line at priority 6 as "python".
    units = render_units(config)
    for kind in ("workers", "watcher"):
        unit = units[f"ketter-{kind}.service"]
        assert _values(unit, "SyslogIdentifier") == [f"ketter-{kind}"]
        assert _values(unit, "SyslogLevelPrefix") == ["yes"]
        assert _values(unit, "SyslogLevel") == ["err"]  # a traceback, an invalid config


def test_alerts_open_ip_and_the_hmac_key_is_a_credential(write_config) -> None:
    path = write_config("""
        state_dir: /var/lib/ketter
        audit: {hmac_key_file: /etc/ketter/audit-hmac.key}
        alerts: {urls: ["json://10.1.2.3:8080/ketter"]}
        routes:
          - {name: a, source: /mnt/a/out, destination: /mnt/b/in}
        """)
    unit = render_units(load_config(path))["ketter-workers.service"]
    assert _values(unit, "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert not _values(unit, "PrivateNetwork")
    assert _values(unit, "LoadCredential") == ["audit-hmac-key:/etc/ketter/audit-hmac.key"]
    assert _values(unit, "BindReadOnlyPaths") == [
        "%d/audit-hmac-key:/etc/ketter/audit-hmac.key"]


def test_odd_paths_survive_systemd_quoting(write_config, tmp_path: Path) -> None:
    path = write_config("""
        state_dir: /srv/ketter state
        routes:
          - {name: a, source: "/mnt/a/100% out", destination: "/mnt/b/in $HOME"}
        """, name="my config.yaml")
    config = load_config(path)
    unit = render_units(config)["ketter-workers.service"]
    assert exec_start(unit)[-2:] == [str(path), "workers"]
    assert _values(unit, "WorkingDirectory") == ["/srv/ketter state"]
    assert "-'/mnt/b/in $$HOME'" in _values(unit, "ReadWritePaths")[0]
    assert _values(unit, "ReadOnlyPaths") == ["-'/mnt/a/100%% out'"]
    assert not _values(unit, "StateDirectory")  # not under /var/lib: install.sh makes it


def test_cli_prints_or_writes(tmp_path: Path) -> None:
    out = subprocess.run([*KETTER, "--config", str(EXAMPLE), "deploy", "units"],
                         env=cli_env(), capture_output=True, text=True, check=True).stdout
    assert "# ===== ketter-workers.service =====" in out
    assert "# ===== ketter.target =====" in out
    subprocess.run([*KETTER, "--config", str(EXAMPLE), "deploy", "units", "--out",
                    str(tmp_path / "units"), "--python", "/usr/bin/python3"],
                   env=cli_env(), capture_output=True, check=True)
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert names == ["ketter-watcher.service", "ketter-workers.service", "ketter.target"]
    assert "ExecStart=/usr/bin/python3 -I -m ketter" in (
        tmp_path / "units" / "ketter-workers.service").read_text()


def test_credentials_directory_key_renders_a_credential_from_the_store(write_config,
                                                                       monkeypatch) -> None:
    # Issue #14 finding 18: docs/audit.md's `${CREDENTIALS_DIRECTORY}/audit-key`
    # was joined to the config folder and rendered as a bogus LoadCredential=.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(write_config("""
        state_dir: /var/lib/ketter
        audit: {hmac_key_file: '${CREDENTIALS_DIRECTORY}/audit-key'}
        routes:
          - {name: a, source: /mnt/a, destination: /mnt/b}
        """))
    for unit in list(render_units(config).values())[:2]:
        assert _values(unit, "LoadCredential") == ["audit-key"]
        assert not _values(unit, "BindReadOnlyPaths")


@pytest.mark.parametrize("name", ["audit key", "k%n", "k$X", "k;x", "k'x", 'k"x', "k\\x",
                                  "k\tx", "..", "k/x"])
def test_credential_name_with_unit_syntax_is_refused_with_its_line(write_config, config,
                                                                  monkeypatch, name) -> None:
    # Review of #14 finding 18: `LoadCredential={name}` was written unescaped;
    # only "/", "." and ".." were refused, so a space or a % split or expanded
    # the directive. Only [A-Za-z0-9_.-]+ is a credential name.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = "state_dir: /var/lib/ketter\naudit:\n  hmac_key_file: %s\n" % (
        "'${CREDENTIALS_DIRECTORY}/" + name.replace("'", "''") + "'")
    where = r"ketter.yaml:3: audit.hmac_key_file: (.*letters, dig|contains a tab)"
    with pytest.raises(ConfigError, match=where):
        load_config(write_config(text))
    # A config built in code: the renderer refuses it too, never renders it raw.
    evil = dataclasses.replace(config, audit=dataclasses.replace(
        config.audit, hmac_key_file="${CREDENTIALS_DIRECTORY}/" + name))
    with pytest.raises(ConfigError, match=r"credential name|contains a tab"):
        render_units(evil)


def test_plain_credential_names_still_render(write_config, monkeypatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(write_config(
        "audit: {hmac_key_file: '${CREDENTIALS_DIRECTORY}/Audit_key-2.v1'}\n"))
    for unit in list(render_units(config).values())[:2]:
        assert _values(unit, "LoadCredential") == ["Audit_key-2.v1"]


@pytest.mark.parametrize("field", ["state_dir", "source", "destination", "name", "config_path",
                                   "python", "user"])
def test_renderer_refuses_control_characters(config, field: str) -> None:
    # Issue #14 finding 6: a newline wrote `ExecStartPre=` into both units. The
    # loader refuses it; the renderer refuses it too for a config built in code.
    evil = "/x\nExecStartPre=/bin/sh -c 'id > /tmp/owned'"
    options: dict[str, str] = {}
    if field == "state_dir":
        config = dataclasses.replace(config, state_dir=evil)
    elif field in ("source", "destination", "name"):
        route = dataclasses.replace(config.routes[0], **{field: evil})
        config = dataclasses.replace(config, routes=(route, *config.routes[1:]))
    else:
        options[field] = evil
    with pytest.raises(ConfigError, match="contains a newline"):
        render_units(config, **options)


# --- #17: ketter-api.service ---------------------------------------------------

API_CONFIG = """
    state_dir: /var/lib/ketter
    audit: {hmac_key_file: /etc/ketter/audit-hmac.key}
    api:
      listen: 10.0.0.5:8443
      tls_cert: /etc/ketter/tls/api.pem
      tls_key: /etc/ketter/tls/api.key
    routes:
      - {name: ingest, source: /mnt/ingest/out, destination: /mnt/dub/in}
      - {name: dub, source: /mnt/dub/out, destination: /mnt/qc/in, mode: move}
      - {name: stage, source: /mnt/dub/in/stems, destination: /mnt/qc/stems}
    """


def test_no_api_unit_without_api_listen(config) -> None:
    units = render_units(config)
    assert "ketter-api.service" not in units
    assert _values(units["ketter.target"], "Requires") == [
        "ketter-workers.service ketter-watcher.service"]


def test_api_unit_reads_every_share_and_writes_the_state_directory_only(write_config) -> None:
    units = render_units(load_config(write_config(API_CONFIG)), python="/opt/ketter/bin/python",
                         config_path="/etc/ketter/ketter.yaml")
    unit = units["ketter-api.service"]
    assert _values(unit, "ReadWritePaths") == ["-/var/lib/ketter"]
    # Sources and destinations, each tree once (stems is inside dub/in).
    assert _values(unit, "ReadOnlyPaths") == [
        "-/mnt/ingest/out -/mnt/dub/in -/mnt/dub/out -/mnt/qc/in -/mnt/qc/stems"]
    assert _values(unit, "ProtectSystem") == ["strict"]
    assert exec_start(unit) == ["/opt/ketter/bin/python", "-I", "-m", "ketter",
                                "--config", "/etc/ketter/ketter.yaml", "api"]
    for key, value in (("Type", "notify"), ("NotifyAccess", "main"),
                       ("RestartPreventExitStatus", "2"), ("Restart", "on-failure"),
                       ("SyslogIdentifier", "ketter-api"), ("User", "ketter"),
                       ("CapabilityBoundingSet", ""), ("PartOf", "ketter.target"),
                       ("After", "ketter-workers.service")):
        assert value in _values(unit, key), (key, _values(unit, key))
    assert _values(unit, "WatchdogSec")
    # It listens: IP, but only its own port may be bound.
    assert _values(unit, "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert not _values(unit, "PrivateNetwork") and not _values(unit, "IPAddressDeny")
    assert _values(unit, "SocketBindDeny") == ["any"]
    assert _values(unit, "SocketBindAllow") == ["tcp:8443"]
    # It appends audit events: the key, like the other services.
    assert _values(unit, "LoadCredential") == ["audit-hmac-key:/etc/ketter/audit-hmac.key"]
    target = units["ketter.target"]
    assert _values(target, "Requires") == [
        "ketter-workers.service ketter-watcher.service ketter-api.service"]
    assert _values(target, "After") == _values(target, "Requires")


def test_api_unit_binds_the_metrics_port_too(write_config) -> None:
    text = API_CONFIG.replace("listen: 10.0.0.5:8443",
                              "listen: 10.0.0.5:8443\n      metrics_listen: '[::]:9464'")
    unit = render_units(load_config(write_config(text)))["ketter-api.service"]
    assert _values(unit, "SocketBindAllow") == ["tcp:8443", "tcp:9464"]
    assert "on 10.0.0.5:8443, [::]:9464" in _values(unit, "Description")[0]
