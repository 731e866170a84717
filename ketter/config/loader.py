"""Load and validate the YAML config, reporting every problem with its line.

The YAML is *composed* (not constructed) so every value keeps its position;
the schema dataclasses drive the walk. All problems are collected and raised
together as one :class:`~ketter.errors.ConfigError`, each line reading
``FILE:LINE: KEY: reason (hint)`` so an operator can fix the file in one go.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
from pathlib import Path
from typing import Any

import yaml

from ketter.choices import Mode
from ketter.config import api, credentials, units
from ketter.config import store as config_store
from ketter.config import text as config_text
from ketter.config.schema import Config, RouteConfig
from ketter.errors import ConfigError
from ketter.mounts import mount_problem

DEFAULT_CONFIG_PATH = "/etc/ketter/ketter.yaml"


def find_config_path(cli_path: str | None) -> str:
    """``--config PATH``, else ``$KETTER_CONFIG``, else /etc/ketter/ketter.yaml."""
    return cli_path or os.environ.get("KETTER_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the config file at ``path``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (pass --config PATH or set KETTER_CONFIG)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the config file is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    return parse_config(text, path=path)


def parse_config(text: str, *, path: str = "<config>", base_dir: str | None = None) -> Config:
    """Parse YAML ``text``; relative paths resolve against ``base_dir`` (default:
    the folder of ``path``)."""
    if base_dir is None:
        base_dir = str(Path(path).resolve().parent) if path != "<config>" else os.getcwd()
    walker = _Walker(path, base_dir)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_syntax_error(exc, text, path)) from None
    if root is None:
        raise ConfigError(
            f"{path}:1: the config file is empty (see configs/ketter.example.yaml for every key)"
        )
    walker.find_tags(root, "")
    config = walker.section(Config, root, "")
    if walker.problems:
        raise ConfigError(walker.problems)
    assert isinstance(config, Config)
    config = dataclasses.replace(
        config,
        path=path,
        node=config.node or socket.gethostname(),
        lines=tuple(
            (key, line) for key, line in walker.key_lines.items() if not key.startswith("routes[")
        ),
    )
    config = _resolve_state_paths(config)
    problems = _check_routes(config, walker.route_lines, walker.key_lines, path)
    problems += api.check_api(config, walker.key_lines, path)
    problems += config_store.check_store(config, walker.key_lines, path)
    if problems:
        raise ConfigError(problems)
    return config


class _Walker:
    """Walks composed YAML nodes along the schema, collecting problems."""

    def __init__(self, path: str, base_dir: str) -> None:
        self.path = path
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.route_lines: list[int] = []
        #: line of every key seen, by dotted name (for cross-key checks)
        self.key_lines: dict[str, int] = {}
        #: nodes with a tag the loader does not construct (reported once by find_tags)
        self.bad_tags: set[int] = set()

    def find_tags(self, node: yaml.Node, key: str) -> None:
        """Report every explicit tag the safe loader cannot construct
        (``!foo``, ``!!python/name:os.system``): constructing one raises a
        ConstructorError that used to escape as a traceback with exit 1, so
        systemd's RestartPreventExitStatus=2 did not stop the restart loop."""
        if node.tag not in yaml.SafeLoader.yaml_constructors:
            self.bad_tags.add(id(node))
            self.problem(
                node,
                key,
                f"unsupported tag {_show_tag(node.tag)} (the config takes plain YAML "
                "values: remove the tag)",
            )
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                dotted = f"{key}.{name}" if key else str(name)
                self.find_tags(key_node, dotted)
                self.find_tags(value_node, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.find_tags(item, f"{key}[{index}]")

    def problem(self, node: yaml.Node, key: str, reason: str) -> None:
        line = node.start_mark.line + 1
        where = f"{key}: " if key else ""
        self.problems.append(f"{self.path}:{line}: {where}{reason}")

    def section(self, cls: type, node: yaml.Node, prefix: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, prefix, f"expected a mapping of keys, got {_describe(node)}")
            return cls()
        fields = {
            f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"
        }
        values: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if id(key_node) in self.bad_tags:
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            dotted = f"{prefix}.{key}" if prefix else key
            if key in seen:
                self.problem(
                    key_node,
                    dotted,
                    f"duplicate key (first on line {seen[key].start_mark.line + 1})",
                )
                continue
            seen[key] = key_node
            self.key_lines[dotted] = key_node.start_mark.line + 1
            if key not in fields:
                hint = difflib.get_close_matches(key, list(fields), n=1)
                tip = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; known keys: {', '.join(sorted(fields))}"
                )
                self.problem(key_node, dotted, f"unknown key{tip}")
                continue
            parsed = self.value(fields[key], value_node, dotted)
            if parsed is not _INVALID:
                values[key] = parsed
        for name, f in fields.items():
            if f.metadata.get("required") and name not in seen:
                dotted = f"{prefix}.{name}" if prefix else name
                self.problem(node, dotted, "required key is missing")
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - schema bug, not user input
            self.problem(node, prefix, str(exc))
            return cls()

    def value(self, f: dataclasses.Field[Any], node: yaml.Node, key: str) -> Any:
        if id(node) in self.bad_tags:
            return _INVALID
        kind = f.metadata["kind"]
        if kind == "section":
            return self.section(f.default_factory, node, key)  # type: ignore[arg-type]
        if kind == "routes":
            return self.routes(node, key)
        if kind == "str_list":
            return self.str_list(node, key)
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, key, f"expected a single value, got {_describe(node)}")
            return _INVALID
        if node.style is None and ":" in node.value and node.tag in (_INT_TAG, _FLOAT_TAG):
            # YAML 1.1 reads 1:30 as the base-60 number 90: a delay written
            # as a clock time would silently mean something else.
            number = yaml.constructor.SafeConstructor().construct_object(node)
            self.problem(
                node,
                key,
                f"{node.value!r} is read by YAML as the base-60 number {number}; write "
                f"one number with its unit (e.g. {number}s for a duration), or quote it "
                "if you mean text",
            )
            return _INVALID
        raw = yaml.constructor.SafeConstructor().construct_object(node)
        if raw is None:
            if f.default is None:
                return None
            self.problem(node, key, "a value is required here (it may not be empty/null)")
            return _INVALID
        try:
            return self.convert(kind, raw, f)
        except ValueError as exc:
            self.problem(node, key, str(exc))
            return _INVALID

    def convert(self, kind: str, raw: Any, f: dataclasses.Field[Any]) -> Any:
        if kind in ("int", "positive_int", "signed_int"):
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"expected a whole number, got {raw!r}")
            if kind == "int" and raw < 0:
                raise ValueError(f"must not be negative, got {raw}")
            if kind == "positive_int" and raw < 1:
                raise ValueError(f"must be at least 1, got {raw}")
            return raw
        if kind == "bool":
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {raw!r}")
            return raw
        if kind in ("duration", "positive_duration"):
            seconds = units.parse_duration(raw)
            if kind == "positive_duration" and seconds <= 0:
                raise ValueError(f"must be longer than zero, got {raw!r}")
            return seconds
        if kind == "size":
            return units.parse_size(raw)
        if kind == "free_space":
            return units.parse_free_space(raw)
        if kind == "address":
            return api.parse_address(raw)
        if kind == "cors":
            return api.parse_cors(raw)
        if kind == "dsn":
            return config_store.parse_dsn(raw)
        if kind == "enum":
            choices = f.metadata["choices"]
            if raw not in choices:
                hint = difflib.get_close_matches(str(raw), choices, n=1)
                tip = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ValueError(f"invalid value {raw!r}: choose one of {', '.join(choices)}{tip}")
            return raw
        if kind in ("str", "name"):
            if not isinstance(raw, str):
                raise ValueError(f"expected text, got {raw!r}")
            if kind == "name":
                problem = config_text.name_problem(raw)
                if problem is not None:
                    raise ValueError(problem)
            _refuse_control(raw)
            return raw
        if kind in ("path", "state_path", "key_path"):
            if not isinstance(raw, str) or not raw:
                raise ValueError(f"expected a path, got {raw!r}")
            _refuse_control(raw)
            if kind == "key_path":
                return credentials.resolve(raw, self.base_dir)
            if kind == "path":
                return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(raw)))
            return raw  # resolved against state_dir once state_dir is known
        raise AssertionError(f"unknown config kind {kind}")  # pragma: no cover

    def str_list(self, node: yaml.Node, key: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, key, f"expected a list of text values, got {_describe(node)}")
            return _INVALID
        items = []
        for item in node.value:
            if id(item) in self.bad_tags:
                continue
            if not isinstance(item, yaml.ScalarNode) or item.tag != "tag:yaml.org,2002:str":
                self.problem(item, key, f"expected text in this list, got {_describe(item)}")
                continue
            bad = config_text.control_char(item.value)
            if bad is not None:
                self.problem(item, key, _control_message(bad))
                continue
            items.append(item.value)
        return tuple(items)

    def routes(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, key, f"expected a list of routes, got {_describe(node)}")
            return _INVALID
        routes = []
        for index, item in enumerate(node.value):
            route = self.section(RouteConfig, item, f"routes[{index}]")
            prefix = f"routes[{index}]."
            lines = [("", item.start_mark.line + 1)] + [
                (k.removeprefix(prefix), v)
                for k, v in self.key_lines.items()
                if k.startswith(prefix)
            ]
            routes.append(dataclasses.replace(route, lines=tuple(lines)))
            self.route_lines.append(item.start_mark.line + 1)
        return tuple(routes)


