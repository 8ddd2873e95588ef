"""The control socket (ROUTER serving REQ clients) and the event feed (PUB).

Each has an ipc socket, protected by its file mode, and optionally a TCP one for clients
on other hosts, a CURVE server (see :class:`CurveServer`): encrypted, and only the client
keys it allows get in. They are separate sockets, so whether a request came over TCP is
known from where it arrived, never inferred from the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time
from typing import Any, Callable

import msgspec
import zmq

from dsd.curve import ServerKeys, make_server, start_zap

log = logging.getLogger("dsd.control")

YIELD_EVERY = 256  # requests handled in a row before the event loop gets a turn
RequestHandler = Callable[[bytes, list[bytes], bool], "bytes | None"]
"""Called with (payload, envelope, admin); returns the reply, or None to answer later with `reply`.

`admin` is True for a request that may run admin commands: from the ipc socket, or over
TCP from a key in `admin_keys`. The envelope is opaque: hand it back to `reply`.
"""
IPC, TCP = b"ipc", b"tcp"  # first frame of an envelope: the socket to answer on
ZAP_DOMAIN = "dsd.control"


class BindError(OSError):
    """An endpoint could not be bound (in use, bad address, no permission)."""


IPC_MODE = 0o660  # an ipc socket is the access control: its owner and group only


def bind(socket: zmq.Socket, endpoint: str, what: str) -> str:
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


_FEED_ENCODER = msgspec.json.Encoder()
FEED_BATCH = 8  # events in one feed message
FEED_EVENTS = 10_000  # events queued for one subscriber at most
FEED_QUEUE = FEED_EVENTS // FEED_BATCH  # its queue, in messages
_BAD_ENVELOPE = json.dumps({"ok": False, "error": {
    "code": "bad_request",
    "message": "a request is exactly one frame after an empty delimiter frame (as a REQ socket sends it)",
}}).encode()


class Drain:
    """Hands every message arriving on `socket` to `handle`, from the event loop's reader on its FD.

    No future per message (zmq.asyncio's way): one callback drains the socket with
    non-blocking receives until zmq.Again. ZeroMQ's FD is edge-triggered, so each wake-up
    must drain fully; a send on the same socket can consume the edge, so after one outside
    `handle`, call `check`. After YIELD_EVERY messages the rest waits for the loop's next
    turn, so a flood cannot starve timers and other sockets. Run it with `serve`.

    `done`, if given, is called after each wake-up's messages: where the daemon ends a batch
    of inputs at once, rather than a turn of the event loop later.
    """

    def __init__(self, socket: zmq.Socket, handle: Callable[[Any], None], multipart: bool = False,
                 copy: bool = True, done: Callable[[], None] | None = None) -> None:
        self._socket = socket
        self._handle = handle
        self._done = done
        self._recv: Callable[[], Any] = (
            (lambda: socket.recv_multipart(zmq.NOBLOCK, copy=copy)) if multipart else (lambda: socket.recv(zmq.NOBLOCK))
        )
        self._failed: asyncio.Future[None] | None = None
        self._fd = 0
        self._scheduled = False

    def start(self, failed: asyncio.Future[None]) -> None:
        """Watch the socket in `failed`'s loop; an exception raised by `handle` is set on `failed`."""
        self._failed = failed
        self._fd = self._socket.getsockopt(zmq.FD)
        failed.get_loop().add_reader(self._fd, self._drain)
        self._schedule()  # messages may be queued already, and the FD signals only changes

    def stop(self) -> None:
        if self._failed is not None:
            self._failed.get_loop().remove_reader(self._fd)
            self._failed = None

    def check(self) -> None:
        if self._failed is not None and not self._scheduled and self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._schedule()

    def _schedule(self) -> None:
        assert self._failed is not None
        self._scheduled = True
        self._failed.get_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        failed = self._failed
        if failed is None or failed.done():
            return
        try:
            for _ in range(YIELD_EVERY):
                try:
                    message = self._recv()
                except zmq.Again:
                    break
                self._handle(message)
            else:
                if not self._scheduled:
                    self._schedule()
            if self._done is not None:
                self._done()
        except Exception as error:  # the serving task ends with it, as an await would have
            failed.set_exception(error)


async def serve(*drains: Drain) -> None:
    """Run `drains` until cancelled, or until one's handler raises (then with its exception)."""
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        for drain in drains:
            drain.start(failed)
        await failed
    finally:
        for drain in drains:
            drain.stop()


def _envelope(frames: list[bytes]) -> list[bytes]:
    """The routing part of a malformed message: the identity, and the first empty frame if any."""
    if b"" in frames[1:]:
        return frames[:frames.index(b"", 1) + 1]
    return frames[:1]


class CurveServer:
    """The TCP sockets' CURVE: the daemon's keypair, the ZAP handler admitting client keys, the admins.

    The handler is zmq.auth's, in this event loop; it is started here, before any CURVE
    socket is bound, since without a ZAP handler libzmq would let every client key in.
    A ZAP handler serves every socket of its ZeroMQ context, so the TCP sockets get a
    context of their own: other CURVE sockets of the daemon (the chat links) are not
    judged by this handler's rules.
    """

    MAX_REFUSALS_LOGGED = 1000  # distinct refused keys named in the log, so a stranger cannot flood it

    def __init__(self, keys: ServerKeys) -> None:
        self.keys = keys
        self.public_key = keys.keypair.public.decode("ascii")
        self.context = zmq.Context()
        self._admins = {key.decode("ascii") for key in keys.admins}
        self._refused: set[bytes] = set()
        self.refused = 0  # CURVE handshakes refused: a client key in neither client_keys nor admin_keys
        self._authenticator = start_zap(self.context, ZAP_DOMAIN, None if keys.allowed is None else self, "dsd.zap")

    def admit(self, keys: ServerKeys) -> None:
        """SIGHUP: the client and admin keys as the directories now hold them.

        New connections are judged by them; a connected client stays until it reconnects.
        """
        if keys.keypair != self.keys.keypair:
            log.warning("reload: [control] server_key changed; it takes effect at the next restart")
        self.keys = ServerKeys(self.keys.keypair, keys.allowed, keys.admins)
        self._admins = {key.decode("ascii") for key in keys.admins}
        self._refused.clear()
        log.info("reload: %s client keys, %d admin keys",
                 "any" if keys.allowed is None else len(keys.allowed), len(keys.admins))

    def callback(self, domain: str, key: bytes) -> bool:
        """zmq.auth's question: may the client with this public key (Z85) connect?"""
        if self.keys.allowed is not None and key in self.keys.allowed:
            return True
        self.refused += 1
        if key not in self._refused and len(self._refused) < self.MAX_REFUSALS_LOGGED:
            self._refused.add(key)
            log.warning("refused a TCP client: its key %s is in neither [control] client_keys nor admin_keys",
                        key.decode("ascii", "replace"))
        return False

    def socket(self, kind: int) -> zmq.Socket:
        """A CURVE server socket of `kind`, not bound yet."""
        socket = self.context.socket(kind)
        make_server(socket, self.keys.keypair.secret, ZAP_DOMAIN)
        return socket

    def is_admin(self, frame: zmq.Frame) -> bool:
        """Whether the message of `frame` came from a key in admin_keys (its ZAP User-Id is the Z85 key)."""
        try:
            user_id = frame.get("User-Id")
        except zmq.ZMQError:  # no User-Id: not authenticated by our handler
            return False
        return user_id in self._admins

    def close(self) -> None:
        """After the sockets made by `socket` are closed."""
        self._authenticator.stop()
        self.context.term()


def _tcp_socket(kind: int, curve: CurveServer | None) -> zmq.Socket:
    if curve is None:
        raise ValueError("a TCP endpoint needs a CurveServer")
    return curve.socket(kind)


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one; returns the soft limit now in force.

    Each client connection takes a descriptor, and libzmq (4.3.5, ipc_listener.cpp) aborts the
    whole process when accepting on an ipc socket fails with EMFILE: at a soft limit of 1024
    (the usual default) about a thousand connections, over TCP or ipc, would kill dsd.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:  # an unlimited hard limit the kernel caps lower
            log.warning("cannot raise the open-file limit from %d: %s", soft, error)
            return soft
        log.info("open-file limit raised from %d to %d: each client connection takes one", soft, hard)
    return hard


class ControlServer:
    """Answers each request frame with `handler(payload, envelope, admin)`, at once or later via `reply`.

    A malformed envelope gets a bad_request reply. `done` ends each batch of requests (`Drain`).
    """

    def __init__(self, context: zmq.Context, endpoint: str, handler: RequestHandler,
                 tcp_endpoint: str = "", curve: CurveServer | None = None, done: Callable[[], None] | None = None) -> None:
        raise_fd_limit()
        self.endpoint = endpoint
        self._handler = handler
        self._curve = curve
        self._socket = self._router(context.socket(zmq.ROUTER, socket_class=zmq.Socket))
        bind(self._socket, endpoint, "control")
        self._tcp: zmq.Socket | None = None
        self.tcp_endpoint = ""
        self._drains = {IPC: Drain(self._socket, self._on_ipc, multipart=True, done=done)}
        if tcp_endpoint:
            self._tcp = self._router(_tcp_socket(zmq.ROUTER, curve))
            self.tcp_endpoint = bind(self._tcp, tcp_endpoint, "TCP control")
            self._drains[TCP] = Drain(self._tcp, self._on_tcp, multipart=True, copy=False,  # frames carry the User-Id
                                      done=done)
        self.requests = 0
        self.rejected = 0

    @staticmethod
    def _router(socket: zmq.Socket) -> zmq.Socket:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024)
        return socket

    async def serve(self) -> None:
        await serve(*self._drains.values())

    def _on_ipc(self, frames: list[bytes]) -> None:
        self._on_message(self._socket, IPC, frames, True)

    def _on_tcp(self, message: list[zmq.Frame]) -> None:
        assert self._tcp is not None
        admin = self._curve is not None and self._curve.is_admin(message[-1])
        self._on_message(self._tcp, TCP, [frame.bytes for frame in message], admin)

    def _on_message(self, socket: zmq.Socket, origin: bytes, frames: list[bytes], admin: bool) -> None:
        if len(frames) != 3 or frames[1] != b"":
            self.rejected += 1
            log.debug("refused a control message of %d frames", len(frames))
            _send(socket, _envelope(frames) + [_BAD_ENVELOPE])
            return
        self.requests += 1
        reply = self._handler(frames[2], [origin, *frames[:2]], admin)
        if reply is not None:
            _send(socket, frames[:2] + [reply])

    def reply(self, envelope: list[bytes], payload: bytes) -> None:
        """A deferred answer; dropped if the client is gone or not reading (never blocks)."""
        socket = self._tcp if envelope[0] == TCP else self._socket
        if socket is None:
            return
        _send(socket, envelope[1:] + [payload])
        self._drains[envelope[0]].check()  # the send may have taken the FD's edge of a request waiting

    def close(self) -> None:
        self._socket.close(linger=0)
        if self._tcp is not None:
            self._tcp.close(linger=0)


