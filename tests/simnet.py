"""A deterministic fake network for many `dsd.core.Node`s: loss, delay, crashes, partitions.

Everything runs on a virtual clock driven by one event heap, so fifty nodes and
minutes of protocol time take about a second, and a seed reproduces a run exactly.
Every datagram goes through `dsd.wire` both ways, as on a real network.

Two networks: a multicast group (the default: every Send reaches every connected node), or,
with `unicast`, no multicast at all: each node has an address "10.0.x.y:5008", knows the
seeds it is given, and a datagram reaches only the address it was sent to.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from dsd import wire
from dsd.core import datagrams
from dsd.core.actions import Action, Publish, Send
from dsd.core.node import FOLLOWER, LEADER, Node
from dsd.core.timing import Timing
from dsd.core.unicast import Unicast

FAST = Timing(heartbeat_interval=0.05, failure_timeout=0.25, discovery_timeout=0.05)
ELECTION_TYPES = ("election", "answer", "coordinator")


@dataclass
class SimNode:
    node: Node
    scheduled: float | None = None
    events: list[tuple[float, str, dict]] = field(default_factory=list)


class SimCluster:
    """Nodes on a simulated multicast group."""

    def __init__(
        self,
        seed: int = 0,
        timing: Timing = FAST,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0002, 0.002),
        preempt: bool = True,
        unicast: bool = False,
    ) -> None:
        self.random = random.Random(seed)
        self.unicast = unicast
        self.addresses: dict[str, str] = {}  # name -> "ip:port", stable across restarts
        self._named: dict[str, str] = {}  # "ip:port" -> name
        self.seeds: dict[str, list[str]] = {}  # name -> the names it lists in [cluster] peers
        self.timing = timing
        self.loss = loss
        self.delay = delay
        self.preempt = preempt
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.priorities: dict[str, int] = {}
        self.sent: Counter[str] = Counter()
        self.max_term: dict[tuple[str, int], int] = {}
        self._groups: list[set[str]] | None = None
        # Paused nodes (SIGSTOP, a long GC, a frozen VM): no ticks, and datagrams to them
        # are dropped, or kept in a backlog the kernel would hand over on resume.
        self.paused: dict[str, list[tuple[str, bytes]] | None] = {}
        # Every datagram sent, as (time, source, message), when `trace` is a list.
        self.trace: list[tuple[float, str, datagrams.Message]] | None = None
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self._incarnation = 0

    # ------------------------------------------------------------ membership

    def add(self, name: str, priority: int = 100, seeds: list[str] | None = None) -> Node:
        """Start `name`; with `unicast`, knowing the nodes `seeds` (by default those it knew before)."""
        self._incarnation += 1
        self.priorities[name] = priority
        if seeds is not None:
            self.seeds[name] = seeds
        node = Node(name, priority, self._incarnation, self.timing, self.preempt, address=self.address(name),
                    unicast=self._unicast_of(name))
        self.nodes[name] = SimNode(node)
        self._apply(name, node.start(self.now))
        return node

    def address(self, name: str) -> str:
        if not self.unicast:
            return f"sim:{name}"
        if name not in self.addresses:
            k = len(self.addresses) + 1
            self.addresses[name] = f"10.0.{k // 256}.{k % 256}:5008"
            self._named[self.addresses[name]] = name
        return self.addresses[name]

    def _unicast_of(self, name: str) -> Unicast | None:
        if not self.unicast:
            return None
        seeds = []
        for seed in self.seeds.get(name, []):
            host, _, port = self.address(seed).partition(":")
            seeds.append((self.address(seed), host, int(port), True))
        return Unicast(seeds, self.timing, multicast=False)

    def crash(self, name: str) -> None:
        del self.nodes[name]
        self.paused.pop(name, None)

    def stop(self, name: str) -> None:
        """Clean shutdown: LEAVE, then gone."""
        sim = self.nodes.pop(name)
        self.paused.pop(name, None)
        for action in sim.node.leave(self.now):
            if isinstance(action, Send):
                self._send(name, action)

    def restart(self, name: str) -> Node:
        """Crash (if running) and start again with a new incarnation."""
        self.nodes.pop(name, None)
        self.paused.pop(name, None)
        return self.add(name, self.priorities[name])

    def pause(self, name: str, backlog: bool = False) -> None:
        """Freeze `name`: no ticks; datagrams to it are dropped (or queued, with `backlog`)."""
        self.paused[name] = [] if backlog else None
        self.nodes[name].scheduled = None

    def resume(self, name: str) -> None:
        """Thaw `name` now: its queued datagrams (if any) arrive first, then it ticks."""
        backlog = self.paused.pop(name)
        sim = self.nodes[name]
        for source, data in backlog or ():
            if name in self.nodes:
                self._apply(name, sim.node.receive(wire.decode(data), self.address(source), self.now, self.unicast))
        self._apply(name, sim.node.tick(self.now))

    def elect(self, name: str) -> None:
        """The operator runs `dsctl elect` against `name`."""
        self._apply(name, self.nodes[name].node.request_election(self.now))

    def partition(self, *groups: set[str]) -> None:
        self._groups = [set(g) for g in groups]

    def heal(self) -> None:
        self._groups = None

    def connected(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    # ------------------------------------------------------------------ time

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, deadline: float) -> None:
        while self._heap and self._heap[0][0] <= deadline:
            at, _, kind, payload = heapq.heappop(self._heap)
            self.now = at
            if kind == "tick":
                name = payload
                sim = self.nodes.get(name)  # type: ignore[arg-type]
                if sim is None or sim.scheduled != at or name in self.paused:
                    continue
                sim.scheduled = None
                self._apply(name, sim.node.tick(at))  # type: ignore[arg-type]
            else:
                source, target, data = payload  # type: ignore[misc]
                sim = self.nodes.get(target)
                if target in self.paused:
                    backlog = self.paused[target]
                    if backlog is not None:
                        backlog.append((source, data))
                elif sim is not None:
                    self._apply(target, sim.node.receive(wire.decode(data), self.address(source), at, self.unicast))
        self.now = deadline

    def wait_for(self, condition: Callable[[], bool], within: float, step: float = 0.01) -> bool:
        """Advance virtual time until `condition` holds; False if `within` passes first."""
        deadline = self.now + within
        while self.now < deadline:
            if condition():
                return True
            self.run_for(step)
        return condition()

    # --------------------------------------------------------------- checks

    def live(self) -> list[Node]:
        return [sim.node for sim in self.nodes.values()]

    def leaders(self) -> list[str]:
        """Names of the running nodes whose role is leader."""
        return sorted(n.name for n in self.live() if n.role == LEADER)

    def describe(self) -> str:
        """Each node's (term, leader, role, view), one line each, for assertion messages."""
        lines = [f"t={self.now:.3f} loss={self.loss} groups={self._groups} paused={sorted(self.paused)}"]
        for name in sorted(self.nodes, key=lambda n: (self.priorities[n], n), reverse=True):
            node = self.nodes[name].node
            view = ",".join(
                f"{p.name}{'' if p.state == 'alive' else '?'}"
                for p in sorted(node.peers, key=lambda p: p.rank, reverse=True)
            )
            lines.append(
                f"  {name} prio={node.priority} inc={node.incarnation}: term={node.term} "
                f"leader={node.leader} role={node.role} view=[{view}]"
            )
        return "\n".join(lines)

    def expected_leader(self) -> str:
        return max(self.nodes, key=lambda n: (self.priorities[n], n))

    def agreed(self, check_rank: bool = True) -> bool:
        """The DESIGN.md invariants: one view, one (term, leader), the right leader."""
        nodes = self.live()
        names = set(self.nodes)
        for node in nodes:
            if {p.name for p in node.peers} != names - {node.name}:
                return False
            if any(p.state != "alive" for p in node.peers):
                return False
        beliefs = {(n.term, n.leader) for n in nodes}
        if len(beliefs) != 1:
            return False
        leader = nodes[0].leader
        if leader is None or self.nodes[leader].node.role != LEADER:
            return False
        if sum(n.role == LEADER for n in nodes) != 1:
            return False
        return not check_rank or leader == self.expected_leader()

    def measure(
        self, action: Callable[[], object], condition: Callable[[], bool], within: float, step: float = 0.001
    ) -> tuple[bool, float, Counter[str]]:
        """Do `action`, then run until `condition`: (reached, virtual seconds, datagrams sent by type)."""
        before, start = self.sent.copy(), self.now
        action()
        reached = self.wait_for(condition, within, step)
        return reached, self.now - start, self.sent - before

    def settled(self, check_rank: bool = True) -> bool:
        """`agreed`, and every node but the leader is a plain follower (no election under way)."""
        return self.agreed(check_rank) and all(n.role in (LEADER, FOLLOWER) for n in self.live())

    def events(self, name: str, topic: str | None = None) -> list[tuple[float, str, dict]]:
        return [e for e in self.nodes[name].events if topic is None or e[1] == topic]

    # ------------------------------------------------------------- plumbing

    def _apply(self, name: str, actions: list[Action]) -> None:
        sim = self.nodes[name]
        key = (name, sim.node.incarnation)
        if sim.node.term < self.max_term.get(key, 0):
            raise AssertionError(f"term went backwards on {name}: {self.max_term[key]} -> {sim.node.term}")
        self.max_term[key] = sim.node.term
        for action in actions:
            if isinstance(action, Send):
                self._send(name, action)
            elif isinstance(action, Publish):
                sim.events.append((self.now, action.topic, action.event))
        deadline = sim.node.next_deadline()
        if deadline is not None and deadline != sim.scheduled:
            sim.scheduled = deadline
            self._push(deadline, "tick", name)

    def _send(self, source: str, send: Send) -> None:
        """Multicast: to every node (`to` None); unicast: to the node at each address of `to`."""
        message = send.message
        if send.to is None:
            assert not self.unicast, f"{source} multicast {message} on a network without multicast"
            targets = list(self.nodes)
        else:
            targets = [name for a in send.to if (name := self._named.get(a)) in self.nodes]
        self.sent[message.type_name()] += len(send.to) if send.to is not None else 1  # datagrams sent
        if self.trace is not None:
            self.trace.append((self.now, source, message))
        data = wire.encode(message)
        for target in targets:
            if target == source:  # a unicast datagram to one's own address comes back, through loopback
                if send.to is not None:
                    self._push(self.now, "deliver", (source, target, data))
                continue
            if not self.connected(source, target):
                continue
            if self.random.random() < self.loss:
                continue
            self._push(self.now + self.random.uniform(*self.delay), "deliver", (source, target, data))

    def _push(self, at: float, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))
