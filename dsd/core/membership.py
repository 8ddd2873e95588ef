"""The peer table: who is alive, suspect or gone, with per-peer deadlines.

There is no periodic sweep: each peer's next transition time is derived from
when it was last heard, so a dead peer is noticed exactly `failure_timeout`
after its last message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from dsd.core.actions import Action, Publish
from dsd.core.timing import Timing
from dsd.core.datagrams import Coordinator, Heartbeat, Message

ALIVE = "alive"
SUSPECT = "suspect"

Rank = tuple[int, str]


@dataclass
class Peer:
    """What this node knows of one other node."""

    name: str
    incarnation: int
    priority: int
    address: str
    last_seen: float
    state: str = ALIVE
    term: int = 0
    leader: str | None = None
    role: str = "discovering"
    endpoint: str = ""
    link_key: str = ""  # CURVE public key of `endpoint`, "" without a cluster secret
    contender: int = 0  # the incarnation of another daemon under this name last reported
    multicast: bool = False  # heard by multicast: no need to send it anything by unicast

    @property
    def rank(self) -> Rank:
        return (self.priority, self.name)

    def next_deadline(self, timing: Timing) -> float:
        if self.state == ALIVE:
            return self.last_seen + timing.suspect_timeout
        return self.last_seen + timing.failure_timeout


class Membership:
    """Owns the peer table; every change comes back as feed events."""

    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        # name -> lowest incarnation still welcome, for peers that are gone: late datagrams
        # of one that said LEAVE, or of an older incarnation of a dead one, must not resurrect it.
        self._floor: dict[str, int] = {}

    def __iter__(self) -> Iterator[Peer]:
        return iter(self._peers.values())

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, name: str | None) -> Peer | None:
        return self._peers.get(name) if name is not None else None

    def observe(
        self, message: Message, address: str, now: float, out: list[Action], settle: float = 0.0
    ) -> tuple[Peer | None, bool]:
        """Record a sign of life. Returns (peer, restarted); peer is None when stale or contending.

        A newer incarnation of a peer whose current one was heard less than `settle` ago is a
        *contender*, not a restart: two daemons with one name (the newcomer refuses to run,
        see `dsd.core.node`), and the one already in the view keeps its place. A real restart
        is taken as soon as the old incarnation has been quiet for `settle`.
        """
        floor = self._floor.get(message.name)
        if floor is not None:
            if message.incarnation < floor:
                return None, False
            del self._floor[message.name]
        peer = self._peers.get(message.name)
        restarted = False
        if peer is not None and message.incarnation < peer.incarnation:
            return None, False
        if peer is not None and message.incarnation > peer.incarnation and now - peer.last_seen < settle:
            return None, False
        if peer is None or message.incarnation > peer.incarnation:
            restarted = peer is not None
            peer = Peer(message.name, message.incarnation, message.priority, address, now)
            self._peers[peer.name] = peer
            out.append(Publish("view.join", {
                "name": peer.name, "address": address, "priority": peer.priority,
                "incarnation": peer.incarnation, "restarted": restarted,
            }))
        elif peer.state == SUSPECT:
            peer.state = ALIVE
            out.append(Publish("view.alive", {"name": peer.name}))
        peer.last_seen = now
        peer.address = address
        if isinstance(message, Heartbeat):
            peer.term, peer.leader, peer.role = message.term, message.leader, message.state
            peer.endpoint, peer.link_key = message.endpoint, message.link_key
        elif isinstance(message, Coordinator):  # so `dsctl view` is current before the next heartbeat
            peer.term, peer.leader, peer.role = message.term, message.name, "leader"
        return peer, restarted

    def nothing_new(self, name: str, incarnation: int) -> bool:
        """That incarnation of `name` is in the view (or a newer one), or known to be gone."""
        peer = self._peers.get(name)
        if peer is not None:
            return incarnation <= peer.incarnation
        return incarnation < self._floor.get(name, 0)

    def remove_left(self, peer: Peer, out: list[Action]) -> None:
        """The peer said LEAVE."""
        del self._peers[peer.name]
        self._floor[peer.name] = peer.incarnation + 1
        out.append(Publish("view.leave", {"name": peer.name}))

    def expire(self, now: float, timing: Timing, out: list[Action]) -> list[Peer]:
        """Apply due suspect/dead transitions; returns the peers found dead."""
        dead = []
        for peer in list(self._peers.values()):
            if now >= peer.last_seen + timing.failure_timeout:
                del self._peers[peer.name]
                self._floor[peer.name] = peer.incarnation
                dead.append(peer)
                # silence: last heard -> declared dead, for the failure-detection histogram
                out.append(Publish("view.dead", {"name": peer.name, "silence": now - peer.last_seen}))
            elif peer.state == ALIVE and now >= peer.last_seen + timing.suspect_timeout:
                peer.state = SUSPECT
                out.append(Publish("view.suspect", {"name": peer.name}))
        return dead

    def forgive(self, now: float) -> None:
        """After this node was paused, count every peer as just heard from."""
        for peer in self._peers.values():
            peer.last_seen = now

    def next_deadline(self, timing: Timing) -> float | None:
        return min((p.next_deadline(timing) for p in self._peers.values()), default=None)

    def highest(self) -> Peer | None:
        """The highest-ranked peer (alive or suspect)."""
        return max(self._peers.values(), key=lambda p: p.rank, default=None)
