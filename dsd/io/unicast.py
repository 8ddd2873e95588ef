"""UDP unicast, for networks without multicast (issue 11), and the transport the daemon uses.

`UnicastTransport` is one socket on ``[cluster] bind``:``port`` that sends to the
addresses the core names. `ClusterTransport` puts it beside the multicast group socket (or
in its place, with ``multicast = false``) behind `dsd.io.multicast.Transport`, telling the
core which way each datagram came. `resolve` turns a ``[cluster] peers`` name into IPv4
addresses through the system resolver. No protocol decision is made here.
"""

from __future__ import annotations

import asyncio
import socket

from dsd.io.multicast import (
    RECEIVE_BUFFER, ClusterHandler, DatagramHandler, DatagramSocket, MulticastTransport, TransportError, read_batch,
)

# Linux: without it, a socket bound to 0.0.0.0:port also gets the datagrams of every multicast
# group any socket of this host joined on that port (the multicast socket's, twice over).
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


class UnicastTransport(DatagramSocket):
    """One UDP socket on (bind, port): datagrams to and from single addresses.

    `shared` (multicast on too): the group socket holds the same port, so the address is
    shared (SO_REUSEADDR). Otherwise a second daemon on the port is refused, as it should be.
    """

    def __init__(self, bind: str, port: int, shared: bool) -> None:
        self.bind = bind
        self.port = port
        self.shared = shared
        self._handler: DatagramHandler | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, on_datagram: DatagramHandler) -> None:
        self._handler = on_datagram
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            if self.shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((self.bind, self.port))
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            raise TransportError(f"cannot bind the unicast socket to {self.bind}:{self.port} "
                                 f"([cluster] bind, port): {error.strerror or error}") from None
        self._socket = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), lambda: read_batch(lambda: self._socket, self._handler))

    def send(self, data: bytes, to: tuple[str, ...]) -> None:
        """Best effort, like UDP itself: an unreachable address or a full buffer drops that datagram."""
        if self._socket is None:
            return
        for address in to:
            host, _, port = address.rpartition(":")
            try:
                self._socket.sendto(data, (host, int(port)))
            except (OSError, ValueError):
                pass


class ClusterTransport:
    """The multicast group socket, the unicast socket, or both, as one `Transport`."""

    def __init__(self, local_address: str, multicast: MulticastTransport | None,
                 unicast: UnicastTransport | None) -> None:
        assert multicast is not None or unicast is not None
        self.local_address = local_address
        self.multicast = multicast
        self.unicast = unicast

    def describe(self) -> str:
        """For the start-up log line."""
        parts = []
        if self.multicast is not None:
            parts.append(f"group {self.multicast.group}:{self.multicast.port}")
        if self.unicast is not None:
            parts.append(f"unicast on {self.unicast.bind}:{self.unicast.port}")
        return " and ".join(parts) + f" via {self.local_address}"

    async def start(self, on_datagram: ClusterHandler) -> None:
        if self.unicast is not None:
            await self.unicast.start(lambda data, address: on_datagram(data, address, True))
        if self.multicast is not None:
            try:
                await self.multicast.start(lambda data, address: on_datagram(data, address, False))
            except BaseException:
                self.close()
                raise

    def send(self, data: bytes, to: tuple[str, ...] | None = None) -> None:
        if to is None:
            if self.multicast is not None:
                self.multicast.send(data)
        elif self.unicast is not None:
            self.unicast.send(data, to)

    def close(self) -> None:
        for part in (self.multicast, self.unicast):
            if part is not None:
                part.close()


async def resolve(host: str, port: int) -> list[str]:
    """The IPv4 addresses of `host` as "ip:port", through the system resolver; OSError if none."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    addresses = list(dict.fromkeys(f"{info[4][0]}:{info[4][1]}" for info in infos))
    if not addresses:
        raise OSError(f"{host} has no IPv4 address")
    return addresses
