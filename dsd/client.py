"""The control-socket client shared by dsctl and dschat: Lazy Pirate over REQ.

Each try sends the request and waits `timeout`; on silence the REQ socket is
closed and reopened (a REQ that lost its reply is stuck for good) and the
request is sent again, up to `retries` tries, then `Unreachable` names the
endpoint. It never hangs.

A tcp:// endpoint is a daemon's CURVE-encrypted TCP endpoint: give `curve` (see
`dsd.curve.ClientCurve`). A wrong server key or a client key the daemon does not allow
gets no answer at all, so the Unreachable message names those as likely causes.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import zmq

from dsd.curve import UNANSWERED_TCP_HINT, ClientCurve, connect, is_tcp


class Unreachable(Exception):
    """No answer from the daemon."""


class DaemonError(Exception):
    """The daemon answered with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


def feed_address(control: str, feed: str) -> str:
    """Where to subscribe: a feed bound on all interfaces (`tcp://*:p`) is reached on the control host."""
    if feed.startswith("tcp://") and control.startswith("tcp://"):
        host = urlsplit(feed).hostname
        if host in ("*", "0.0.0.0"):
            return f"tcp://{urlsplit(control).hostname}:{urlsplit(feed).port}"
    return feed


class ControlClient:
    def __init__(self, endpoint: str, timeout: float = 1.0, retries: int = 3,
                 context: zmq.Context | None = None, curve: ClientCurve | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.timeout = timeout
        self.retries = retries
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command; returns its result, raises DaemonError or Unreachable."""
        path = self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else None
        if path is not None and not os.path.exists(path):
            raise Unreachable(
                f"cannot reach dsd at {self.endpoint}: no such socket; is dsd running "
                "(systemctl status dsd) and is [control] endpoint the same in its configuration?"
            )
        payload = json.dumps({"cmd": cmd, "args": args} if args else {"cmd": cmd}).encode()
        for _ in range(self.retries):
            socket = self._connect()
            socket.send(payload)
            if socket.poll(int(self.timeout * 1000), zmq.POLLIN):
                reply = json.loads(socket.recv())
                if reply.get("ok"):
                    return reply["result"]
                error = reply.get("error", {})
                raise DaemonError(error.get("code", "error"), error.get("message", "request failed"))
            self.close()
        hint = f"; {UNANSWERED_TCP_HINT}" if is_tcp(self.endpoint) else ""
        raise Unreachable(
            f"no answer from dsd at {self.endpoint} after {self.retries} tries of {self.timeout:g}s; "
            f"is dsd running (systemctl status dsd) and is it the endpoint in its configuration?{hint}"
        )

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            connect(self._socket, self.endpoint, self.curve)
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
