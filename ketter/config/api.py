"""The ``api:`` section: listen addresses, TLS, and the rules between them.

``ketter api`` (the HTTP control plane) needs ``api.listen``; every other
command works without an ``api:`` section. The rules no single key can
check are here (:func:`check_api`), reported like every config problem as
``FILE:LINE: KEY: reason``:

* ``tls_cert`` and ``tls_key`` go together; ``client_ca`` (mTLS) needs them;
* an address that is not loopback is served without TLS only when
  ``allow_plaintext: true`` says so on purpose: a token sent in clear over
  the network is a token given away;
* ``metrics_listen`` follows the same rule and is not ``listen`` itself.

The certificate files are read by ``ketter api`` at start and checked by
``ketter config check`` (:func:`api_file_problems`), not by every command:
the workers never need them.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ketter.config.schema import Config

#: The only ``cors`` value: no cross-origin access at all.
#: The most API processes a config may ask for.
MAX_PROCESSES = 64
CORS_NONE = "none"
_CORS_HINT = (
    "cross-origin access is not supported: the API answers no browser request "
    "from another origin (write cors: none, or leave the key out)"
)


def parse_address(raw: object) -> str:
    """``HOST:PORT`` with an IP literal host (IPv6 in brackets:
    ``[::1]:8443``), normalised; ValueError saying what is wrong otherwise."""
    example = "such as 127.0.0.1:8443, 10.0.0.5:8443 or [::1]:8443"
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"expected an address:port {example}, got {raw!r}")
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected an address:port {example}, got {raw!r} (no port)")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, e.g. [{host}]:{port_text}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address; write the address to listen on ({example}), "
            "not a host name"
        ) from None
    if bracketed and address.version != 6:
        raise ValueError(f"only an IPv6 address goes in brackets, got {raw!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535, got {port_text!r}")
    return join_address(str(address), int(port_text))


def join_address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of an address :func:`parse_address` returned."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether ``address`` listens on loopback only (127.0.0.0/8, ::1)."""
    return ipaddress.ip_address(split_address(address)[0]).is_loopback


def parse_cors(raw: object) -> str:
    if raw != CORS_NONE:
        raise ValueError(f"invalid value {raw!r}: {_CORS_HINT}")
    return CORS_NONE


def check_api(config: Config, key_lines: dict[str, int], path: str) -> list[str]:
    """The ``api:`` rules between keys (see the module docstring)."""
    api = config.api
    problems: list[str] = []

    def where(key: str) -> str:
        line = key_lines.get(f"api.{key}", key_lines.get("api", 1))
        return f"{path}:{line}: api.{key}"

    tls = api.tls_cert is not None and api.tls_key is not None
    if (api.tls_cert is None) != (api.tls_key is None):
        given = "tls_cert" if api.tls_cert is not None else "tls_key"
        missing = "tls_key" if given == "tls_cert" else "tls_cert"
        problems.append(
            f"{where(given)}: {given} is set but {missing} is not; TLS needs both "
            "the certificate (chain) and its private key: set both or neither"
        )
    if api.client_ca is not None and not tls:
        problems.append(
            f"{where('client_ca')}: client_ca (client certificates, mTLS) needs "
            "tls_cert and tls_key: the server's own certificate comes first"
        )
    if api.max_body < 1:
        problems.append(f"{where('max_body')}: must be at least 1 byte, got {api.max_body}")
    if api.processes > MAX_PROCESSES:
        problems.append(
            f"{where('processes')}: {api.processes} processes is more than {MAX_PROCESSES}; "
            "one per core is what helps (each serves requests under its own interpreter lock)"
        )
    for key in ("listen", "metrics_listen"):
        address = getattr(api, key)
        if address is None or tls or api.allow_plaintext or is_loopback(address):
            continue
        problems.append(
            f"{where(key)}: {address} is not a loopback address and no tls_cert/tls_key "
            "is set: API tokens would cross the network in clear. Set tls_cert and "
            "tls_key (docs/operations.md, TLS), listen on 127.0.0.1 behind a TLS "
            "proxy, or write allow_plaintext: true if this network is meant for it"
        )
    if api.metrics_listen is not None and api.metrics_listen == api.listen:
        problems.append(
            f"{where('metrics_listen')}: {api.metrics_listen} is also api.listen; "
            "/metrics without a token needs an address of its own (another port)"
        )
    return problems


def api_file_problems(config: Config) -> list[str]:
    """The certificate files ``ketter api`` reads: each must be a readable
    file (``ketter config check``; ``ketter api`` checks them again at start)."""
    problems = []
    for key in ("tls_cert", "tls_key", "client_ca"):
        file = getattr(config.api, key)
        if file is None:
            continue
        line = config.line_of(f"api.{key}")
        where = f"{config.path}:{line}: api.{key}" if line else f"api.{key}"
        if not os.path.isfile(file):
            problems.append(f"{where}: {file} does not exist or is not a file")
        elif not os.access(file, os.R_OK):
            problems.append(
                f"{where}: {file} is not readable by this account; the API's account "
                "(ketter) must read it: chown root:ketter and chmod 0640"
            )
    return problems
