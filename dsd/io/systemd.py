"""The sd_notify protocol, spoken directly (no libsystemd, no extra package).

systemd hands a ``Type=notify`` service the address of a datagram socket in
``$NOTIFY_SOCKET``: an absolute path, or ``@name`` for a socket in the Linux
abstract namespace. Each notification is one datagram of ``KEY=value`` lines.
``$WATCHDOG_USEC`` (and, when present, ``$WATCHDOG_PID``) tell the service how
often it must send ``WATCHDOG=1``.

Notifications are advisory for the daemon: losing one must never take the daemon
down, so every failure to send is swallowed and logged at debug level.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("dsd.systemd")

# Sends never block: the notifier runs on the event loop, and a stall as long as
# failure_timeout (1 s by default) gets the daemon declared dead by its peers. When
# the manager's queue is full (it is wedged: systemd drains promptly), the
# notification is dropped, like any other failure to send.


def _socket_address(value: str) -> str | bytes | None:
    """Turn ``$NOTIFY_SOCKET`` into a sendto() address, or None if unusable.

    Like libsystemd, only absolute paths and abstract names are accepted; a
    relative path would depend on the daemon's working directory.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


class Notifier:
    """Sends service state to systemd; every method is a no-op without systemd.

    One socket is created on first use and kept for the life of the notifier.
    Python sockets are close-on-exec (non-inheritable) by default, so child
    processes never inherit it. Each datagram is sent with ``sendto`` rather than
    through a connected socket, so a manager that re-creates its socket (after
    ``systemctl daemon-reexec``) is reached again without reopening anything.
    """

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.debug("ignoring NOTIFY_SOCKET=%r: not an absolute path or @name", raw)
        self.enabled: bool = self._address is not None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._sock: socket.socket | None = None
        # Set after a failed send, cleared by a successful one: a manager that is
        # gone would otherwise produce one log line per watchdog ping.
        self._failing = False

    def ready(self) -> None:
        """Start-up is complete (sockets bound); also ends a reload."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status``."""
        line = " ".join(text.splitlines())
        self._send(f"STATUS={line}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A reload has begun; call :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` lets systemd >= 253 (``Type=notify-reload``) match this
        message to the reload it asked for; older managers ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog(self) -> None:
        """Tell the watchdog the daemon is alive."""
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings, or None if no watchdog applies.

        Half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) recommends, so a
        late ping still arrives in time. ``$WATCHDOG_PID`` naming another process
        means the watchdog belongs to that process, not to us.
        """
        if self._watchdog_pid is not None:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec or "")
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        self.enabled = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> None:
        if not self.enabled or self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.debug("sd_notify %r failed: %s", message.split("\n", 1)[0], exc)
                self._failing = True
        else:
            self._failing = False