def _send(socket: zmq.Socket, frames: list[bytes]) -> None:
    """A reply on a ROUTER: dropped if the client is gone or not reading (never blocks)."""
    try:
        socket.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.ZMQError as error:
        log.debug("dropped a reply: %s", error.strerror)


class Feed:
    """Publishes `[topic, json, ...]` messages: one or more events of one topic, in order.

    Several events in one message (a burst of committed entries, at most FEED_BATCH) cost one
    wake-up of libzmq's I/O thread, here and at every subscriber, instead of one each: at a
    few thousand entries a second that was a third of the daemon's time. A slow subscriber is
    never waited for: its queue holds FEED_QUEUE messages (ZeroMQ's HWM counts messages),
    so at most FEED_EVENTS events, and the rest is dropped for it (dschat then fetches what it
    missed with chat.since).
    """

    def __init__(self, context: zmq.Context, endpoint: str, node: str, tcp_endpoint: str = "",
                 curve: CurveServer | None = None) -> None:
        self.endpoint = endpoint
        self._node = node
        self._sockets = [self._pub(context.socket(zmq.PUB, socket_class=zmq.Socket))]
        bind(self._sockets[0], endpoint, "feed")
        self.tcp_endpoint = ""
        if tcp_endpoint:
            self._sockets.append(self._pub(_tcp_socket(zmq.PUB, curve)))
            self.tcp_endpoint = bind(self._sockets[1], tcp_endpoint, "TCP feed")
        self.published = 0

    @staticmethod
    def _pub(socket: zmq.Socket) -> zmq.Socket:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, FEED_QUEUE)
        return socket

    def publish(self, topic: str, events: list[dict[str, Any]]) -> None:
        """`events`, all of `topic`, in messages of at most FEED_BATCH."""
        head = {"topic": topic, "node": self._node, "time": round(time.time(), 6)}
        name = topic.encode()
        for start in range(0, len(events), FEED_BATCH):
            frames = [name, *(_FEED_ENCODER.encode({**head, **event}) for event in events[start:start + FEED_BATCH])]
            for socket in self._sockets:
                try:
                    socket.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:
                    log.debug("feed full: dropped %d %s", len(frames) - 1, topic)
        self.published += len(events)

    def close(self) -> None:
        for socket in self._sockets:
            socket.close(linger=0)


def runs(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(topic, event) pairs as runs of consecutive events of one topic: one feed message each."""
    grouped: list[tuple[str, list[dict[str, Any]]]] = []
    for topic, event in events:
        if grouped and grouped[-1][0] == topic:
            grouped[-1][1].append(event)
        else:
            grouped.append((topic, [event]))
    return grouped


async def cancel(task: "asyncio.Task[Any] | None") -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
