"""Unicast reach, for networks without multicast (issue 11): who gets each datagram.

Pure, like the rest of core/: `dsd.core.node.Node` asks it where its datagrams go and
feeds it what the I/O layer found (resolved names, datagrams from our own address). Three
kinds of address, all ``"ip:port"``:

- **members**, the peers in the view, at the address their datagrams come from: every
  cluster-wide message goes to each of them (n-1 datagrams). With multicast on as well,
  a member heard by multicast gets it that way only.
- **seeds**, the configured ``[cluster] peers``. A seed is *absent* while no member
  answers from any of its addresses; an absent seed is probed at once, then with backoff
  (discovery_timeout doubling up to max_probe_interval) for as long as it stays absent
  (Consul's retry_join), so daemons started in any order form one cluster. A host name is
  resolved (a `Resolve` action, answered by `resolved` or `unresolved`) before every probe:
  addresses change in clouds, and a name that does not resolve is retried on the same
  schedule. A seed that is this daemon itself (the same list on every host) is recognised
  when its probe comes back under our own name and incarnation, and left alone.
- **lost** members, dead by silence (not LEAVE): they keep getting our heartbeat for
  `LOST_TIMEOUTS` failure_timeouts, so once a partition heals the two sides hear each other
  within a heartbeat, as over multicast, however many seeds each side lists.

Learning members (memberlist's push/pull): a PROBE by unicast is answered with a heartbeat
and the member list, and a daemon sends its list to every member it adds; members named in a
list that are not in the view are probed (each address once per `suspect_timeout`), and
join the view only when they answer. Whichever of two members a third one adds last hears
of the other, so the members known to one reachable daemon all end up knowing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from dsd.core.actions import Action, Log, Resolve
from dsd.core.membership import Peer
from dsd.core.timing import Timing

LOST_TIMEOUTS = 30  # a member lost to silence still gets heartbeats for this many failure_timeouts
MAX_LOST = 256  # lost addresses kept; the oldest goes first


@dataclass
class Seed:
    """One `[cluster] peers` entry and its retry state."""

    entry: str  # as configured, e.g. "db-2.example.com:5008"
    host: str
    port: int
    literal: bool  # an IPv4 address: nothing to resolve
    addresses: tuple[str, ...] = ()
    present: bool = False
    resolving: bool = False
    unresolvable: bool = False  # the last resolution failed (said once per failing streak)
    next_try: float = 0.0
    interval: float = 0.0


class Unicast:
    """The unicast side of one node: seeds, lost members, addresses asked recently."""

    def __init__(self, seeds: Iterable[tuple[str, str, int, bool]], timing: Timing, multicast: bool) -> None:
        self.timing = timing
        self.multicast = multicast
        self.seeds = [Seed(entry, host, port, literal, (f"{host}:{port}",) if literal else ())
                      for entry, host, port, literal in seeds]
        self.own: set[str] = set()  # addresses our own datagrams came back from
        self._lost: dict[str, float] = {}  # address -> until when it gets our heartbeat
        self._asked: dict[str, float] = {}  # address -> until when it is not probed again

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> None:
        for seed in self.seeds:
            seed.next_try, seed.interval = now, self.timing.discovery_timeout

    def resolved(self, entry: str, addresses: Iterable[str], now: float, out: list[Action]) -> tuple[str, ...]:
        """A name resolved: the addresses of its seed to probe now (it is absent)."""
        seed = self._seed(entry)
        if seed is None:
            return ()
        seed.resolving = False
        seed.addresses = tuple(dict.fromkeys(addresses))
        if seed.unresolvable:
            seed.unresolvable = False
            out.append(Log("info", f"[cluster] peers: {seed.host!r} resolves again, to {', '.join(seed.addresses)}",
                           {"peer": seed.entry}))
        return self._probe_targets(seed) if not seed.present else ()

    def unresolved(self, entry: str, reason: str, now: float, out: list[Action]) -> None:
        """A name did not resolve: warn once, and retry on the seed's schedule."""
        seed = self._seed(entry)
        if seed is None:
            return
        seed.resolving = False
        level = "debug" if seed.unresolvable else "warning"
        seed.unresolvable = True
        out.append(Log(level, f"[cluster] peers: cannot resolve {seed.host!r} ({reason}); "
                              f"retrying in {max(0.0, seed.next_try - now):.2g}s and then with backoff",
                       {"peer": seed.entry}))

    def heard_self(self, address: str) -> None:
        """One of our own datagrams came back from `address`: a seed there is this daemon."""
        self.own.add(address)

    def lost(self, peer: Peer, now: float) -> None:
        """`peer` fell silent: keep sending it heartbeats for a while (a partition may heal)."""
        self._lost.pop(peer.address, None)
        self._lost[peer.address] = now + LOST_TIMEOUTS * self.timing.failure_timeout
        while len(self._lost) > MAX_LOST:
            del self._lost[next(iter(self._lost))]

    # ----------------------------------------------------------------- outputs

    def members_of(self, peers: Iterable[Peer]) -> tuple[str, ...]:
        """Where a cluster-wide message goes by unicast."""
        return tuple(p.address for p in peers if not (self.multicast and p.multicast))

    def heartbeat_extra(self, peers: Iterable[Peer], now: float) -> tuple[str, ...]:
        """Lost members still due a heartbeat (those back in the view are members again)."""
        addresses = {p.address for p in peers}
        for address, until in list(self._lost.items()):
            if until <= now or address in addresses:
                del self._lost[address]
        return tuple(self._lost)

    def learn(self, wanted: Iterable[str], now: float) -> tuple[str, ...]:
        """Of the addresses in `wanted` (members a list named that we do not know), the ones to probe now."""
        for address, until in list(self._asked.items()):
            if until <= now:
                del self._asked[address]
        fresh = [a for a in dict.fromkeys(wanted) if a not in self._asked and a not in self.own]
        for address in fresh:
            self._asked[address] = now + self.timing.suspect_timeout
        return tuple(fresh)

    def due(self, peers: Iterable[Peer], now: float, out: list[Action]) -> tuple[str, ...]:
        """Seeds whose retry is due: the addresses to probe now (names get a `Resolve` first)."""
        addresses = {p.address for p in peers}
        probe: list[str] = []
        for seed in self.seeds:
            present = any(a in addresses for a in seed.addresses)
            if seed.present and not present:  # it was a member and is gone: try again soon
                seed.next_try, seed.interval = now, self.timing.discovery_timeout
            seed.present = present
            if present or self._is_self(seed) or seed.resolving or now < seed.next_try:
                continue
            if seed.literal:
                probe.extend(self._probe_targets(seed))
            else:
                seed.resolving = True
                out.append(Resolve(seed.entry, seed.host, seed.port))
            seed.next_try = now + seed.interval
            seed.interval = min(2 * seed.interval, self.timing.max_probe_interval)
        return tuple(probe)

    def next_deadline(self) -> float | None:
        waiting = [s.next_try for s in self.seeds if not (s.present or s.resolving or self._is_self(s))]
        return min(waiting, default=None)

    # ---------------------------------------------------------------- helpers

    def _seed(self, entry: str) -> Seed | None:
        return next((s for s in self.seeds if s.entry == entry), None)

    def _is_self(self, seed: Seed) -> bool:
        return bool(seed.addresses) and all(a in self.own for a in seed.addresses)

    def _probe_targets(self, seed: Seed) -> tuple[str, ...]:
        return tuple(a for a in seed.addresses if a not in self.own)
