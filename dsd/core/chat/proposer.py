"""The proposer: this daemon's clients' proposals, kept until the log says what became of them.

A join, send, leave or timeout becomes a proposal in the outbox, forwarded to the sequencer
and forwarded again every resend interval until it is seen committed or refused, so a change
of sequencer loses nothing. Client requests wait on their proposal until then, or until
their deadline.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from dsd.core.link_messages import Proposal

Key = tuple[str, str]  # (user, id)


@dataclass
class Waiter:
    """A client request waiting for its proposal's fate."""

    request: Any
    kind: str
    deadline: float


class Proposer:
    """Owns the outbox, the waiting requests and the forwarding schedule."""

    def __init__(self, name: str, incarnation: int) -> None:
        self.name = name
        self.outbox: dict[Key, Proposal] = {}
        self.waiting: dict[Key, list[Waiter]] = {}
        self.known: dict[Key, int] = {}  # proposals the sequencer says are committed at seq
        self.fresh: list[Proposal] = []  # proposed since the last flush: forwarded then
        self._forwarded: dict[Key, float] = {}  # outbox keys by when last forwarded, oldest first
        # The waiters by deadline, so that no input scans them all; replied ones are dropped lazily.
        self._deadlines: list[tuple[float, int, Key, Waiter]] = []
        self._deadline_ids = itertools.count()
        self._ids = itertools.count(1)
        # Daemon ids hold ':', which client ids (link_messages.ID_PATTERN) cannot: the two never collide.
        self._id_prefix = f"{incarnation % 36**8:x}"

    def proposal(self, kind: str, user: str, session: str, text: str = "", server: str | None = None) -> Proposal:
        """A proposal made by this daemon (presence), with an id of its own."""
        return {
            "kind": kind, "user": user, "text": text, "id": f"{kind}:{self._id_prefix}:{next(self._ids)}",
            "server": server or self.name, "session": session,
        }

    def add(self, proposal: Proposal, waiter: Waiter | None, now: float) -> Key:
        key = (proposal["user"], proposal["id"])
        if waiter is not None:
            self.wait(key, waiter)
        self.outbox[key] = proposal
        self._forwarded.pop(key, None)
        self._forwarded[key] = now
        return key

    def wait(self, key: Key, waiter: Waiter) -> None:
        """`waiter` waits for the proposal `key` until it is resolved or its deadline passes."""
        self.waiting.setdefault(key, []).append(waiter)
        heapq.heappush(self._deadlines, (waiter.deadline, next(self._deadline_ids), key, waiter))

    def waiting_join(self, user: str, session: str) -> Key | None:
        """The outbox's join of `user` with `session`, if one is pending."""
        for key, proposal in self.outbox.items():
            if proposal["kind"] == "join" and proposal["user"] == user and proposal["session"] == session:
                return key
        return None

    def joining(self, present: set[str]) -> int:
        """Joins pending for users not present here yet (they count against max_clients)."""
        return sum(p["kind"] == "join" and p["user"] not in present for p in self.outbox.values())

    def resolve(self, key: Key) -> list[Waiter]:
        """The proposal `key` is settled: it leaves the outbox; returns who waited for it."""
        self.outbox.pop(key, None)
        self._forwarded.pop(key, None)
        self.known.pop(key, None)
        return self.waiting.pop(key, [])

    def answered(self, key: Key) -> list[Waiter]:
        """The requests waiting on `key`, answered now; the proposal itself stays to be forwarded again."""
        return self.waiting.pop(key, [])

    def known_by(self, commit: int) -> list[tuple[Key, int]]:
        """Proposals the sequencer said are committed at a seq this daemon has now committed too."""
        return [(key, seq) for key, seq in self.known.items() if seq <= commit]

    def expired(self, now: float) -> list[Waiter]:
        """Waiters whose deadline has passed, removed."""
        late = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, key, waiter = heapq.heappop(self._deadlines)
            waiters = self.waiting.get(key, [])
            if not any(w is waiter for w in waiters):
                continue  # replied already
            waiters[:] = [w for w in waiters if w is not waiter]
            if not waiters:
                del self.waiting[key]
            late.append(waiter)
        return late

    def first_deadline(self) -> float | None:
        """The earliest deadline of a waiter still waiting, dropping the replied ones ahead of it."""
        deadlines = self._deadlines
        while deadlines:
            _, _, key, waiter = deadlines[0]
            if any(w is waiter for w in self.waiting.get(key, ())):
                return waiter.deadline
            heapq.heappop(deadlines)
        return None

    def due(self, now: float, interval: float) -> list[Proposal]:
        """Proposals forwarded `interval` ago and not settled: forward them again (now)."""
        due = []
        for key, sent in self._forwarded.items():
            if now < sent + interval:
                break
            due.append(key)
        proposals = []
        for key in due:
            del self._forwarded[key]
            if key in self.outbox:
                proposals.append(self.outbox[key])
                self._forwarded[key] = now
        return proposals

    def hand_over(self, now: float, interval: float) -> None:
        """A new sequencer: every proposal is due at once."""
        self._forwarded = dict.fromkeys(self.outbox, now - interval)

    def next_resend(self, interval: float) -> float | None:
        return next(iter(self._forwarded.values())) + interval if self._forwarded else None
