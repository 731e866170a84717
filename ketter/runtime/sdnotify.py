"""systemd's notification protocol (``sd_notify``) in a few lines.

The units are ``Type=notify`` with ``WatchdogSec=``: systemd counts a service
as started only when it sends ``READY=1``, and restarts it when its main loop
stops sending ``WATCHDOG=1`` (a hung mount that blocks the loop, a deadlock).
systemd passes the socket in ``$NOTIFY_SOCKET``: a path, or a name in the
Linux abstract namespace when it starts with ``@``. Outside systemd the
variable is unset and every call here does nothing, so the same code runs in
a terminal, in tests and under ``ketter run``.

A failure to notify is never fatal: the service keeps working and systemd
acts on the missing message (start-up timeout, watchdog restart).
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "ready", "stopping", "watchdog", "watchdog_interval"]


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when there is
    no ``$NOTIFY_SOCKET`` or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    """Start-up is done: systemd moves the unit from ``activating`` to ``active``."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    """A graceful stop has begun (the unit shows ``deactivating``)."""
    return notify("STOPPING=1")


class _Watchdog:
    """``WATCHDOG=1`` at most every ``$WATCHDOG_USEC / 4``: cheap enough to
    call from a loop that runs every 0.2 s."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self) -> bool:
        interval = watchdog_interval()
        if interval is None:
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + interval / 4
        return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """systemd's ``WatchdogSec`` in seconds, when it applies to this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 or None
    except ValueError:
        return None


#: Call from a service's main loop: sends ``WATCHDOG=1`` when it is due.
watchdog = _Watchdog()
