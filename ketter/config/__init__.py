"""Configuration: one YAML file, validated at load into frozen dataclasses."""

from ketter.config.loader import (
    DEFAULT_CONFIG_PATH,
    check_roots,
    find_config_path,
    load_config,
    parse_config,
    redacted,
)
from ketter.config.schema import Config, RouteConfig
from ketter.config.units import FreeSpace, parse_duration, parse_size

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "FreeSpace",
    "RouteConfig",
    "check_roots",
    "find_config_path",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "redacted",
]
