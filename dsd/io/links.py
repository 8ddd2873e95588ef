"""Data-plane links between daemons: one PULL socket in, one PUSH socket per peer out.

Best effort by design: a message to a peer that is not connected is dropped at once
(ZMQ_IMMEDIATE, non-blocking send) rather than queued, because the chat core
retransmits whatever is not acknowledged, and a queue in front of a dead peer would only
grow. ZeroMQ keeps each link in order and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import zmq
import zmq.asyncio

from dsd.io.control import YIELD_EVERY, bind

log = logging.getLogger("dsd.links")

MAX_MESSAGE = 4 * 1024 * 1024
SEND_HWM = 10_000  # messages queued per connected peer before sends are dropped


def peer_bind_endpoint(configured: str, interface_address: str) -> str:
    """What to bind: the configured endpoint, or the cluster interface's address and any port."""
    return configured or f"tcp://{interface_address}:*"


class Links:
    """Sends encoded link messages to named peers and hands incoming ones to `on_message`."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str) -> None:
        self._context = context
        self._inbox = context.socket(zmq.PULL)
        self._inbox.setsockopt(zmq.LINGER, 0)
        self._inbox.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self._inbox.setsockopt(zmq.RCVHWM, 100_000)
        self.endpoint = bind(self._inbox, endpoint, "chat peer")
        self._peers: dict[str, tuple[str, zmq.asyncio.Socket]] = {}
        self.sent = 0
        self.dropped = 0
        self.received = 0

    def connect(self, endpoints: dict[str, str]) -> None:
        """Keep one PUSH per peer, following endpoint changes (a restarted peer gets a new port)."""
        for name in list(self._peers):
            endpoint, socket = self._peers[name]
            if endpoints.get(name) != endpoint:
                socket.close(linger=0)
                del self._peers[name]
        for name, endpoint in endpoints.items():
            if name in self._peers or not endpoint:
                continue
            socket = self._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            try:
                socket.connect(endpoint)
            except zmq.ZMQError as error:
                log.warning("cannot connect to %s at %s: %s", name, endpoint, error.strerror)
                socket.close(linger=0)
                continue
            self._peers[name] = (endpoint, socket)

    def send(self, to: str, data: bytes) -> None:
        peer = self._peers.get(to)
        if peer is None:
            self.dropped += 1
            return
        try:
            peer[1].send(data, flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    async def serve(self, on_message: Callable[[bytes], None]) -> None:
        while True:
            data = await self._inbox.recv()
            self.received += 1
            on_message(data)
            if self.received % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a queued message completes recv() at once: let the rest run

    def close(self) -> None:
        for _, socket in self._peers.values():
            socket.close(linger=0)
        self._peers.clear()
        self._inbox.close(linger=0)
