"""The candidate: the view's leader winning an epoch of its own before it sequences.

It raises its epoch (on disk), asks every daemon to promise it (GATHER), and once every voter
of the view has answered (or gather_timeout passed) it adopts the most advanced log of those
who promised, fetching it (FETCH/ENTRIES) without re-stamping a single entry. It sequences only
if those who promised are a quorum of the configuration of that log; its first entry restates
the configuration, so that older entries commit only under one of its epoch. Before the
cluster is formed it forms it from whoever answered (after [chat] bootstrap_expect).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsd.core.actions import Action, Log, Transmit
from dsd.core.chat.config import Config
from dsd.core.chat.roles import ACTIVE, FETCHING, FOLLOWING, GATHERING
from dsd.core.chat.sequencer import FollowerState
from dsd.core.link_messages import Entries, Entry, Fetch, Gather, Status


@dataclass
class Gathering:
    """A candidate's epoch change: promises (with the voters' logs) in, then the best log fetched."""

    started: float
    sent: float
    statuses: dict[str, Status] = field(default_factory=dict)
    best: str | None = None
    fetched: list[Entry] = field(default_factory=list)
    short: str = ""  # why it cannot go on, said in the log already


class Candidate:
    """The candidate's rules; a part of `dsd.core.chat.core.Chat`, whose state it uses."""

    def _start_candidacy(self, now: float, out: list[Action]) -> None:
        """The view made this daemon its leader: win an epoch of its own from a quorum first."""
        if self.role != FOLLOWING:
            self._step_down(out)
        self._promise(max(self.epoch, self.highest_epoch) + 1, self.name)
        self.counters.epochs_started += 1
        self.role = GATHERING
        self.sequencer = None
        self.gathering = Gathering(started=now, sent=now)
        for name in sorted(self.peers):
            out.append(Transmit(name, Gather(self.name, self.epoch, self.cluster)))
        self._gathered(now, out)

    def _on_status(self, message: Status, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if gathering is None or message.term != self.epoch or message.src not in self.peers:
            self.counters.link_messages_ignored += 1
            return
        if self._foreign_to(message.cluster):
            self._note_foreign(message.src, message.cluster, out)
            return
        gathering.statuses[message.src] = message
        if self.role == GATHERING:
            self._gathered(now, out)

    def _gathered(self, now: float, out: list[Action], force: bool = False) -> None:
        """Every voter of the view answered (every daemon, before the cluster is formed), or
        gather_timeout passed: adopt the most advanced log of those who promised, then decide."""
        gathering = self.gathering
        assert gathering is not None
        statuses = {name: s for name, s in gathering.statuses.items() if name in self.peers}
        config = self.log.config
        awaited = set(self.peers) if config is None else config.everyone() & set(self.peers)
        if not force and not awaited <= set(statuses):
            return
        # A log shorter than this daemon's committed prefix cannot be a quorum's (another cluster's).
        logs = [s for s in statuses.values() if s.last >= self.log.commit]
        best = max(logs, key=lambda s: (s.last_term, s.last, s.src), default=None)
        if best is not None and (best.last_term, best.last) > (self.log.last_term, self.log.last):
            self.role = FETCHING
            gathering.best = best.src
            gathering.fetched = []
            gathering.sent = gathering.started = now
            out.append(Transmit(best.src, Fetch(self.name, self.epoch, self.log.commit)))
            return
        self._decide(now, out)

    def _decide(self, now: float, out: list[Action]) -> None:
        """With the best log in hand: sequence if those who promised are a quorum of its configuration."""
        gathering = self.gathering
        assert gathering is not None
        granted = {name for name in gathering.statuses if name in self.peers} | {self.name}
        config = self.log.config
        self.role = GATHERING
        if config is None:
            expect = self.limits.bootstrap_expect
            if len(granted) < expect:
                self._short(f"forming the chat: {len(granted)} of [chat] bootstrap_expect = {expect} daemons here", out)
                return
            voters = {name: self.peers.get(name, self.priority) for name in granted}
            self._activate(now, out, Config(f"{self._incarnation:x}", voters))
            return
        if not config.is_quorum(granted):
            self._short(config.shortfall(granted) + ": not taking messages until more are back", out)
            gathering.started = now
            return
        self._activate(now, out)

    def _short(self, why: str, out: list[Action]) -> None:
        gathering = self.gathering
        assert gathering is not None
        if gathering.short != why:
            gathering.short = why
            out.append(Log("warning", f"chat: {why}"))

    def _on_entries(self, message: Entries, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if self.role != FETCHING or gathering is None or message.src != gathering.best or message.term != self.epoch:
            self.counters.link_messages_ignored += 1
            return
        expected = self.log.commit + len(gathering.fetched) + 1
        best = gathering.statuses[message.src]
        if not message.entries and expected <= best.last:
            self._start_candidacy(now, out)  # its log is shorter than it said: gather anew
            return
        fresh = [e for e in message.entries if e["seq"] >= expected]
        if message.entries and (not fresh or fresh[0]["seq"] != expected):
            return  # the answer to a FETCH sent again, or one after a lost batch: the next one comes
        gathering.fetched.extend(fresh)
        if self.log.commit + len(gathering.fetched) >= best.last:
            self.log.replace_tail(gathering.fetched)
            gathering.fetched = []
            self._decide(now, out)
        else:
            gathering.sent = gathering.started = now  # progress: the fetch timer starts again
            out.append(Transmit(message.src, Fetch(self.name, self.epoch, self.log.commit + len(gathering.fetched))))

    def _activate(self, now: float, out: list[Action], formed: Config | None = None) -> None:
        """The epoch is won: commit what is known committed, restate the configuration, sequence."""
        gathering = self.gathering
        assert gathering is not None
        statuses = {name: s for name, s in gathering.statuses.items() if name in self.peers}
        self.role = ACTIVE
        self.sequencer = self.name
        self.gathering = None
        self._commit_to(min(max((s.commit for s in statuses.values()), default=0), self.log.last), now, out)
        self._pending = {(e["user"], e["id"]): e["seq"] for e in self.log.tail}
        self.presence.forget_uncommitted()
        for entry in self.log.tail:
            self.presence.sequenced(entry)
        self.followers = {name: FollowerState(self.log.commit + 1, 0, now) for name in self.peers}
        for name, status in statuses.items():
            start = min(status.commit, self.log.commit)
            self.followers[name] = FollowerState(start + 1, start, now)
        config = formed or self.log.config
        assert config is not None
        # The epoch's first entry: entries of older epochs commit only under one of this epoch (Raft 5.4.2).
        self._append_config(config, now)
        self.absent, self.dead = {}, set()
        self._note_absent(now)
        what = "forming cluster " + config.cluster if formed else f"epoch {self.epoch}"
        out.append(Log("info", f"chat: sequencing {what} from seq {self.log.last} "
                               f"({len(self.log.tail) - 1} uncommitted before it)"))
        queued, self.queue = self.queue, []
        for proposal in list(self.proposer.outbox.values()) + queued:
            self._sequence(proposal, proposal["server"], now, out)
        self._dirty = True
        self._expire_orphans(now, out)
