"""`dschat --discover` against a stand-in daemon on the loopback interface (TTL 0)."""

from __future__ import annotations

import asyncio
import os

from dsd import wire
from dsd.config import ClusterSettings
from dsd.core import datagrams
from dsd.io.multicast import MulticastTransport
from dschat.discover import discover

GROUP = "239.255.77.9"


def loopback_cluster() -> ClusterSettings:
    return ClusterSettings(GROUP, 20000 + os.getpid() % 20000, "127.0.0.1", 0, secret_file="",
                           multicast=True, peers=(), bind="0.0.0.0")


async def discover_with(answering: dict[str, int]) -> tuple[list[str], list[int]]:
    """Run discover() while stand-ins answer; `answering` maps a name to the attempt it first answers."""
    cluster = loopback_cluster()
    probes: list[int] = []  # the nonces the first stand-in saw
    seen: dict[str, int] = {name: 0 for name in answering}
    responders: list[MulticastTransport] = []

    def answer(name: str, transport: MulticastTransport) -> None:
        def on_datagram(data: bytes, address: str) -> None:
            message = wire.decode(data)
            if isinstance(message, datagrams.Discover):
                seen[name] += 1
                if name == min(answering):
                    probes.append(message.nonce)
                if seen[name] >= answering[name]:
                    transport.send(wire.encode(datagrams.Offer(name, message.nonce, f"tcp://{name}:5009", f"tcp://{name}:5010")))
        return on_datagram

    for name in answering:
        transport = MulticastTransport(cluster.group, cluster.port, cluster.interface, cluster.ttl)
        await transport.start(answer(name, transport))
        responders.append(transport)
    try:
        found = await discover(cluster, first_wait=0.2)
    finally:
        for transport in responders:
            transport.close()
    return found, probes


def test_discover_collects_every_daemon_that_answers() -> None:
    found, probes = asyncio.run(discover_with({"alpha": 1, "bravo": 1}))
    assert found == ["tcp://alpha:5009", "tcp://bravo:5009"]
    assert len(probes) == 1, "one attempt is enough when daemons answer"


def test_discover_tries_again_with_the_same_nonce() -> None:
    found, probes = asyncio.run(discover_with({"alpha": 3}))
    assert found == ["tcp://alpha:5009"]
    assert len(probes) == 3 and len(set(probes)) == 1


def test_discover_gives_up_after_three_attempts() -> None:
    found, probes = asyncio.run(discover_with({"alpha": 4}))
    assert found == [] and len(probes) == 3
