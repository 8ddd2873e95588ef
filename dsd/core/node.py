"""One cluster member: membership plus the bully election with terms, as a pure state machine.

Roles::

    discovering --discovery_timeout--> (leader known) follower
                                       (no leader, nobody higher) leader
                                       (no leader, someone higher) candidate
    candidate   --COORDINATOR/claim--> follower
    candidate   --no ANSWER in time--> leader
    follower    --leader dead/left---> candidate, or leader if nobody higher is alive
    leader      --better claim-------> follower
    any         --paused > failure_timeout--> discovering (a leader steps down first)
    discovering --an older daemon with our name--> stopped (Stop: it holds the name)

A leadership *claim* is a COORDINATOR, or a heartbeat whose sender names itself
leader. A claim is accepted when its term is higher than ours, or equal with a
higher-ranked leader (so two leaders of one term resolve to the same winner
everywhere). Terms never go backwards. The highest-ranked node that sees no
live higher node declares itself at once with term = highest term seen + 1, so
an election in a settled view costs one COORDINATOR; lower nodes only fall
back to ELECTION/ANSWER when the higher node stays silent.

Names are unique. A daemon that starts under a name in use hears the holder (which answers
a PROBE under its own name at once) while it is still discovering, and stops: the older
incarnation holds a name. Its peers never take its datagrams for a restart of the holder
while the holder speaks (see `Membership.observe`), so it changes nobody's view.

Where datagrams go: without `unicast`, every Send is for the multicast group. With it
(`[cluster] peers`, or multicast = false), a Send for the cluster is routed on the way out
(`_routed`) to the group if multicast is on and by unicast to the members `Unicast` names;
answers to a unicast PROBE, member lists and probes of seeds go to one address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsd.core.actions import Action, Log, Publish, Send, Stop
from dsd.core.datagrams import (
    Answer, Coordinator, Discover, Election, Heartbeat, Leave, Members, Message, Offer, Probe, is_address,
    member_chunks,
)
from dsd.core.membership import Membership, Peer, Rank
from dsd.core.timing import Timing
from dsd.core.unicast import Unicast

DISCOVERING = "discovering"
FOLLOWER = "follower"
CANDIDATE = "candidate"
LEADER = "leader"

# Candidate phases: waiting for the higher node to declare, ELECTION sent, ANSWER received.
WAITING, ASKED, ANSWERED = "waiting", "asked", "answered"


@dataclass
class Counters:
    """Protocol counters shown by `dsctl stats`."""

    elections_started: int = 0
    elections_won: int = 0
    leader_changes: int = 0
    messages_refused: int = 0
    pauses_detected: int = 0


class Node:
    """Feed it messages and time; it returns the actions to perform."""

    def __init__(
        self,
        name: str,
        priority: int,
        incarnation: int,
        timing: Timing,
        preempt: bool = True,
        address: str = "",
        endpoint: str = "",
        offer: tuple[str, str] | None = None,
        link_key: str = "",
        unicast: Unicast | None = None,
    ) -> None:
        self.name = name
        self.priority = priority
        self.incarnation = incarnation
        self.timing = timing
        self.preempt = preempt
        self.address = address
        self.endpoint = endpoint
        self.link_key = link_key  # CURVE public key of `endpoint`, announced beside it
        self.offer = offer  # (control, feed) TCP endpoints announced to discovering clients
        self.commit = 0
        self.unicast = unicast
        self.peers = Membership()
        self.counters = Counters()
        self.role = DISCOVERING
        self.term = 0
        self.leader: str | None = None
        self._announced: tuple[str | None, int] = (None, 0)
        self._highest_term_seen = 0
        self._started = False
        self._stopped = False
        self._last_input: float | None = None
        self._next_heartbeat = 0.0
        self._discovery_deadline: float | None = None
        self._probe_deadline: float | None = None
        self._probe_interval = timing.discovery_timeout
        self._phase: str | None = None
        self._election_deadline: float | None = None
        self._namesake = 0  # the other incarnation under our name last reported

    @property
    def rank(self) -> Rank:
        return (self.priority, self.name)

    # ----------------------------------------------------------------- inputs

    def start(self, now: float) -> list[Action]:
        """Begin discovery: probe, and hold the first election once answers are in."""
        out: list[Action] = []
        self._started = True
        self._last_input = now
        self._next_heartbeat = now + self.timing.heartbeat_interval
        if self.unicast is not None:
            self.unicast.start(now)
            self._contact_seeds(now, out)
        self._enter_discovery(now, out)
        return self._routed(out, now)

    def receive(self, message: Message, address: str, now: float, direct: bool = False) -> list[Action]:
        """A datagram arrived (already decoded by `dsd.wire`): by multicast, or by unicast if `direct`."""
        out: list[Action] = []
        if self._stopped or not self._started:
            return out
        if isinstance(message, (Discover, Offer)):  # client discovery, not a member's message
            if isinstance(message, Discover) and self.offer is not None:
                out.append(Send(Offer(self.name, message.nonce, *self.offer), to=(address,) if direct else None))
            return out
        self._notice_pause(now, out)
        if message.name == self.name:
            if message.incarnation != self.incarnation:
                self._on_namesake(message, address, direct, out)
            elif direct and self.unicast is not None:
                self.unicast.heard_self(address)
            return self._routed(out, now)
        known = self.peers.get(message.name)
        peer, restarted = self.peers.observe(message, address, now, out, settle=self.timing.suspect_timeout)
        if peer is None:
            self.counters.messages_refused += 1
            if known is not None and known.incarnation < message.incarnation != known.contender:
                known.contender = message.incarnation  # said once per contender, not per datagram
                out.append(Log("warning", f"ignoring a second daemon named {known.name!r} at {address}: "
                                          f"the one at {known.address} has the name and is alive"))
            if direct and isinstance(message, Probe) and self.unicast is not None:
                self._send_members(address, None, out)  # the holder of the name included: a namesake stops
            return self._routed(out, now)
        if not direct:
            peer.multicast = True
        if restarted and self.leader == peer.name:
            self._set_leader(None, out)
        if isinstance(message, Heartbeat):
            self._on_heartbeat(peer, message, now, out)
        elif isinstance(message, Probe):
            if not direct:
                out.append(Send(self._heartbeat()))
        elif isinstance(message, Members):
            if self.unicast is not None:
                self._learn(message, now, out)
        elif isinstance(message, Leave):
            self.peers.remove_left(peer, out)
            if self.leader == peer.name:
                self._set_leader(None, out)
        elif isinstance(message, Election):
            self._on_election(peer, message.term, now, out)
        elif isinstance(message, Answer):
            if message.to == self.name and self.role == CANDIDATE:
                self._phase = ANSWERED
                self._election_deadline = now + self.timing.coordinator_timeout
        elif isinstance(message, Coordinator):
            self._on_claim(peer, message.term, now, out)
        self._settle(now, out)
        introduce = (direct and isinstance(message, Probe)) or (known is not peer and not isinstance(message, Leave))
        if self.unicast is not None and introduce:  # our heartbeat (as of now) and the members we know
            out.append(Send(self._heartbeat(), to=(address,)))
            self._send_members(address, peer.name, out)
        return self._routed(out, now)

    def resolved(self, entry: str, addresses: list[str], now: float) -> list[Action]:
        """The `[cluster] peers` entry `entry` (a `Resolve` action) resolved to `addresses` ("ip:port")."""
        out: list[Action] = []
        if self._stopped or not self._started or self.unicast is None:
            return out
        for address in self.unicast.resolved(entry, addresses, now, out):
            out.append(Send(self._probe(), to=(address,)))
        return out

    def unresolved(self, entry: str, reason: str, now: float) -> list[Action]:
        """The name of `entry` did not resolve: a warning, and a retry with backoff."""
        out: list[Action] = []
        if self._stopped or not self._started or self.unicast is None:
            return out
        self.unicast.unresolved(entry, reason, now, out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Time passed: apply every deadline that is due."""
        out: list[Action] = []
        if self._stopped or not self._started:
            return out
        self._notice_pause(now, out)
        for peer in self.peers.expire(now, self.timing, out):
            if self.unicast is not None:
                self.unicast.lost(peer, now)
            if self.leader == peer.name:
                self._set_leader(None, out)
        if self.unicast is not None:
            self._contact_seeds(now, out)
        if self._probe_deadline is not None and now >= self._probe_deadline:
            self._probe_again(now, out)
        if self._discovery_deadline is not None and now >= self._discovery_deadline:
            self._discovery_deadline = None
            self.role = FOLLOWER
        if self._election_deadline is not None and now >= self._election_deadline:
            self._on_election_timeout(now, out)
        self._settle(now, out)
        if now >= self._next_heartbeat:  # after settling, so it carries this tick's decisions
            out.append(Send(self._heartbeat()))
            self._next_heartbeat = max(
                self._next_heartbeat + self.timing.heartbeat_interval, now + self.timing.heartbeat_interval / 2
            )
        return self._routed(out, now)

    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None once stopped)."""
        if self._stopped or not self._started:
            return None
        candidates = [
            self._next_heartbeat,
            self._discovery_deadline,
            self._probe_deadline,
            self._election_deadline,
            self.peers.next_deadline(self.timing),
            self.unicast.next_deadline() if self.unicast is not None else None,
        ]
        return min(t for t in candidates if t is not None)

    def leave(self, now: float) -> list[Action]:
        """Clean shutdown: tell the group at once (a leader's peers elect immediately)."""
        if self._stopped or not self._started:
            return []
        self._stopped = True
        was_leader = self.role == LEADER
        # Twice: a LEAVE lost by the next-highest node alone would cost a failure_timeout
        # and an O(n^2) ELECTION/ANSWER round; a duplicate is harmless (the peer is gone).
        leave = Send(Leave(self.name, self.incarnation, self.priority))
        out: list[Action] = [leave, leave]
        if was_leader:
            out.append(Log("info", f"leaving as leader of term {self.term}: handing over",
                           {"leader": self.name, "term": self.term}))
        return self._routed(out, now)

    def request_election(self, now: float) -> list[Action]:
        """Operator asked for an election (`dsctl elect`): the highest live node takes over."""
        out: list[Action] = []
        if self._stopped or not self._started:
            return out
        if self.role == DISCOVERING:
            out.append(Log("info", "still discovering: the election runs when discovery ends",
                           {"leader": self.leader, "term": self.term}))
            return out
        self.counters.elections_started += 1
        if self._highest_alive_is_me():
            self._declare(now, out)
        else:
            self._ask_higher(now, out)
        return self._routed(out, now)

    def set_timing(self, timing: Timing, now: float) -> None:
        """New timings (SIGHUP). Deadlines derived from last-heard times follow at once."""
        self.timing = timing
        if self.unicast is not None:
            self.unicast.timing = timing
        self._next_heartbeat = min(self._next_heartbeat, now + timing.heartbeat_interval)

    # --------------------------------------------------------------- handlers

    def _on_namesake(self, message: Message, address: str, direct: bool, out: list[Action]) -> None:
        """A datagram under our name from another incarnation: another daemon has our name."""
        self.counters.messages_refused += 1
        older = message.incarnation < self.incarnation
        if older and self.role == DISCOVERING:
            self._stopped = True
            out.append(Stop(f"the name {self.name!r} is held by the running dsd at {address} "
                            f"(incarnation {message.incarnation}): stop that daemon, or give this one "
                            "another [node] name"))
            return
        if isinstance(message, Probe):  # the newcomer must hear us while it discovers
            out.append(Send(self._heartbeat(), to=(address,) if direct else None))
        if message.incarnation == self._namesake:
            return  # said already: once per namesake, not per datagram
        self._namesake = message.incarnation
        if older:
            out.append(Log("warning", f"an older dsd at {address} has this daemon's name {self.name!r}: the "
                                      "others may not see this one; stop one of them"))
        else:
            out.append(Log("warning", f"another dsd at {address} started with this daemon's name "
                                      f"{self.name!r}; it should refuse to run, and the others ignore it"))

    def _learn(self, message: Members, now: float, out: list[Action]) -> None:
        """A member list: probe the members in it we do not know (they join when they answer)."""
        assert self.unicast is not None
        wanted = []
        for name, address, incarnation in message.members:
            if name == self.name:
                if incarnation != self.incarnation:
                    wanted.append(address)  # another daemon with our name: it must hear us, or we it
            elif not self.peers.nothing_new(name, incarnation):
                wanted.append(address)
        for address in self.unicast.learn(wanted, now):
            out.append(Send(self._probe(), to=(address,)))

    def _send_members(self, address: str, recipient: str | None, out: list[Action]) -> None:
        """Tell `address` every member we know but `recipient` (and ourselves), in as many datagrams as it takes."""
        entries = [(self.name, self.address, self.incarnation)] if self._announceable(self.address) else []
        entries += [(p.name, p.address, p.incarnation) for p in self.peers
                    if p.name != recipient and self._announceable(p.address)]
        for chunk in member_chunks(entries):
            out.append(Send(Members(self.name, self.incarnation, self.priority, chunk), to=(address,)))

    @staticmethod
    def _announceable(address: str) -> bool:
        return is_address(address) and not address.startswith("0.0.0.0:")

    def _contact_seeds(self, now: float, out: list[Action]) -> None:
        assert self.unicast is not None
        for address in self.unicast.due(self.peers, now, out):
            out.append(Send(self._probe(), to=(address,)))

    def _routed(self, out: list[Action], now: float) -> list[Action]:
        """Cluster-wide Sends (no `to`) made concrete: the group, and/or each member by unicast.

        A heartbeat also goes to the members lost to silence a short while ago (see
        `dsd.core.unicast`). Without unicast every Send is already for the group.
        """
        if self.unicast is None:
            return out
        routed: list[Action] = []
        for action in out:
            if not isinstance(action, Send) or action.to is not None or isinstance(action.message, Offer):
                routed.append(action)
                continue
            if self.unicast.multicast:
                routed.append(action)
            to = self.unicast.members_of(self.peers)
            if isinstance(action.message, Heartbeat):
                to += self.unicast.heartbeat_extra(self.peers, now)
            if to:
                routed.append(Send(action.message, to))
        return routed

    def _on_heartbeat(self, peer: Peer, message: Heartbeat, now: float, out: list[Action]) -> None:
        self._highest_term_seen = max(self._highest_term_seen, message.term)
        if message.leader == peer.name:
            self._on_claim(peer, message.term, now, out)
        elif self.leader == peer.name and message.term >= self.term:
            # Our leader says it no longer leads: stop following it.
            self._set_leader(None, out)

    def _on_claim(self, peer: Peer, term: int, now: float, out: list[Action]) -> None:
        self._highest_term_seen = max(self._highest_term_seen, term)
        current = self._leader_rank()
        if term < self.term or (term == self.term and current is not None and peer.rank <= current):
            if self.role == LEADER and peer.name != self.name:
                out.append(Send(self._coordinator()))  # tell the stale claimer who leads
            elif self.role == CANDIDATE and term == self.term and peer.name == self.leader:
                # Our leader answered the election we asked for (dsctl elect): it stays.
                self._clear_election()
                self.role = FOLLOWER
            return
        self.term = term
        self._clear_election()
        self._set_leader(peer.name, out)
        if self.role == CANDIDATE:
            self.role = FOLLOWER

    def _on_election(self, peer: Peer, term: int, now: float, out: list[Action]) -> None:
        self._highest_term_seen = max(self._highest_term_seen, term)
        if peer.rank > self.rank:
            return
        if self._highest_alive_is_me() and self.role != DISCOVERING:
            if self.role == LEADER and term <= self.term:
                out.append(Send(self._coordinator()))
            else:
                if self.role == LEADER:
                    # The candidate accepted a newer term than ours and can never take our
                    # COORDINATOR: lead again in a term above every term seen.
                    out.append(Log("info", f"ELECTION from {peer.name} in term {term} > {self.term}: re-declaring",
                                   {"peer": peer.name, "peer_term": term, "leader": self.name, "term": self.term}))
                self.counters.elections_started += 1
                self._declare(now, out)
            return
        # A discovering node answers too: it will hold its own election when discovery ends.
        out.append(Send(Answer(self.name, self.incarnation, self.priority, self.term, peer.name)))

    def _on_election_timeout(self, now: float, out: list[Action]) -> None:
        if self._phase == ASKED:
            out.append(Log("info", "no ANSWER from any higher node: taking over",
                           {"leader": self.leader, "term": self.term}))
            self._declare(now, out)
        else:
            self._ask_higher(now, out)

    # ---------------------------------------------------------------- helpers

    def _settle(self, now: float, out: list[Action]) -> None:
        """After any input: start an election if one is needed."""
        if self.role in (DISCOVERING, LEADER):
            return
        if self.leader is None:
            if self.role != CANDIDATE:
                self.counters.elections_started += 1
            if self._highest_alive_is_me():
                self._declare(now, out)
            elif self.role != CANDIDATE:
                self.role = CANDIDATE
                self._phase = WAITING
                self._election_deadline = now + self.timing.election_timeout
        elif self.preempt and self.rank > self._leader_rank() and self._highest_alive_is_me():  # type: ignore[operator]
            out.append(Log("info", f"preempting lower-ranked leader {self.leader}",
                           {"peer": self.leader, "leader": self.leader, "term": self.term}))
            self.counters.elections_started += 1
            self._declare(now, out)

    def _declare(self, now: float, out: list[Action]) -> None:
        self.term = max(self.term, self._highest_term_seen) + 1
        self._highest_term_seen = self.term
        self._clear_election()
        self._discovery_deadline = None
        self.role = LEADER
        self.counters.elections_won += 1
        self._set_leader(self.name, out)
        out.append(Send(self._coordinator()))

    def _ask_higher(self, now: float, out: list[Action]) -> None:
        self.role = CANDIDATE
        self._phase = ASKED
        self._election_deadline = now + self.timing.election_timeout
        out.append(Send(Election(self.name, self.incarnation, self.priority, self.term)))

    def _clear_election(self) -> None:
        self._phase = None
        self._election_deadline = None

    def _set_leader(self, leader: str | None, out: list[Action]) -> None:
        """Record and publish (leader, term); a new term with the same leader is news too."""
        if (leader, self.term) == self._announced:
            return
        previous, self.leader = self.leader, leader
        self._announced = (leader, self.term)
        if self.role == LEADER and leader != self.name:
            self.role = FOLLOWER
            out.append(Log("info", f"stepping down in term {self.term}", {"leader": leader, "term": self.term}))
        if leader is not None and leader != previous:
            self.counters.leader_changes += 1
        out.append(Publish("leader", {"leader": leader, "term": self.term, "previous": previous}))
        out.append(Log("info", f"leader is now {leader} (term {self.term})",
                       {"leader": leader, "previous": previous, "term": self.term}))

    def _leader_rank(self) -> Rank | None:
        if self.leader == self.name:
            return self.rank
        peer = self.peers.get(self.leader)
        return peer.rank if peer is not None else None

    def _highest_alive_is_me(self) -> bool:
        highest = self.peers.highest()
        return highest is None or highest.rank < self.rank

    def _enter_discovery(self, now: float, out: list[Action]) -> None:
        self.role = DISCOVERING
        self._clear_election()
        self._discovery_deadline = now + self.timing.discovery_timeout
        self._probe_interval = self.timing.discovery_timeout
        self._probe_deadline = now + self._probe_interval
        out.append(Send(self._probe()))

    def _probe_again(self, now: float, out: list[Action]) -> None:
        """Re-probe with backoff until someone answers."""
        if len(self.peers):
            self._probe_deadline = None
            return
        self._probe_interval = min(2 * self._probe_interval, self.timing.max_probe_interval)
        self._probe_deadline = now + self._probe_interval
        out.append(Send(self._probe()))

    def _notice_pause(self, now: float, out: list[Action]) -> None:
        """Inputs arrive at least every heartbeat; a longer gap means we were stopped.

        Peers have probably declared us dead and elected someone else, so a leader
        steps down, and everyone re-discovers instead of timing out every peer.
        """
        last, self._last_input = self._last_input, now
        if last is None or now - last <= self.timing.failure_timeout:
            return
        self.counters.pauses_detected += 1
        out.append(Log("warning", f"paused for {now - last:.2f}s: re-discovering the cluster",
                       {"paused": round(now - last, 3), "leader": self.leader, "term": self.term}))
        self.peers.forgive(now)
        if self.leader == self.name:
            self._set_leader(None, out)
        self._enter_discovery(now, out)

    def _heartbeat(self) -> Heartbeat:
        return Heartbeat(
            self.name, self.incarnation, self.priority, self.term, self.leader,
            self.role, self.endpoint, self.commit, self.link_key,
        )

    def _probe(self) -> Probe:
        return Probe(self.name, self.incarnation, self.priority)

    def _coordinator(self) -> Coordinator:
        return Coordinator(self.name, self.incarnation, self.priority, self.term)

    # ------------------------------------------------------------- snapshots

    def view(self, now: float) -> dict[str, Any]:
        """The `dsctl view --json` document."""
        me = {
            "name": self.name, "address": self.address, "priority": self.priority,
            "state": "alive", "leader": self.leader, "term": self.term, "last_seen": 0.0,
            "role": self.role,
        }
        servers = [me] + [
            {
                "name": p.name, "address": p.address, "priority": p.priority, "state": p.state,
                "leader": p.leader, "term": p.term, "last_seen": round(max(0.0, now - p.last_seen), 3),
                "role": p.role,
            }
            for p in self.peers
        ]
        servers.sort(key=lambda s: (s["priority"], s["name"]), reverse=True)
        return {"self": self.name, "term": self.term, "leader": self.leader, "servers": servers}
