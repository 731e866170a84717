"""Free TCP ports on 127.0.0.1 for the servers the tests start."""

from __future__ import annotations

import socket
import threading

_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now, never one this process was given
    before: two ports asked for one after the other (a server and its
    second listener, smbd and sshd) were the same one time in about 14,000,
    the first socket being closed before the second was bound."""
    with _lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
