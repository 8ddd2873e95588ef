"""A deterministic fake data plane for many `dsd.core.chat.Chat` cores.

Links are per-pair FIFO queues with random delay and (optionally) loss, as ZeroMQ over
TCP is: ordered, but a message in flight can be lost when a connection breaks. The
membership is scripted rather than simulated (the election has its own simulation in
`tests.simnet`): after a crash, every survivor is told, after a detection delay, that the
highest-named survivor leads. Every link message goes through
`dsd.linkwire` both ways. Clients are plain records of what they sent and what the
daemon answered. With a small retention, a daemon that comes back after more than that
many entries catches up from a snapshot: its log then starts after the snapshot's base.
"""

from __future__ import annotations

import heapq
import itertools
import random
import string
from dataclasses import dataclass, field
from typing import Any, Callable

from dsd import linkwire
from dsd.core.actions import Action, Publish, Reply, Transmit
from dsd.core.chat import Chat, ChatLimits
from dsd.store import Base, MemoryStore

LIMITS = ChatLimits(client_timeout=2.0, resend_interval=0.05, request_timeout=1.0, gather_timeout=0.5, rate=1e6, burst=10**6)
DETECTION = 0.25  # crash -> survivors told the new view


def session_of(user: str) -> str:
    return (user * 16)[:16] + "-session"


class SimStore(MemoryStore):
    """A MemoryStore that remembers the snapshots installed in it."""

    def __init__(self, retention: int) -> None:
        super().__init__(retention)
        self.installed: list[int] = []  # the base seq of each

    def install(self, base: Base) -> None:
        super().install(base)
        self.installed.append(base.seq)


def log_of(store: MemoryStore) -> list[tuple[int, str, str]]:
    """A store's retained committed log as (seq, user, id)."""
    return [(e["seq"], e["user"], e["id"]) for e in store.read(0, 10**9, upto=store.committed())]


@dataclass
class SimDaemon:
    chat: Chat
    store: SimStore
    alive: bool = True
    delivered: list[dict[str, Any]] = field(default_factory=list)  # published entries, in order


@dataclass
class SimClient:
    user: str
    server: str
    acked: dict[str, int] = field(default_factory=dict)  # id -> seq
    refused: dict[str, str] = field(default_factory=dict)  # id -> code
    sent: dict[str, str] = field(default_factory=dict)  # id -> text, in order


