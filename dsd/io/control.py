"""The control socket (ROUTER serving REQ clients) and the event feed (PUB)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

log = logging.getLogger("dsd.control")

YIELD_EVERY = 256  # requests handled in a row before the event loop gets a turn
RequestHandler = Callable[[bytes, list[bytes]], "bytes | None"]
"""Called with (payload, envelope); returns the reply, or None to answer later with `reply`."""


class BindError(OSError):
    """An endpoint could not be bound (in use, bad address, no permission)."""


IPC_MODE = 0o660  # an ipc socket is the access control: its owner and group only


def bind(socket: zmq.asyncio.Socket, endpoint: str, what: str) -> str:
    """Bind `endpoint`; returns what was bound (a `*` port resolved)."""
    try:
        socket.bind(endpoint)
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://"):], IPC_MODE)
    except zmq.ZMQError as error:
        raise BindError(f"cannot bind the {what} endpoint {endpoint}: {error.strerror}") from None
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


def reachable(endpoint: str, host: str) -> str:
    """`endpoint` as another host must dial it: a wildcard address becomes `host`."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            return f"tcp://{host}:{endpoint[len(wildcard):]}"
    return endpoint


_BAD_ENVELOPE = json.dumps({"ok": False, "error": {
    "code": "bad_request",
    "message": "a request is exactly one frame after an empty delimiter frame (as a REQ socket sends it)",
}}).encode()


def _envelope(frames: list[bytes]) -> list[bytes]:
    """The routing part of a malformed message: the identity, and the first empty frame if any."""
    if b"" in frames[1:]:
        return frames[:frames.index(b"", 1) + 1]
    return frames[:1]


class ControlServer:
    """Answers each request frame with `handler(payload, envelope)`, at once or later via `reply`.

    A malformed envelope gets a bad_request reply.
    """

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, handler: RequestHandler,
                 tcp_endpoint: str = "") -> None:
        self.endpoint = endpoint
        self._handler = handler
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024)
        bind(self._socket, endpoint, "control")
        self.tcp_endpoint = bind(self._socket, tcp_endpoint, "TCP control") if tcp_endpoint else ""
        self.requests = 0
        self.rejected = 0

    async def serve(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            if len(frames) != 3 or frames[1] != b"":
                self.rejected += 1
                log.debug("refused a control message of %d frames", len(frames))
                await self._socket.send_multipart(_envelope(frames) + [_BAD_ENVELOPE])
                continue
            self.requests += 1
            envelope = frames[:2]
            reply = self._handler(frames[2], envelope)
            if reply is not None:
                await self._socket.send_multipart(envelope + [reply])
            if self.requests % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a queued request completes recv at once: let the rest run

    def reply(self, envelope: list[bytes], payload: bytes) -> None:
        """A deferred answer; dropped if the client is gone or not reading (never blocks)."""
        try:
            self._socket.send_multipart(envelope + [payload], flags=zmq.NOBLOCK)
        except zmq.ZMQError as error:
            log.debug("dropped a deferred reply: %s", error.strerror)

    def close(self) -> None:
        self._socket.close(linger=0)


class Feed:
    """Publishes `[topic, json]` events; slow subscribers are dropped by ZeroMQ's HWM, never waited for."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, node: str, tcp_endpoint: str = "") -> None:
        self.endpoint = endpoint
        self._node = node
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 10000)
        bind(self._socket, endpoint, "feed")
        self.tcp_endpoint = bind(self._socket, tcp_endpoint, "TCP feed") if tcp_endpoint else ""
        self.published = 0

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        body = {"topic": topic, "node": self._node, "time": round(time.time(), 6), **event}
        try:
            self._socket.send_multipart([topic.encode(), json.dumps(body).encode()], flags=zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:
            log.debug("feed full: dropped %s", topic)

    def close(self) -> None:
        self._socket.close(linger=0)


async def cancel(task: "asyncio.Task[Any] | None") -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
