"""`dschat --discover`: find daemons that take TCP clients, by a multicast DISCOVER.

For hosts that run no daemon of their own. Every daemon with `[control] tcp_endpoint`
set answers with an OFFER naming its TCP control and feed endpoints. Three attempts,
each waiting twice as long as the one before; the answers of the first attempt that
gets any are kept.
"""

from __future__ import annotations

import asyncio
import random

from dsd import wire
from dsd.config import ClusterSettings
from dsd.core import datagrams
from dsd.io.multicast import MulticastTransport

ATTEMPTS = 3
FIRST_WAIT = 0.25  # seconds; then 0.5, 1.0
STRAGGLERS = 0.1  # after the first offer, how long to wait for the other daemons'


async def discover(cluster: ClusterSettings, attempts: int = ATTEMPTS, first_wait: float = FIRST_WAIT) -> list[str]:
    """The control endpoints offered, by daemon name; [] if nobody answered."""
    nonce = random.getrandbits(62)
    offers: dict[str, str] = {}
    first = asyncio.Event()

    def on_datagram(data: bytes, address: str) -> None:
        try:
            message = wire.decode(data)
        except wire.WireError:
            return
        if isinstance(message, datagrams.Offer) and message.nonce == nonce:
            offers[message.name] = message.endpoint
            first.set()

    transport = MulticastTransport(cluster.group, cluster.port, cluster.interface, cluster.ttl)
    await transport.start(on_datagram)
    try:
        wait = first_wait
        for _ in range(attempts):
            transport.send(wire.encode(datagrams.Discover(nonce)))
            try:
                await asyncio.wait_for(first.wait(), wait)
            except asyncio.TimeoutError:
                wait *= 2
                continue
            await asyncio.sleep(STRAGGLERS)
            break
    finally:
        transport.close()
    return [offers[name] for name in sorted(offers)]