class ChatSim:
    def __init__(self, names: list[str], seed: int = 0, loss: float = 0.0,
                 delay: tuple[float, float] = (0.0002, 0.002), limits: ChatLimits = LIMITS,
                 retention: int = 100_000) -> None:
        self.random = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.limits = limits
        self.now = 0.0
        self.daemons: dict[str, SimDaemon] = {}
        self.clients: dict[str, SimClient] = {}
        self.replies: dict[int, tuple[str, dict[str, Any] | None, tuple[str, str] | None]] = {}
        self._requests = itertools.count(1)
        self._pending_ids: dict[int, tuple[str, str]] = {}  # request -> (user, id) of a send
        self._heap: list[tuple[float, int, str, Any]] = []
        self._order = itertools.count()
        self._link_free: dict[tuple[str, str], float] = {}  # FIFO: next arrival no earlier than this
        self._incarnations = itertools.count(1)
        self.groups: list[frozenset[str]] | None = None  # a partition: links only within a group
        for name in names:
            store = SimStore(retention)
            self.daemons[name] = SimDaemon(self._chat(name, store), store)
        self.change_view()

    # ------------------------------------------------------------ membership

    def _chat(self, name: str, store: SimStore) -> Chat:
        chat = Chat(name, store, self.limits, wall_offset=1_700_000_000.0, incarnation=next(self._incarnations))
        chat.start(self.now)
        return chat

    def live(self) -> list[str]:
        return sorted(name for name, d in self.daemons.items() if d.alive)

    def change_view(self, keep_leaders: bool = False) -> None:
        """Tell every live daemon: the highest live name of its side leads.

        Each side of a partition elects on its own (split brain); with `keep_leaders`, a side
        whose members all follow a leader among them keeps it, as the bully protocol does when
        peers only go away."""
        for group in self.groups or [frozenset(self.daemons)]:
            live = [name for name in self.live() if name in group]
            leaders = {self.daemons[name].chat.leader for name in live}
            if keep_leaders and len(leaders) == 1 and (kept := leaders.pop()) in live:
                leader = kept
            else:
                leader = live[-1] if live else None
            for name in live:
                peers = {n: 100 for n in live if n != name}
                self._apply(name, self.daemons[name].chat.set_view(leader, peers, self.now))

    def partition(self, *groups: set[str]) -> None:
        """Cut the links between `groups` (together: every daemon). A side that still holds
        the leader all its members follow keeps it; every other side elects at once."""
        self.groups = [frozenset(group) for group in groups]
        self.change_view(keep_leaders=True)

    def heal(self) -> None:
        self.groups = None
        self.change_view()

    def _linked(self, source: str, to: str) -> bool:
        return self.groups is None or any(source in group and to in group for group in self.groups)

    def crash(self, name: str, detect: bool = True) -> None:
        self.daemons[name].alive = False
        if detect:
            self.at(self.now + DETECTION, self.change_view)

    def restart(self, name: str) -> None:
        """A new process on the same store: memory (tail, sessions, outbox) is gone."""
        daemon = self.daemons[name]
        self.daemons[name] = SimDaemon(self._chat(name, daemon.store), daemon.store)
        self.change_view()

    # --------------------------------------------------------------- clients

    def request(self, server: str, call: Callable[[Chat, int], list[Action]], rid: int | None = None) -> int:
        rid = rid or next(self._requests)
        self._apply(server, call(self.daemons[server].chat, rid))
        return rid

    def join(self, user: str, server: str) -> int:
        self.clients[user] = SimClient(user, server)
        return self.request(server, lambda chat, rid: chat.join(rid, user, session_of(user), self.now))

    def send(self, user: str, text: str, id: str | None = None) -> int:
        client = self.clients[user]
        id = id or "".join(self.random.choices(string.ascii_letters, k=12))
        client.sent[id] = text
        rid = next(self._requests)
        self._pending_ids[rid] = (user, id)
        return self.request(client.server, lambda chat, r: chat.send(r, user, session_of(user), id, text, self.now), rid)

    def fail_over(self, user: str, server: str) -> None:
        """The client moves to `server`: joins again with its session, re-sends what was not acknowledged."""
        client = self.clients[user]
        client.server = server
        self.request(server, lambda chat, rid: chat.join(rid, user, session_of(user), self.now))
        self.run_for(0.05)
        for id, text in client.sent.items():
            if id not in client.acked and id not in client.refused:
                self.send(user, text, id)

    def unacked(self) -> dict[str, list[str]]:
        return {
            user: [id for id in c.sent if id not in c.acked and id not in c.refused]
            for user, c in self.clients.items()
        }

    def heartbeat(self, user: str) -> int:
        client = self.clients[user]
        return self.request(client.server, lambda chat, rid: chat.heartbeat(rid, user, session_of(user), self.now))

    # ------------------------------------------------------------------ time

    def at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), "call", callback))

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, deadline: float) -> None:
        while True:
            next_tick = self._next_tick()
            next_event = self._heap[0][0] if self._heap else None
            when = min(t for t in (next_tick, next_event, deadline) if t is not None)
            if when >= deadline and (next_event is None or next_event > deadline) and (
                next_tick is None or next_tick > deadline
            ):
                self.now = deadline
                return
            self.now = max(self.now, when)
            if next_event is not None and next_event <= when:
                _, _, kind, payload = heapq.heappop(self._heap)
                if kind == "call":
                    payload()
                else:
                    source, to, data = payload
                    daemon = self.daemons.get(to)
                    if daemon is not None and daemon.alive and self._linked(source, to):
                        self._apply(to, daemon.chat.receive(linkwire.decode(data), self.now))
            else:
                for name in self.live():
                    chat = self.daemons[name].chat
                    deadline_of = chat.next_deadline()
                    if deadline_of is not None and deadline_of <= self.now:
                        self._apply(name, chat.tick(self.now))

    def wait_for(self, condition: Callable[[], bool], within: float, step: float = 0.01) -> bool:
        end = self.now + within
        while self.now < end:
            if condition():
                return True
            self.run_for(step)
        return condition()

    def _next_tick(self) -> float | None:
        deadlines = [self.daemons[n].chat.next_deadline() for n in self.live()]
        return min((d for d in deadlines if d is not None), default=None)

    # --------------------------------------------------------------- actions

    def _apply(self, name: str, actions: list[Action]) -> None:
        daemon = self.daemons[name]
        for action in actions:
            if isinstance(action, Transmit):
                self._transmit(name, action.to, linkwire.encode(action.message))
            elif isinstance(action, Publish) and action.topic.startswith("chat."):
                daemon.delivered.append(action.event)
            elif isinstance(action, Reply):
                self.replies[action.request] = (name, action.result, action.error)
                ids = self._pending_ids.get(action.request)
                if ids is not None:
                    client = self.clients[ids[0]]
                    if action.result is not None:
                        client.acked[ids[1]] = action.result["seq"]
                    elif action.error is not None:
                        client.refused[ids[1]] = action.error[0]

    def _transmit(self, source: str, to: str, data: bytes) -> None:
        if (self.loss and self.random.random() < self.loss) or not self._linked(source, to):
            return
        arrival = max(self.now + self.random.uniform(*self.delay), self._link_free.get((source, to), 0.0))
        self._link_free[(source, to)] = arrival
        heapq.heappush(self._heap, (arrival, next(self._order), "link", (source, to, data)))

    # ------------------------------------------------------------ invariants

    def logs(self) -> dict[str, list[tuple[int, str, str]]]:
        """Every live daemon's retained committed log as (seq, user, id)."""
        return {name: log_of(self.daemons[name].store) for name in self.live()}

    def check_one_order(self) -> dict[int, tuple[str, str]]:
        """Logs are slices of one sequence of seqs with no gaps, no (user, id) twice; each daemon
        published its entries in that order, skipping only up to a snapshot's base. Returns
        that sequence as far as any daemon retains it: seq -> (user, id)."""
        merged: dict[int, tuple[str, str]] = {}
        for name, log in self.logs().items():
            first = self.daemons[name].store.first_seq()
            assert [seq for seq, _, _ in log] == list(range(first, first + len(log))), f"gap or repeat on {name}"
            for seq, user, id in log:
                assert merged.setdefault(seq, (user, id)) == (user, id), f"{name} disagrees at seq {seq}"
        keys = list(merged.values())
        assert len(keys) == len(set(keys)), "an entry was recorded twice"
        for name in self.live():
            daemon = self.daemons[name]
            delivered = [e["seq"] for e in daemon.delivered]
            for before, seq in zip(delivered, delivered[1:]):
                assert seq == before + 1 or (seq - 1 in daemon.store.installed and seq - 1 > before), (
                    f"{name} published {seq} after {before}"
                )
            assert all(merged.get(e["seq"], (e["user"], e["id"])) == (e["user"], e["id"]) for e in daemon.delivered), (
                f"{name} published an entry that is not the log's"
            )
        return merged

    def check_acked_committed_everywhere(self) -> None:
        """Every acknowledged send is in every live daemon's log at the seq it was acknowledged
        with (or that seq is older than the daemon retains)."""
        logs = {name: {seq: (user, id) for seq, user, id in log} for name, log in self.logs().items()}
        for client in self.clients.values():
            for id, seq in client.acked.items():
                for name, log in logs.items():
                    store = self.daemons[name].store
                    assert seq <= store.committed() and (seq < store.first_seq() or log[seq] == (client.user, id)), (
                        f"{client.user}/{id} acknowledged at {seq} is not there on {name}"
                    )

    def converged(self) -> bool:
        return len({self.daemons[name].store.committed() for name in self.live()}) == 1
