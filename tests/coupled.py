"""The real election drives the chat: `tests.simnet.SimCluster` (dsd.core.node) and
`tests.chatsim.ChatSim` (dsd.core.chat) coupled the way dsd/service.py couples them: after any
membership event, every daemon whose (leader, peers) changed gets set_view. Both simulations
share one virtual clock (lockstep, 1 ms) and one partition map.

The scripted ChatSim alone hands every side of a partition its own leader; the real election
lets two sides share a term and restarts a daemon at term 0, which is what the chat must not
trust (tests/sim/test_chat_safety.py)."""

from __future__ import annotations

from typing import Callable

from dsd.core.chat import ChatLimits
from dsd.core.timing import Timing
from tests.chatsim import LIMITS, ChatSim, SimDaemon, log_of
from tests.simnet import FAST, SimCluster


class ViewlessChatSim(ChatSim):
    """ChatSim whose membership is not scripted: views come from the Node simulation."""

    def change_view(self, keep_leaders: bool = False) -> None:
        pass


class Coupled:
    def __init__(self, names: list[str], limits: ChatLimits = LIMITS, seed: int = 0, timing: Timing = FAST,
                 chat_loss: float = 0.0, retention: int = 100_000) -> None:
        self.net = SimCluster(seed=seed, timing=timing)
        self.chat = ViewlessChatSim(names, seed=seed, limits=limits, loss=chat_loss, retention=retention)
        self.views: dict[str, tuple[str | None, dict[str, int]]] = {}
        self._next_heartbeat = 0.0
        for name in names:
            self.net.add(name)

    # ---------------------------------------------------------------- plumbing
    def sync(self) -> None:
        for name, sn in self.net.nodes.items():
            daemon = self.chat.daemons[name]
            if not daemon.alive:
                continue
            node = sn.node
            view = (node.leader, {p.name: p.priority for p in node.peers})
            if self.views.get(name) != view:
                self.views[name] = view
                self.chat._apply(name, daemon.chat.set_view(view[0], view[1], self.chat.now))

    def heartbeat_clients(self) -> None:
        for user, client in self.chat.clients.items():
            daemon = self.chat.daemons[client.server]
            if daemon.alive and user in daemon.chat.sessions:
                self.chat.heartbeat(user)

    def run_for(self, seconds: float, step: float = 0.001) -> None:
        end = self.chat.now + seconds
        while self.chat.now < end - 1e-9:
            t = min(end, self.chat.now + step)
            self.net.run_until(t)
            self.chat.run_until(t)
            self.sync()
            if t >= self._next_heartbeat:
                self._next_heartbeat = t + 0.3
                self.heartbeat_clients()

    def wait_for(self, condition: Callable[[], bool], within: float) -> bool:
        end = self.chat.now + within
        while self.chat.now < end:
            if condition():
                return True
            self.run_for(0.01)
        return condition()

    # ------------------------------------------------------------------ faults
    def partition(self, *groups: set[str]) -> None:
        self.net.partition(*groups)
        self.chat.groups = [frozenset(g) for g in groups]

    def heal(self) -> None:
        self.net.heal()
        self.chat.groups = None

    def crash(self, name: str) -> None:
        self.net.crash(name)
        self.chat.daemons[name].alive = False
        self.views.pop(name, None)

    def restart(self, name: str) -> None:
        """A new process (new incarnation) on the same store; memory is gone."""
        self.net.nodes.pop(name, None)
        self.net.add(name, self.net.priorities[name])
        old = self.chat.daemons[name]
        self.chat.daemons[name] = SimDaemon(self.chat._chat(name, old.store), old.store)
        self.views.pop(name, None)

    # ----------------------------------------------------------------- queries
    def belief(self, name: str) -> tuple[str | None, int, str, str]:
        node = self.net.nodes[name].node
        chat = self.chat.daemons[name].chat
        return node.leader, node.term, node.role, chat.role

    def store_log(self, name: str) -> list[tuple[int, str, str]]:
        return log_of(self.chat.daemons[name].store)
