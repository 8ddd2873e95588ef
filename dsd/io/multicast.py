"""UDP multicast transport: the one place that touches the group socket.

`Transport` is the small interface the daemon needs (start, send, close, the local
address); `dsd.io.unicast.ClusterTransport` implements it over this group socket, a
unicast socket, or both. Neither socket makes a protocol decision: the core says where
each datagram goes.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import socket
import struct
from typing import Callable, Protocol

DatagramHandler = Callable[[bytes, str], None]  # (datagram, its source "ip:port")
ClusterHandler = Callable[[bytes, str, bool], None]  # ... and whether it came by unicast
SIOCGIFADDR = 0x8915
RECEIVE_BUFFER = 4 * 1024 * 1024
READ_BATCH = 64  # datagrams per wakeup: most of a flood per turn, yet other sockets get their turn
MAX_READ = 65536  # read whole, so an oversize datagram is seen (and refused) as oversize


class Transport(Protocol):
    local_address: str  # "ip:port" this daemon announces

    async def start(self, on_datagram: ClusterHandler) -> None: ...

    def send(self, data: bytes, to: tuple[str, ...] | None = None) -> None:
        """To the multicast group (`to` None), or by unicast to each "ip:port" of `to`."""

    def close(self) -> None: ...


class TransportError(OSError):
    """The group socket could not be set up (bad interface, port in use...)."""


def interface_address(interface: str, group: str) -> str:
    """The IPv4 address multicast leaves from: the named or given one, else the routed one."""
    if not interface:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((group, 9))  # no packet is sent: this only asks the routing table
            return probe.getsockname()[0]
        except OSError:
            return "0.0.0.0"
        finally:
            probe.close()
    try:
        return str(ipaddress.IPv4Address(interface))
    except ValueError:
        pass
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])
    except OSError as error:
        raise TransportError(f"interface {interface!r} has no IPv4 address: {error.strerror}") from None
    finally:
        probe.close()


class DatagramSocket:
    """A UDP socket read by the event loop's reader; what both transports hold and close alike."""

    _socket: socket.socket | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        if self._socket is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None


class MulticastTransport(DatagramSocket):
    """Joins `group` on `interface`; every daemon on a host can share the port.

    Reads with its own event-loop reader, draining up to READ_BATCH datagrams per wakeup:
    asyncio's datagram transport takes one per loop iteration, so under a flood of garbage
    the peers' heartbeats would wait behind it in the receive buffer.
    """

    def __init__(self, group: str, port: int, interface: str, ttl: int) -> None:
        self.group = group
        self.port = port
        self.interface = interface
        self.ttl = ttl
        self.local_address = f"{interface_address(interface, group)}:{port}"
        self._handler: DatagramHandler | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, on_datagram: DatagramHandler) -> None:
        self._handler = on_datagram
        self._socket = self._open_socket()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._socket.fileno(), self._read_ready)

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((self.group, self.port))
            membership = self._membership_request()
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            if self.interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, membership)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            where = f"group {self.group}:{self.port} on interface {self.interface or 'default'}"
            raise TransportError(f"cannot join {where}: {error.strerror or error}") from None
        return sock

    def _membership_request(self) -> bytes:
        """An ip_mreqn: by address for an IPv4 interface, by index for a named one."""
        group = socket.inet_aton(self.group)
        if not self.interface:
            return struct.pack("4s4si", group, socket.inet_aton("0.0.0.0"), 0)
        try:
            address = socket.inet_aton(str(ipaddress.IPv4Address(self.interface)))
            return struct.pack("4s4si", group, address, 0)
        except ValueError:
            index = socket.if_nametoindex(self.interface)
            return struct.pack("4s4si", group, socket.inet_aton("0.0.0.0"), index)

    def send(self, data: bytes) -> None:
        """Best effort, like UDP itself: a full send buffer or an ICMP error drops the datagram."""
        if self._socket is not None:
            try:
                self._socket.sendto(data, (self.group, self.port))
            except OSError:
                pass

    def _read_ready(self) -> None:
        read_batch(lambda: self._socket, self._handler)


def read_batch(current: Callable[[], socket.socket | None], handler: DatagramHandler | None) -> None:
    """Up to READ_BATCH datagrams from the socket `current()` returns (None once closed) to `handler`."""
    for _ in range(READ_BATCH):
        sock = current()
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(MAX_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # an ICMP error queued on the socket: UDP is best effort
        if handler is not None:
            handler(data, f"{addr[0]}:{addr[1]}")
