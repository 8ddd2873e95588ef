"""Data-plane links between daemons: one PULL socket in, one PUSH socket per peer out.

Best effort by design: a message to a peer that is not connected is dropped at once
(ZMQ_IMMEDIATE, non-blocking send) rather than queued, because the chat core
retransmits whatever is not acknowledged, and a queue in front of a dead peer would only
grow. ZeroMQ keeps each link in order and reconnects by itself.

With a cluster secret the links use CURVE (encrypted and authenticated): the PULL socket
is a CURVE server with a keypair made afresh at each start, whose public key the daemon
announces in its signed heartbeats (`Heartbeat.link_key`). Each PUSH socket's client
keypair is derived from the signing key (`client_keypair`), and the ZAP handler admits
exactly the client keys derived from the configured keys: holding the secret is what
lets a daemon deliver link messages, and key rotation works as it does for datagrams.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Callable

import zmq
from zmq.utils import z85

from dsd.auth import Keyring
from dsd.curve import Keypair, make_server, start_zap
from dsd.io.control import Drain, bind, serve

log = logging.getLogger("dsd.links")

MAX_MESSAGE = 4 * 1024 * 1024
SEND_HWM = 10_000  # messages queued per connected peer before sends are dropped
ZAP_DOMAIN = "dsd.links"
CLIENT_KEY_LABEL = b"dsd link client v1"


def client_keypair(key: bytes) -> Keypair:
    """The CURVE keypair of the PUSH sockets of a daemon that signs with `key`: anyone with the key can derive it."""
    secret = z85.encode(hmac.new(key, CLIENT_KEY_LABEL, hashlib.sha256).digest())
    return Keypair(zmq.curve_public(secret), secret)


def peer_bind_endpoint(configured: str, interface_address: str) -> str:
    """What to bind: the configured endpoint, or the cluster interface's address and any port."""
    return configured or f"tcp://{interface_address}:*"


class Links:
    """Sends encoded link messages to named peers and hands incoming ones to `on_message`.

    `keyring` None: plain TCP. Otherwise CURVE, see the module doc; `public_key` is then
    what to announce beside `endpoint`.
    """

    def __init__(self, endpoint: str, keyring: Keyring | None) -> None:
        # A context of its own: ZeroMQ has one ZAP handler per context, and this one admits link clients only.
        self._context = zmq.Context()
        self._inbox = self._context.socket(zmq.PULL)
        self._inbox.setsockopt(zmq.LINGER, 0)
        self._inbox.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self._inbox.setsockopt(zmq.RCVHWM, 100_000)
        self._peers: dict[str, tuple[tuple[str, str], zmq.Socket]] = {}
        self.sent = 0
        self.dropped = 0
        self.received = 0
        self.refused = 0  # CURVE handshakes refused: a client key derived from no configured key
        self._allowed: frozenset[bytes] = frozenset()
        self._client: Keypair | None = None
        self._authenticator: Any = None
        self.public_key = ""
        if keyring is not None:
            self._authenticator = start_zap(self._context, ZAP_DOMAIN, self, "dsd.links.zap")
            server = Keypair(*zmq.curve_keypair())
            make_server(self._inbox, server.secret, ZAP_DOMAIN)
            self.public_key = server.public.decode()
            self.use_keyring(keyring)
        self.endpoint = bind(self._inbox, endpoint, "chat peer")

    def use_keyring(self, keyring: Keyring) -> None:
        """Admit the client keys of every key; sign (connect) with the first, re-connecting if it changed."""
        self._allowed = frozenset(client_keypair(key).public for key in keyring.keys)
        client = client_keypair(keyring.signing)
        if client != self._client:
            self._client = client
            self._disconnect(set(self._peers))

    def callback(self, domain: str, client_key: bytes) -> bool:
        """The ZAP handler's question: may this client key deliver link messages?"""
        if client_key in self._allowed:
            return True
        self.refused += 1
        log.debug("refused a link client with key %s", client_key.decode(errors="replace"))
        return False

    def connect(self, peers: dict[str, tuple[str, str]]) -> None:
        """Keep one PUSH per peer (name -> (endpoint, link key)), following changes (a restarted peer gets a new port)."""
        self._disconnect({name for name, (target, _) in self._peers.items() if peers.get(name) != target})
        for name, (endpoint, server_key) in peers.items():
            if name in self._peers or not endpoint or (self._client is not None and not server_key):
                continue
            socket = self._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            if self._client is not None:
                socket.curve_serverkey = server_key.encode()
                socket.curve_publickey, socket.curve_secretkey = self._client.public, self._client.secret
            try:
                socket.connect(endpoint)
            except zmq.ZMQError as error:
                log.warning("cannot connect to %s at %s: %s", name, endpoint, error.strerror)
                socket.close(linger=0)
                continue
            self._peers[name] = ((endpoint, server_key), socket)

    def _disconnect(self, names: set[str]) -> None:
        for name in names:
            self._peers.pop(name)[1].close(linger=0)

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

    async def serve(self, on_message: Callable[[bytes], None], done: Callable[[], None] | None = None) -> None:
        """Hand each incoming message to `on_message`; `done` after each batch of them (`Drain`)."""
        def receive(data: bytes) -> None:
            self.received += 1
            on_message(data)

        await serve(Drain(self._inbox, receive, done=done))

    def close(self) -> None:
        self._disconnect(set(self._peers))
        self._inbox.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()
