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

from ketter.config import units
from ketter.config.schema import Config, RouteConfig
from ketter.errors import ConfigError

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
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    if root is None:
        raise ConfigError(
            f"{path}:1: the config file is empty (see configs/ketter.example.yaml for every key)"
        )
    config = walker.section(Config, root, "")
    if walker.problems:
        raise ConfigError(walker.problems)
    assert isinstance(config, Config)
    config = dataclasses.replace(config, path=path, node=config.node or socket.gethostname())
    config = _resolve_state_paths(config)
    problems = _check_routes(config, walker.route_lines, walker.key_lines, path)
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
            if kind == "name" and (not raw or "/" in raw or raw.strip() != raw):
                raise ValueError(
                    f"a route name must be non-empty text without '/' or "
                    f"surrounding spaces, got {raw!r}"
                )
            return raw
        if kind in ("path", "state_path"):
            if not isinstance(raw, str) or not raw:
                raise ValueError(f"expected a path, got {raw!r}")
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
            if not isinstance(item, yaml.ScalarNode) or item.tag != "tag:yaml.org,2002:str":
                self.problem(item, key, f"expected text in this list, got {_describe(item)}")
                continue
            items.append(item.value)
        return tuple(items)

    def routes(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, key, f"expected a list of routes, got {_describe(node)}")
            return _INVALID
        routes = []
        for index, item in enumerate(node.value):
            routes.append(self.section(RouteConfig, item, f"routes[{index}]"))
            self.route_lines.append(item.start_mark.line + 1)
        return tuple(routes)


_INVALID = object()


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
        if route.mode != "move":
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
                errors.append(
                    f"route {route.name!r}: {label} {root} does not exist or is not a folder"
                )
                continue
            if mount is None and os.stat(root).st_dev == os.stat("/").st_dev:
                warnings.append(
                    f"route {route.name!r}: {label} {root} is on the root filesystem and no "
                    f"{label}_mount is set; if a share should be mounted there, set "
                    f"{label}_mount so an unmounted share pauses the route"
                )
            if mount is not None and not os.path.ismount(mount):
                errors.append(f"route {route.name!r}: {label}_mount {mount} is not mounted")
    return errors, warnings


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with secrets (alert URLs) masked."""
    data = _plain(dataclasses.asdict(config))
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
