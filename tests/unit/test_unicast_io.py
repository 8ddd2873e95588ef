"""The unicast socket (dsd.io.unicast) on the loopback interface: nothing leaves the machine."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dsd.io.multicast import TransportError
from dsd.io.unicast import ClusterTransport, UnicastTransport


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_datagram_sent_to_an_address_arrives_there_marked_as_unicast() -> None:
    async def scenario() -> tuple[list[tuple[bytes, str, bool]], int]:
        got: list[tuple[bytes, str, bool]] = []
        arrived = asyncio.Event()
        ports = free_port(), free_port()
        a = ClusterTransport(f"127.0.0.1:{ports[0]}", None, UnicastTransport("127.0.0.1", ports[0], shared=False))
        b = ClusterTransport(f"127.0.0.1:{ports[1]}", None, UnicastTransport("127.0.0.1", ports[1], shared=False))
        await a.start(lambda data, address, direct: None)
        await b.start(lambda data, address, direct: (got.append((data, address, direct)), arrived.set()))
        try:
            a.send(b"DSD\x01{}", (f"127.0.0.1:{ports[1]}",))
            a.send(b"to the group", None)  # no multicast socket: dropped, not an error
            await asyncio.wait_for(arrived.wait(), 5)
        finally:
            a.close()
            b.close()
        return got, ports[0]

    got, port = asyncio.run(scenario())
    assert got == [(b"DSD\x01{}", f"127.0.0.1:{port}", True)]


def test_a_second_daemon_on_the_unicast_port_is_refused_with_the_keys_named() -> None:
    async def scenario() -> None:
        port = free_port()
        first = UnicastTransport("127.0.0.1", port, shared=False)
        await first.start(lambda data, address: None)
        try:
            with pytest.raises(TransportError, match=rf"127.0.0.1:{port} \(\[cluster\] bind, port\)"):
                await UnicastTransport("127.0.0.1", port, shared=False).start(lambda data, address: None)
        finally:
            first.close()

    asyncio.run(scenario())
