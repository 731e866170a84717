"""Config loading: defaults, units, path resolution and every validation error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ketter.config import check_roots, credentials, load_config, parse_config, redacted
from ketter.config.units import FreeSpace, parse_duration, parse_free_space, parse_size
from ketter.errors import ConfigError

GOOD = """
state_dir: state
routes:
  - name: ingest-to-dub
    source: /mnt/ingest/outbox
    destination: /mnt/dub/inbox
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),  # a bare number is seconds
        ("0.5s", 0.5),  # fractions allowed
        ("5s", 5.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 parsecs", "-3s", "", "1h30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        ("100MB", 100 * 10**6),  # SI
        ("1GiB", 2**30),  # binary
        ("256MiB", 256 * 2**20),
        ("1.5KiB", 1536),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_free_space() -> None:
    assert parse_free_space("5%") == FreeSpace(percent=5.0)
    assert parse_free_space("10GiB") == FreeSpace(bytes=10 * 2**30)
    assert FreeSpace(percent=5.0).required(1000) == 50
    with pytest.raises(ValueError):
        parse_free_space("150%")


def test_defaults_and_resolution(write_config) -> None:
    path = write_config(GOOD)
    config = load_config(path)
    folder = str(path.parent)
    assert config.state_dir == os.path.join(folder, "state")
    assert config.audit.log_file == os.path.join(folder, "state", "logs", "audit.jsonl")
    assert config.db_path == os.path.join(folder, "state", "ketter.db")
    assert config.node  # defaults to the host name
    route = config.route("ingest-to-dub")
    assert (route.mode, route.conflict, route.verify, route.watch) == (
        "copy", "fail", "sha256", "auto")
    assert route.stable_seconds == 10.0 and route.package_min_files == 0
    assert config.retry.max_delay == 900.0 and config.lease.ttl == 30.0
    assert config.resume_min_bytes == 256 * 2**20
    with pytest.raises(KeyError, match="ingest-to-dub"):
        config.route("nope")


def test_relative_route_paths_resolve_against_config_folder(write_config) -> None:
    path = write_config("routes:\n  - {name: r, source: in, destination: out}\n")
    route = load_config(path).routes[0]
    assert route.source == str(path.parent / "in")
    assert route.destination == str(path.parent / "out")


def test_shared_destination_is_allowed(write_config) -> None:
    config = load_config(write_config("""
        routes:
          - {name: a, source: /a, destination: /shared}
          - {name: b, source: /b, destination: /shared}
        """))
    assert [r.name for r in config.routes] == ["a", "b"]


def test_secrets_are_redacted(write_config) -> None:
    config = load_config(write_config("""
        alerts:
          urls: ["slack://T000/B000/XXXXSECRET", "mailtos://user:pass@example.com"]
        """))
    shown = str(redacted(config))
    assert "SECRET" not in shown and "pass@" not in shown
    assert "slack://***" in shown
    assert redacted(config)["health"]["min_free"] == "5%"


# Each broken config: (YAML, the line the error must name, a fragment of the
# message). Every message must be distinct and say file:line.
BROKEN = [
    ("state_dirr: x\n", 1, "unknown key; did you mean 'state_dir'?"),
    ("workers: many\n", 1, "workers: expected a whole number, got 'many'"),
    ("workers: 0\n", 1, "workers: must be at least 1"),
    ("retry:\n  base_delay: soon\n", 2, "retry.base_delay: expected a duration"),
    ("retry:\n  max_attempts: -2\n", 2, "retry.max_attempts: must not be negative"),
    ("resume_min_bytes: lots\n", 1, "resume_min_bytes: expected a size"),
    ("routes:\n  - name: a\n    source: /a\n", 2, "routes[0].destination: required key is missing"),
    ("routes:\n  - {name: a, source: /a, destination: /b, mode: moov}\n", 2,
     "invalid value 'moov': choose one of copy, move; did you mean 'move'?"),
    ("routes:\n  - {name: a, source: /a, destination: /b, conflict: clobber}\n", 2,
     "routes[0].conflict: invalid value 'clobber'"),
    ("routes:\n  - {name: a, source: /a, destination: /b}\n"
     "  - {name: a, source: /c, destination: /d}\n", 3, "duplicate route name 'a'"),
    ("routes:\n  - {name: a, source: /a, destination: /a/out}\n", 2,
     "destination /a/out is inside source /a"),
    ("routes:\n  - {name: a, source: /x/in, destination: /x}\n", 2,
     "source /x/in is inside destination /x"),
    ("routes:\n  - {name: a, source: /a, destination: /b, mode: move}\n"
     "  - {name: b, source: /a/sub, destination: /c}\n", 2,
     "move route source /a overlaps the source of route 'b'"),
    ("routes:\n  - {name: a, source: /a, destination: /b, stable_seconds: -1}\n", 2,
     "a duration cannot be negative"),
    ("routes:\n  - {name: a, source: /a, destination: /b, package_min_files: -5}\n", 2,
     "routes[0].package_min_files: must not be negative"),
    ("routes:\n  - {name: a, source: /a, destination: /b, include: '**/*'}\n", 2,
     "routes[0].include: expected a list of text values"),
    ("routes: {name: a}\n", 1, "routes: expected a list of routes"),
    ("hashes:\n  md5: sometimes\n", 2, "hashes.md5: expected true or false"),
    ("workers: 2\nworkers: 3\n", 2, "duplicate key (first on line 1)"),
    ("workers: 2\n\tnode: x\n", 2, "YAML syntax error"),
    ("lease:\n  ttl: 5s\n  heartbeat: 10s\n", 3, "lease.heartbeat (10s) must be shorter"),
    ("retry:\n  max_attempts: 0\n", 2, "retry.max_attempts: must be at least 1"),
    ("health:\n  min_free: 120%\n", 2, "health.min_free: a percentage must be between"),
    ("routes:\n  - {name: a, source: /a, destination: /b, routez: 1}\n", 2,
     "routes[0].routez: unknown key"),
    ("audit:\n  rotate_when: weekly\n", 2, "audit.rotate_when: invalid value 'weekly'"),
    ("routes:\n  - {name: a, source: /a, destination: /b, poll_interval: 0}\n", 2,
     "routes[0].poll_interval: must be longer than zero"),
    ("routes:\n  - {name: a, source: /a, destination: /b, include: ['*.mov'],\n"
     "     exclude: ['*.mov']}\n", 2, "are in both include and exclude"),
    ("routes:\n  - {name: a, source: /a, destination: /b, include: []}\n", 2,
     "include is empty"),
    # api: (#17)
    ("api:\n  listen: 10.1.2.3:8443\n", 2,
     "api.listen: 10.1.2.3:8443 is not a loopback address and no tls_cert/tls_key"),
    ("api:\n  listen: '[::1]:8443'\n  metrics_listen: '[2001:db8::5]:9100'\n", 3,
     "api.metrics_listen: [2001:db8::5]:9100 is not a loopback address"),
    ("api:\n  listen: ::1:8443\n", 2, "api.listen: an IPv6 address goes in brackets"),
    ("api:\n  listen: localhost:8443\n", 2, "'localhost' is not an IP address"),
    ("api:\n  listen: 127.0.0.1\n", 2, "(no port)"),
    ("api:\n  listen: 127.0.0.1:0\n", 2, "the port must be a number from 1 to 65535"),
    ("api:\n  listen: '[127.0.0.1]:80'\n", 2, "only an IPv6 address goes in brackets"),
    ("api:\n  listen: 127.0.0.1:8443\n  tls_key: /etc/ketter/api.key\n", 3,
     "api.tls_key: tls_key is set but tls_cert is not"),
    ("api:\n  listen: 127.0.0.1:8443\n  client_ca: /etc/ketter/ca.pem\n", 3,
     "api.client_ca: client_ca (client certificates, mTLS) needs tls_cert"),
    ("api:\n  cors: '*'\n", 2, "api.cors: invalid value '*': cross-origin access is not"),
    ("api:\n  max_body: 0\n", 2, "api.max_body: must be at least 1 byte"),
    ("api:\n  max_body: huge\n", 2, "api.max_body: expected a size"),
    ("api:\n  allow_plaintext: yes please\n", 2, "api.allow_plaintext: expected true or false"),
    ("api:\n  listen: 127.0.0.1:8443\n  metrics_listen: 127.0.0.1:8443\n", 3,
     "/metrics without a token needs an address of its own"),
    ("api:\n  listn: 127.0.0.1:8443\n", 2, "api.listn: unknown key; did you mean 'listen'?"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BROKEN)
def test_broken_configs_name_file_line_and_reason(write_config, text: str, line: int,
                                                  fragment: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert fragment in message
    assert f"{path}:{line}: " in message


def test_broken_config_messages_are_distinct(write_config) -> None:
    messages = set()
    for index, (text, _, _) in enumerate(BROKEN):
        with pytest.raises(ConfigError) as info:
            load_config(write_config(text, name=f"c{index}.yaml"))
        messages.add(str(info.value).split(": ", 1)[1])
    assert len(messages) == len(BROKEN)


def test_all_problems_reported_at_once(write_config) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config("workers: x\nnode: [1]\nroutes:\n  - {name: a}\n"))
    assert len(info.value.problems) == 4  # workers, node, source, destination


def test_missing_and_empty_files(tmp_path: Path, write_config) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=":1: the config file is empty"):
        load_config(write_config("# only a comment\n"))


def test_parse_config_without_file() -> None:
    config = parse_config(GOOD, base_dir="/srv")
    assert config.state_dir == "/srv/state"


# --- issue #14: findings 3, 6, 11, 18, 19 -------------------------------------


@pytest.mark.parametrize(("text", "line", "key", "tag"), [
    ("workers: !foo 3\n", 1, "workers", "!foo"),
    ("node: !!python/name:os.system x\n", 1, "node", "!!python/name:os.system"),
    ("routes:\n  - {name: a, source: /a, destination: !!python/object:x {}}\n", 2,
     "routes[0].destination", "!!python/object:x"),
    ("routes:\n  - {name: a, source: /a, destination: /b, include: [!bad '*.mov']}\n", 2,
     "routes[0].include[0]", "!bad"),
    ("audit: !secret\n  rotate_backups: 3\n", 1, "audit", "!secret"),
])
def test_unsupported_tags_are_config_errors(write_config, text: str, line: int, key: str,
                                            tag: str) -> None:
    # Finding 11: a tag used to escape as a ConstructorError traceback (exit 1).
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:{line}: {key}: unsupported tag {tag}" in str(info.value)


@pytest.mark.parametrize(("text", "line", "number"), [
    ("retry:\n  base_delay: 1:30\n", 2, 90),
    ("routes:\n  - {name: a, source: /a, destination: /b, stable_seconds: 2:30}\n", 2, 150),
    ("lease: {ttl: 1:00:00}\n", 1, 3600),
    ("workers: 1:2\n", 1, 62),
])
def test_sexagesimal_numbers_are_refused(write_config, text: str, line: int,
                                          number: int) -> None:
    # `1:30` is YAML 1.1's base-60 90: it was silently taken as 90 seconds.
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:{line}: " in str(info.value)
    assert f"is read by YAML as the base-60 number {number}" in str(info.value)


def test_a_quoted_clock_time_is_still_not_a_duration(write_config) -> None:
    with pytest.raises(ConfigError, match="expected a duration"):
        load_config(write_config("retry:\n  base_delay: '1:30'\n"))


def test_indentation_errors_name_the_line_and_hint(write_config) -> None:
    path = write_config("routes:\n  - name: a\n   source: /a\n    destination: /b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:3: YAML syntax error in 'source: /a'" in message
    assert "check the indentation of this line" in message
    tab = write_config("workers: 2\n\tnode: x\n", name="tab.yaml")
    with pytest.raises(ConfigError, match=r"tab.yaml:2: .*YAML indents with spaces only"):
        load_config(tab)


@pytest.mark.parametrize(("text", "line", "key"), [
    ('state_dir: "/srv/k\\nExecStartPre=/bin/sh -c id"\n', 1, "state_dir"),
    ('routes:\n  - {name: a, source: "/a\\nExecStartPre=/bin/true", destination: /b}\n', 2,
     "routes[0].source"),
    ('routes:\n  - {name: a, source: /a, destination: "/b\\r"}\n', 2, "routes[0].destination"),
    ('routes:\n  - {name: a, source: /a, destination: /b, source_mount: "/\\x7f"}\n', 2,
     "routes[0].source_mount"),
    ('node: "n\\x00"\n', 1, "node"),
    ('audit: {log_file: "a\\tb.jsonl"}\n', 1, "audit.log_file"),
    ('audit: {hmac_key_file: "/k\\ney"}\n', 1, "audit.hmac_key_file"),
    ('routes:\n  - {name: a, source: /a, destination: /b, exclude: ["x\\ny"]}\n', 2,
     "routes[0].exclude"),
    ('routes:\n  - {name: a, source: /a, destination: /b, ready_marker: ".do\\u0085ne"}\n', 2,
     "routes[0].ready_marker"),
])
def test_control_characters_are_refused_in_paths_and_names(write_config, text: str, line: int,
                                                           key: str) -> None:
    # Finding 6: a newline in a path became a directive in the rendered units.
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:{line}: {key}: contains " in str(info.value)
    assert "control characters" in str(info.value)


@pytest.mark.parametrize("name", ["a\nb", "a;b", "$(id)", "x`y`", "a/b", " a", "tab\there"])
def test_route_name_error_names_every_rule(write_config, name: str) -> None:
    path = write_config(
        f"routes:\n  - {{name: {json.dumps(name)}, source: /a, destination: /b}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:2: routes[0].name: a route name must be" in message
    for rule in ("'/'", "surrounding spaces", "control characters", "shell characters"):
        assert rule in message


def test_route_names_with_dashes_dots_and_spaces_inside_are_fine(write_config) -> None:
    config = load_config(write_config(
        "routes:\n  - {name: 'ingest to-dub_2.x', source: /a, destination: /b}\n"))
    assert config.routes[0].name == "ingest to-dub_2.x"


@pytest.mark.parametrize(("text", "line", "fragment"), [
    # The job store inside a move route's source: Ketter moved its own ketter.db.
    ("state_dir: /data/in/state\nroutes:\n  - {name: a, source: /data/in, destination: /out,"
     " mode: move}\n", 1, "state_dir: /data/in/state is inside the source of route 'a'"),
    ("state_dir: /out\nroutes:\n  - {name: a, source: /in, destination: /out}\n", 1,
     "state_dir: /out is the destination of route 'a'"),
    ("state_dir: /srv\nroutes:\n  - {name: a, source: /srv/in, destination: /out}\n", 1,
     "state_dir: /srv contains the source of route 'a'"),
    ("state_dir: /var/lib/k\naudit: {log_file: /out/audit.jsonl}\nroutes:\n"
     "  - {name: a, source: /in, destination: /out}\n", 2,
     "audit.log_file: /out/audit.jsonl is inside the destination of route 'a'"),
    # state_dir left at its default: the line of the route's folder.
    ("routes:\n  - name: a\n    source: /in\n    destination: /var/lib/ketter/out\n", 4,
     "state_dir: /var/lib/ketter contains the destination of route 'a'"),
])
def test_state_dir_and_audit_log_outside_every_route(write_config, text: str, line: int,
                                                     fragment: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:{line}: {fragment}" in str(info.value)


def test_state_dir_reached_through_a_symlink_is_refused(tmp_path: Path, write_config) -> None:
    (tmp_path / "in" / "state").mkdir(parents=True)
    (tmp_path / "state").symlink_to(tmp_path / "in" / "state")
    path = write_config("state_dir: state\nroutes:\n"
                        "  - {name: a, source: in, destination: out, mode: move}\n")
    with pytest.raises(ConfigError, match=r":1: state_dir: .* is inside the source of route 'a'"):
        load_config(path)


def test_hmac_key_file_expands_the_credentials_directory(write_config, monkeypatch) -> None:
    text = "audit: {hmac_key_file: '${CREDENTIALS_DIRECTORY}/audit-key'}\n"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/ketter-workers.service")
    config = load_config(write_config(text))
    assert config.audit.hmac_key_file == "/run/credentials/ketter-workers.service/audit-key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    config = load_config(write_config(text))
    assert config.audit.hmac_key_file == "${CREDENTIALS_DIRECTORY}/audit-key"
    assert credentials.credential_name(config.audit.hmac_key_file) == "audit-key"
    unset = r"ketter.yaml:1: audit.hmac_key_file: .*CREDENTIALS_DIRECTORY is not set"
    with pytest.raises(ConfigError, match=unset):
        credentials.read_hmac_key(config.audit.hmac_key_file, config_path=config.path,
                                  line=config.line_of("audit.hmac_key_file"))


def test_hmac_key_file_other_variables_are_refused(write_config) -> None:
    path = write_config("audit:\n  hmac_key_file: $HOME/key\n")
    only = r":2: audit.hmac_key_file: only \$\{CREDENTIALS_DIRECTORY\}/NAME"
    with pytest.raises(ConfigError, match=only):
        load_config(path)


def test_hmac_key_read_errors_are_config_errors(tmp_path: Path, write_config) -> None:
    config = load_config(write_config("state_dir: st\naudit: {hmac_key_file: audit.key}\n"))
    key = tmp_path / "audit.key"

    def read() -> bytes | None:
        return credentials.read_hmac_key(config.audit.hmac_key_file, config_path=config.path,
                                         line=config.line_of("audit.hmac_key_file"))

    missing = rf"ketter.yaml:2: audit.hmac_key_file: the key file {key} does not exist"
    with pytest.raises(ConfigError, match=missing):
        read()
    key.write_bytes(b"\n")
    with pytest.raises(ConfigError, match="is empty"):
        read()
    key.write_bytes(b"c2VjcmV0\n")
    assert read() == b"c2VjcmV0"
    errors, warnings = credentials.check_hmac_key(
        config.audit.hmac_key_file, config_path=config.path, line=2)
    assert (errors, warnings) == ([], [])


def test_route_lines_are_kept_for_later_checks(tmp_path: Path, write_config) -> None:
    # `config check` names the line of a missing root like every other error.
    (tmp_path / "out").mkdir()
    path = write_config("state_dir: st\nroutes:\n  - name: beta\n    source: nothere\n"
                        "    destination: out\n")
    config = load_config(path)
    errors, _ = check_roots(config)
    assert errors == [f"{path}:4: route 'beta': source {tmp_path / 'nothere'} does not exist "
                      "or is not a folder; create it, mount the share, or correct the path"]
    assert "lines" not in redacted(config) and "lines" not in redacted(config)["routes"][0]


def test_root_only_key_checked_as_another_user_is_a_warning(tmp_path: Path,
                                                             write_config) -> None:
    # The runbook checks as the service account; the units hand systemd's copy
    # of a root-only key over, so `config check` warns and says so.
    if os.geteuid() != 0:
        pytest.skip("needs root to check the key file as another user")
    config = load_config(write_config("audit: {hmac_key_file: audit.key}\n"))
    (tmp_path / "audit.key").write_text("c2VjcmV0\n")
    os.chmod(tmp_path / "audit.key", 0o600)
    os.chmod(tmp_path, 0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody; everything it needs is imported
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = credentials.check_hmac_key(config.audit.hmac_key_file,
                                                config_path=config.path, line=1)
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        errors, warnings = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert errors == []
    assert len(warnings) == 1 and "user 'nobody' may not read the key file" in warnings[0]


# --- issue #17: the api: section ----------------------------------------------


def test_no_api_section_is_fine_and_has_no_listen_address(write_config) -> None:
    config = load_config(write_config(GOOD))
    assert config.api.listen is None and config.api.metrics_listen is None
    assert config.api.max_body == 2**20 and config.api.cors == "none"
    assert not config.api.allow_plaintext


def test_api_section_is_parsed_and_normalised(write_config, tmp_path: Path) -> None:
    config = load_config(write_config("""
        api:
          listen: '[::1]:8443'
          tls_cert: tls/api.pem
          tls_key: /etc/ketter/api.key
          client_ca: tls/clients-ca.pem
          max_body: 2MiB
          cors: none
          metrics_listen: 0.0.0.0:9464
        """))
    api = config.api
    assert api.listen == "[::1]:8443" and api.metrics_listen == "0.0.0.0:9464"
    # A relative file resolves against the config's folder, like every path.
    assert api.tls_cert == str(tmp_path / "tls" / "api.pem")
    assert api.tls_key == "/etc/ketter/api.key"
    assert api.client_ca == str(tmp_path / "tls" / "clients-ca.pem")
    assert api.max_body == 2 * 2**20
    assert config.line_of("api.metrics_listen") == 8
    assert redacted(config)["api"]["listen"] == "[::1]:8443"


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "10.0.0.5:8080", "'[::]:8080'"])
def test_plaintext_on_the_network_only_when_asked(write_config, listen: str) -> None:
    config = load_config(write_config(f"api:\n  listen: {listen}\n  allow_plaintext: true\n"))
    assert config.api.allow_plaintext


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.8.9.10:8080", "'[::1]:8080'"])
def test_loopback_needs_no_tls(write_config, listen: str) -> None:
    assert load_config(write_config(f"api:\n  listen: {listen}\n")).api.tls_cert is None


def test_config_check_reports_missing_certificate_files(write_config, tmp_path: Path) -> None:
    from ketter.config.api import api_file_problems

    (tmp_path / "api.pem").write_text("cert")
    config = load_config(write_config("""
        api:
          listen: 127.0.0.1:8443
          tls_cert: api.pem
          tls_key: api.key
        """))
    problems = api_file_problems(config)
    assert problems == [
        f"{config.path}:4: api.tls_key: {tmp_path / 'api.key'} does not exist or is not a file"
    ]