_INVALID = object()
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


def _show_tag(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag.removeprefix(prefix) if tag.startswith(prefix) else tag


def _control_message(where: str) -> str:
    return (
        f"contains {where}; paths, names and patterns may not contain newlines, "
        "tabs or other control characters (they would end up in the systemd units "
        "and the logs as new lines)"
    )


def _refuse_control(value: str) -> None:
    bad = config_text.control_char(value)
    if bad is not None:
        raise ValueError(_control_message(bad))


_SYNTAX_HINT = (
    "check the indentation of this line and the ones above it: keys of one "
    "mapping start in the same column, a nested key is indented further than its "
    "parent, list items start with '- ', and YAML indents with spaces only"
)


def _syntax_error(exc: yaml.YAMLError, text: str, path: str) -> str:
    """FILE:LINE, the parser's words, the line itself and a hint: the raw
    parser message ("expected <block end>, but found '<block mapping
    start>'") does not tell a new user that the indentation is off."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or str(exc)
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    hint = _SYNTAX_HINT
    if "\t" in shown or "'\\t'" in problem:
        hint = "this line holds a tab: YAML indents with spaces only"
    quoted = f" in {shown.strip()!r}" if shown.strip() else ""
    return f"{path}:{line}: YAML syntax error{quoted}: {problem} ({hint})"


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _resolve_state_paths(config: Config) -> Config:
    """Files Ketter writes (audit log) resolve against ``state_dir``."""
    audit = config.audit
    log_file = os.path.normpath(os.path.join(config.state_dir, audit.log_file))
    return dataclasses.replace(config, audit=dataclasses.replace(audit, log_file=log_file))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _check_routes(
    config: Config, lines: list[int], key_lines: dict[str, int], path: str
) -> list[str]:
    """Cross-route rules that no single key can check."""
    problems: list[str] = []
    names: dict[str, int] = {}
    for route, line in zip(config.routes, lines, strict=False):
        where = f"{path}:{line}: routes[{route.name}]"
        if route.name in names:
            problems.append(
                f"{where}: duplicate route name {route.name!r} (first on line "
                f"{names[route.name]}); route names must be unique"
            )
        names.setdefault(route.name, line)
        if _inside(route.destination, route.source):
            problems.append(
                f"{where}: destination {route.destination} is inside source "
                f"{route.source}; Ketter would pick up its own deliveries"
            )
        elif _inside(route.source, route.destination):
            problems.append(
                f"{where}: source {route.source} is inside destination "
                f"{route.destination}; choose folders that do not contain "
                "each other"
            )
        if route.source_mount and not _inside(route.source, route.source_mount):
            problems.append(
                f"{where}: source {route.source} is not under its source_mount {route.source_mount}"
            )
        if route.destination_mount and not _inside(route.destination, route.destination_mount):
            problems.append(
                f"{where}: destination {route.destination} is not under its "
                f"destination_mount {route.destination_mount}"
            )
        both = sorted(set(route.include) & set(route.exclude))
        if both:
            problems.append(
                f"{where}: pattern(s) {', '.join(both)} are in both include and "
                "exclude; keep each pattern in one list"
            )
        if not route.include:
            problems.append(
                f"{where}: include is empty, so nothing would ever be picked up; "
                "use ['**/*'] for everything"
            )
        if route.ready_marker is not None and (not route.ready_marker or "/" in route.ready_marker):
            problems.append(
                f"{where}: ready_marker must be a file suffix such as '.done', "
                f"got {route.ready_marker!r}"
            )
    for route, line in zip(config.routes, lines, strict=False):
        if route.mode != Mode.MOVE:
            continue
        for other in config.routes:
            if other is route:
                continue
            if _inside(route.source, other.source) or _inside(other.source, route.source):
                problems.append(
                    f"{path}:{line}: routes[{route.name}]: move route source {route.source} "
                    f"overlaps the source of route {other.name!r} ({other.source}); the move "
                    "would delete files the other route has not copied yet"
                )
    problems += _check_state_paths(config, lines, key_lines, path)
    if config.retry.max_attempts < 1:
        line = key_lines.get("retry.max_attempts", 1)
        problems.append(f"{path}:{line}: retry.max_attempts: must be at least 1")
    if config.lease.heartbeat >= config.lease.ttl:
        line = key_lines.get("lease.heartbeat", key_lines.get("lease.ttl", 1))
        problems.append(
            f"{path}:{line}: lease.heartbeat ({config.lease.heartbeat:g}s) must be "
            f"shorter than lease.ttl ({config.lease.ttl:g}s)"
        )
    return problems


def _overlap(a: str, b: str) -> str | None:
    """How ``a`` and ``b`` overlap ("is", "is inside", "contains"), by their
    written and their resolved paths (a symlinked state_dir counts), else None."""
    for x, y in ((a, b), (os.path.realpath(a), os.path.realpath(b))):
        if x == y:
            return "is"
        if _inside(x, y):
            return "is inside"
        if _inside(y, x):
            return "contains"
    return None


def _check_state_paths(
    config: Config, lines: list[int], key_lines: dict[str, int], path: str
) -> list[str]:
    """Ketter's own files may not share a folder tree with a route: a move
    route over the state dir once moved ``ketter.db`` to the destination and
    left its WAL behind; a destination over it lets a delivery replace the
    job store or the audit log."""
    problems: list[str] = []
    owned = (
        ("state_dir", config.state_dir, key_lines.get("state_dir")),
        ("audit.log_file", config.audit.log_file, key_lines.get("audit.log_file")),
    )
    for route, route_line in zip(config.routes, lines, strict=False):
        for label, own, own_line in owned:
            for side in ("source", "destination"):
                root = getattr(route, side)
                how = _overlap(own, root)
                if how is None:
                    continue
                line = own_line or route.line_of(side) or route_line
                problems.append(
                    f"{path}:{line}: {label}: {own} {how} the {side} of route "
                    f"{route.name!r} ({root}); Ketter would transfer, overwrite or "
                    "delete its own job store and audit log: keep state_dir and "
                    "the audit log outside every route folder (a node that already "
                    "ran there: stop the services and move ketter.db*, queue.db*, "
                    "ketter.node, audit.highwater and logs/ to the new state_dir "
                    "together, or it starts over with an empty store and a new "
                    "audit chain; docs/operations.md, Upgrade)"
                )
    return problems


def check_roots(config: Config) -> tuple[list[str], list[str]]:
    """Errors and warnings about the route roots on this machine, for
    ``ketter config check``. Long-running commands do not call this: for them
    a missing root is an unavailable route, paused until it appears."""
    errors: list[str] = []
    warnings: list[str] = []
    for route in config.routes:
        for label, root, mount in (
            ("source", route.source, route.source_mount),
            ("destination", route.destination, route.destination_mount),
        ):
            if not os.path.isdir(root):
                line = route.line_of(label)
                where = f"{config.path}:{line}: " if line else ""
                errors.append(
                    f"{where}route {route.name!r}: {label} {root} does not exist or is "
                    "not a folder; create it, mount the share, or correct the path"
                )
                continue
            if mount is None and os.stat(root).st_dev == os.stat("/").st_dev:
                warnings.append(
                    f"route {route.name!r}: {label} {root} is on the root filesystem and no "
                    f"{label}_mount is set; if a share should be mounted there, set "
                    f"{label}_mount so an unmounted share pauses the route"
                )
            # The watcher's, the job guard's and the resume sweep's mount
            # check (mountinfo): os.path.ismount called a mounted same-device
            # bind mount "not mounted" (issue #14, finding 5).
            problem = mount_problem(label, root, mount)
            if problem is not None:
                line = route.line_of(f"{label}_mount")
                where = f"{config.path}:{line}: " if line else ""
                errors.append(f"{where}route {route.name!r}: {problem}")
    return errors, warnings


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with secrets (alert URLs) masked."""
    data = _plain(dataclasses.asdict(config))
    data.pop("lines", None)
    for shown in data["routes"]:
        shown.pop("lines", None)
    data["alerts"]["urls"] = [_redact_url(u) for u in config.alerts.urls]
    data["health"]["min_free"] = str(config.health.min_free)
    for shown, route in zip(data["routes"], config.routes, strict=True):
        shown["min_free"] = str(route.min_free)
    return data


def _redact_url(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else "url"
    return f"{scheme}://***"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, units.FreeSpace):
        return str(value)
    return value
