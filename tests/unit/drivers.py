"""Helpers shared by the unit tests that drive single `Node`s by hand on a fake clock.

Times are plain floats chosen to be exact in binary, so deadlines compare with ==.
"""

from __future__ import annotations

from dsd.core.actions import Action, Publish, Send
from dsd.core.membership import Peer
from dsd.core.node import Node
from dsd.core.timing import Timing
from dsd.core.datagrams import Heartbeat, Message

# heartbeat / election timeout 0.25, suspect 0.5, dead and coordinator timeout 1.0,
# discovery 0.25, probe backoff cap 2.0: all exact binary fractions.
T = Timing(heartbeat_interval=0.25, failure_timeout=1.0, discovery_timeout=0.25)


def addr(name: str) -> str:
    return f"{name}.lan:7946"


def hb(name: str, priority: int, *, inc: int = 1, term: int = 0, leader: str | None = None,
       state: str | None = None, endpoint: str = "", commit: int = 0) -> Heartbeat:
    if state is None:
        state = "leader" if leader == name else "follower"
    return Heartbeat(name, inc, priority, term, leader, state, endpoint, commit)


def published(actions: list[Action], topic: str | None = None) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish) and (topic is None or a.topic == topic)]


def leader_events(actions: list[Action]) -> list[dict]:
    return [a.event for a in published(actions, "leader")]


def sent(actions: list[Action], kind: type | None = None) -> list[Message]:
    return [a.message for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.message, kind))]


class Driver:
    """One Node on a fake clock. Checks that every `leader` event carries (leader, term)."""

    def __init__(self, name: str = "m", priority: int = 100, incarnation: int = 10,
                 timing: Timing = T, preempt: bool = True, at: float = 0.0) -> None:
        self.node = Node(name, priority, incarnation, timing, preempt,
                         address=addr(name), endpoint=f"tcp://{name}.lan:5555")
        self.now = at
        self.history: list[tuple[float, Action]] = []  # every action, with the time it was returned
        self.started = self._record(self.node.start(at))

    def _record(self, out: list[Action]) -> list[Action]:
        events = leader_events(out)
        for event in events:
            assert {"leader", "term"} <= set(event)
            assert event["leader"] is None or isinstance(event["leader"], str)
            assert isinstance(event["term"], int)
        if events:
            assert (events[-1]["leader"], events[-1]["term"]) == (self.node.leader, self.node.term)
        self.history += [(self.now, action) for action in out]
        return out

    def receive(self, message: Message, at: float, address: str | None = None) -> list[Action]:
        """`message` arrives at `at`, from `address` (by default the sender's usual address)."""
        assert at >= self.now
        self.now = at
        return self._record(self.node.receive(message, address or addr(message.name), at))

    def tick(self, at: float) -> list[Action]:
        assert at >= self.now
        self.now = at
        return self._record(self.node.tick(at))

    def advance(self, until: float) -> list[Action]:
        """Tick at every deadline up to and including `until`, as the asyncio layer would."""
        out: list[Action] = []
        while (deadline := self.node.next_deadline()) is not None and deadline <= until:
            at = max(deadline, self.now)  # a deadline already past is due at once
            out += self.tick(at)
            after = self.node.next_deadline()
            assert after is None or after > at, f"tick({at}) left next_deadline() at {after}"
        self.now = max(self.now, until)
        return out

    def run(self, until: float, chatter: list[Message], every: float = 0.25, offset: float = 0.125) -> list[Action]:
        """Advance to `until` while each message in `chatter` arrives at offset + k*every."""
        out: list[Action] = []
        k = 0
        while (at := offset + k * every) <= until:
            if at > self.now:
                out += self.advance(at)
                for message in chatter:
                    out += self.receive(message, at)
            k += 1
        return out + self.advance(until)

    def request_election(self, at: float) -> list[Action]:
        assert at >= self.now
        self.now = at
        return self._record(self.node.request_election(at))

    def state(self) -> tuple[str, str | None, int]:
        return self.node.role, self.node.leader, self.node.term

    def peer(self, name: str) -> Peer | None:
        return self.node.peers.get(name)
