"""`Chat`: the roles of one daemon in the chat log, composed. The rules are in the package docstring."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsd.core.actions import Action, Log, Publish, Reply, Transmit
from dsd.core.chat.config import Config, quorum_of
from dsd.core.chat.log import ChatLog
from dsd.core.chat.presence import Presence, Session
from dsd.core.chat.proposer import Key, Proposer, Waiter
from dsd.linkwire import (
    ID_PATTERN, MAX_BATCH, PUBLIC_KEYS, SESSION_PATTERN, USER_PATTERN, Ack, Append, Entries, Entry, Fetch,
    Forward, Gather, LinkMessage, Proposal, Refuse, Remove, Result, Snapshot, Status, fitting, utf8_size,
)
from dsd.store import Base, ChatState, Store

FOLLOWING, GATHERING, FETCHING, ACTIVE = "following", "gathering", "fetching", "active"
VOTER, CATCHING_UP, OTHER_CLUSTER = "voter", "catching up", "other cluster"
WINDOW = 4 * MAX_BATCH  # entries in flight to one follower
MAX_TAIL = 20_000  # uncommitted entries before the sequencer refuses new proposals
MAX_REPLY_BYTES = 256 * 1024  # of entry text per history/since reply: a client pages on
ENTRY_OVERHEAD = 200  # bytes of an entry's JSON besides its text, roughly


@dataclass(frozen=True)
class ChatLimits:
    """[chat] settings the core needs, and its retry intervals."""

    client_timeout: float = 10.0
    max_message: int = 4096
    rate: float = 20.0
    burst: int = 50
    max_clients: int = 1000
    bootstrap_expect: int = 0  # [chat] bootstrap_expect: daemons to wait for before forming; 0 = whoever is there
    remove_dead_after: float = 30.0
    resend_interval: float = 0.2
    request_timeout: float = 5.0
    gather_timeout: float = 2.0


@dataclass
class Counters:
    """Chat counters shown by `dsctl stats`."""

    entries_sequenced: int = 0
    entries_committed: int = 0
    proposals_forwarded: int = 0
    proposals_refused: int = 0
    duplicates_dropped: int = 0
    link_messages_ignored: int = 0
    snapshots_sent: int = 0  # to a daemon behind the retained history
    snapshots_installed: int = 0
    epochs_started: int = 0
    config_changes: int = 0


@dataclass
class FollowerState:
    """What the sequencer knows of one follower's log."""

    next: int
    match: int  # the follower's log is known to match ours up to here (log matching)
    progress: float  # when the follower last acknowledged something new (or was sent something)
    told: int = 0  # the commit point last sent to it
    commit: int = 0  # the commit point it acknowledged
    trimmed: bool = False  # it needs entries this sequencer no longer keeps and cannot snapshot (reported once)


@dataclass
class Gathering:
    """A candidate's epoch change: promises (with the voters' logs) in, then the best log fetched."""

    started: float
    sent: float
    statuses: dict[str, Status] = field(default_factory=dict)
    best: str | None = None
    fetched: list[Entry] = field(default_factory=list)
    short: str = ""  # why it cannot go on, said in the log already


def _fitting_reply(entries: Iterable[Entry]) -> list[Entry]:
    """The leading `entries` that fit MAX_REPLY_BYTES (at least one): a reply a client never
    reads stays queued in the daemon, so its size is what bounds that memory."""
    fitting_: list[Entry] = []
    size = 0
    for entry in entries:
        size += len(entry["text"].encode()) + ENTRY_OVERHEAD
        if fitting_ and size > MAX_REPLY_BYTES:
            break
        fitting_.append(entry)
    return fitting_


def public(entry: Entry) -> dict[str, Any]:
    """An entry as clients see it (no term, no session token)."""
    return {key: entry[key] for key in PUBLIC_KEYS}


class Chat:
    """Feed it link messages, client requests, view changes and time; it returns actions."""

    def __init__(self, name: str, store: Store, limits: ChatLimits, wall_offset: float, incarnation: int,
                 priority: int = 100) -> None:
        self.name = name
        self.priority = priority
        self.store = store
        self.limits = limits
        self.wall_offset = wall_offset  # wall clock = wall_offset + now: entry times without reading a clock
        self.counters = Counters()
        self.log = ChatLog(store)
        state = store.state()
        self.cluster = state.cluster  # the cluster whose configuration this daemon has committed
        self.epoch = state.epoch  # the newest epoch this daemon promised or took part in (on disk)
        self.voted_for = state.voted_for  # whom it promised `epoch` to, "" for nobody yet
        self.highest_epoch = self.epoch
        self.leader: str | None = None  # the bully leader of this daemon's view
        self.peers: dict[str, int] = {}  # the live peers of the view, with their priorities
        self.role = FOLLOWING
        self.sequencer: str | None = None  # whom this daemon follows in `epoch`
        self.verified = self.log.commit  # follower: log matching checked up to here in `epoch`
        self.presence = Presence(name, store.users(), limits.burst)
        self.proposer = Proposer(name, incarnation)
        self._incarnation = incarnation
        self._heard_sequencer = 0.0  # when the sequencer followed last sent something
        self.followers: dict[str, FollowerState] = {}
        self.gathering: Gathering | None = None
        self.queue: list[Proposal] = []  # proposals held while this candidate gathers
        self.absent: dict[str, float] = {}  # sequencer: voters out of the view, since when
        self.dead: set[str] = set()  # sequencer: absent voters past remove_dead_after
        self.removals: set[str] = set()  # sequencer: voters asked to be removed
        self.excluded: set[str] = set()  # sequencer: removed on request; not added back while still in the view
        self.foreign: dict[str, str] = {}  # daemons that belong to another cluster, and its id
        self.retiring = False  # leaving: asking the sequencer to remove this daemon
        self._retire_sent = 0.0
        self._pending: dict[Key, int] = {}  # sequencer: uncommitted entries by (user, id)
        self._snapshot: tuple[tuple[str, int, int, int, int], list[Entry]] | None = None  # parts so far
        # Output gathered over a batch of inputs (see `hold`) and returned by `release`:
        self._held: list[Action] | None = None
        self._dirty = False  # sequencer: new entries, acks or a view change to act on
        self._ack_due: str | None = None  # follower: the sequencer is owed an ACK

    # ------------------------------------------------------------ read-only views

    @property
    def commit(self) -> int:
        return self.log.commit

    @property
    def sessions(self) -> dict[str, Session]:
        return self.presence.sessions

    @property
    def config(self) -> Config | None:
        return self.log.config

    def start(self, now: float) -> None:
        """Users the log places on this server, from before a restart, get client_timeout to come back."""
        self.presence.sync_sessions(now)

    def roles(self) -> dict[str, str]:
        """Each daemon this one knows of: voter, catching up, or other cluster."""
        config = self.log.config
        voters = config.everyone() if config else set()
        roles = {name: VOTER for name in voters}
        for name in [*self.peers, self.name]:
            roles.setdefault(name, OTHER_CLUSTER if name in self.foreign else CATCHING_UP)
        return dict(sorted(roles.items()))

    def retired(self) -> bool:
        """Leaving: the committed configuration no longer holds this daemon (or never did), or
        it is the last voter, which stays one."""
        config = self.log.config
        if config is None or set(config.everyone()) == {self.name}:
            return True
        return self.name not in config.everyone() and self.log.config_seq <= self.log.commit

    # ----------------------------------------------------------- cluster view

    def set_view(self, leader: str | None, peers: Mapping[str, int], now: float) -> list[Action]:
        """The membership changed: the bully leader, or the live peers (name -> priority)."""
        out: list[Action] = []
        gone = set(self.peers) - set(peers)
        self.peers = dict(peers)
        for name in gone:
            self.foreign.pop(name, None)
        self.excluded &= set(peers) | {self.name}
        if leader != self.leader:
            self.leader = leader
            self.proposer.hand_over(now, self.limits.resend_interval)
            if leader == self.name:
                self._start_candidacy(now, out)
            elif self.role != FOLLOWING:
                self._step_down(out)
        elif self.role == ACTIVE:
            for name in gone:
                self.followers.pop(name, None)
            for name in self.peers:
                self.followers.setdefault(name, FollowerState(self.log.commit + 1, 0, now))
            self._dirty = True
        elif self.role == GATHERING:
            self._gathered(now, out)
        elif self.role == FETCHING and self.gathering is not None and self.gathering.best in gone:
            self._start_candidacy(now, out)
        if self.role == ACTIVE:
            self._note_absent(now)
            self._expire_orphans(now, out)
        self._answer_short_of_quorum(out)
        return self._done(now, out)

    def _answer_short_of_quorum(self, out: list[Action]) -> None:
        """This side just lost its quorum: tell every waiting client now, not at its deadline. The
        proposals stay in the outbox; a client's re-send under the same id is recorded once."""
        error = self._quorum_error()
        if error is None:
            return
        for key in list(self.proposer.waiting):
            for waiter in self.proposer.answered(key):
                out.append(Reply(waiter.request, error=error))

    def _step_down(self, out: list[Action]) -> None:
        """No longer the sequencer (or candidate): others' proposals go back to their proposers."""
        for proposal in self.queue:
            if proposal["server"] == self.name:
                self.proposer.outbox.setdefault((proposal["user"], proposal["id"]), proposal)
        self.role = FOLLOWING
        self.queue = []
        self.followers = {}
        self.gathering = None
        self._pending = {}
        self.presence.forget_uncommitted()
        self.absent = {}
        self.dead = set()
        self.removals = set()

    def _promise(self, epoch: int, voted_for: str) -> None:
        """Raise this daemon's epoch (and say to whom it is promised): on disk before anything is said."""
        self.epoch, self.voted_for = epoch, voted_for
        self.highest_epoch = max(self.highest_epoch, epoch)
        self.store.save_state(ChatState(self.cluster, epoch, voted_for))

    def _log_cluster(self) -> str:
        """The cluster of this daemon's log: its committed one, else its latest configuration's
        (what a sequencer replicates). A candidate claims only a committed cluster: an
        uncommitted formation may have lost to another and is adopted away from."""
        config = self.log.config
        return self.cluster or (config.cluster if config else "")

    def _foreign_to(self, cluster: str) -> bool:
        return bool(self.cluster) and bool(cluster) and cluster != self.cluster

    def _note_foreign(self, name: str, cluster: str, out: list[Action]) -> None:
        """`name` belongs to another chat cluster: said once, and nothing of it is taken or sent."""
        if self.foreign.get(name) != cluster:
            self.foreign[name] = cluster
            out.append(Log("warning", f"chat: {name} belongs to chat cluster {cluster or '?'}, this daemon to "
                                      f"{self._log_cluster()}: the two never merge (see README, two chat clusters)"))

    # ------------------------------------------------------------- candidate

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

    # ---------------------------------------------------------------- voter

    def _on_gather(self, message: Gather, out: list[Action]) -> None:
        """Promise the epoch to the view's leader, unless a newer one or another daemon has it."""
        refusal = None
        if self._foreign_to(message.cluster):
            refusal = "cluster"
            self._note_foreign(message.src, message.cluster, out)
        elif message.term < self.epoch or (message.term == self.epoch and self.voted_for not in ("", message.src)):
            refusal = "epoch"
        elif message.src != self.leader:
            refusal = "leader"  # it asks again; by then the views may agree
        if refusal is not None:
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, refusal)))
            return
        if (message.term, message.src) != (self.epoch, self.voted_for):
            if self.role != FOLLOWING:
                self._step_down(out)
            self._promise(message.term, message.src)
        self.sequencer = message.src
        self.verified = self.log.commit
        out.append(Transmit(message.src, Status(self.name, self.epoch, self.cluster, self.log.commit,
                                                self.log.last, self.log.last_term)))

    def _on_refuse(self, message: Refuse, now: float, out: list[Action]) -> None:
        if message.reason == "cluster":
            self._note_foreign(message.src, message.cluster, out)
            return
        self.highest_epoch = max(self.highest_epoch, message.term)
        if message.reason == "epoch" and message.term >= self.epoch and self.role != FOLLOWING:
            self._start_candidacy(now, out)  # a newer epoch exists: win one newer still

    def _accept_sequencer(self, message: Append | Snapshot, out: list[Action]) -> bool:
        """Whether `message` comes from the sequencer of an epoch this daemon may follow; follow it if so."""
        if self._foreign_to(message.cluster):
            self._note_foreign(message.src, message.cluster, out)
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "cluster")))
            return False
        if message.term < self.epoch:
            self.counters.link_messages_ignored += 1
            out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "epoch")))
            return False
        if message.term == self.epoch and self.sequencer == message.src:
            return True
        if self.role != FOLLOWING:
            self._step_down(out)  # it won this epoch or a newer one: only one daemon can
        self._promise(message.term, message.src)
        self.sequencer = message.src
        self.verified = self.log.commit
        return True

    def _on_append(self, message: Append, now: float, out: list[Action]) -> None:
        if not self._accept_sequencer(message, out):
            return
        self._heard_sequencer = now
        log = self.log
        if message.prev > log.last or not log.matches(message.prev, message.prev_term):
            need = log.last + 1 if message.prev > log.last else log.commit + 1
            out.append(Transmit(message.src, Ack(self.name, self.epoch, self.verified, log.commit, need)))
            return
        for entry in message.entries:
            seq = entry["seq"]
            held = log.term_at(seq)
            if seq <= log.commit:
                if held is not None and held != entry["term"]:  # never, by invariant 5: say so, take nothing
                    out.append(Log("error", f"chat: {message.src} sends seq {seq} of epoch {entry['term']}, "
                                            f"committed here in epoch {held}: refused"))
                    return
                continue
            if held == entry["term"]:
                continue  # the same entry (log matching)
            if held is not None:
                log.truncate(seq - 1)
            log.append([entry])
        self.verified = max(self.verified, message.prev + len(message.entries))
        committed = log.commit
        target = min(message.commit, self.verified)
        config = log.config
        if config is not None and config.is_quorum({message.src, self.name}) and log.term_at(self.verified) == self.epoch:
            target = self.verified  # the sequencer and this daemon are a quorum: held by both, it is committed
        self._commit_to(target, now, out)
        if message.entries or log.commit > committed:
            self._ack_due = message.src

    def _on_fetch(self, message: Fetch, out: list[Action]) -> None:
        if (message.term, message.src) != (self.epoch, self.voted_for):
            self.counters.link_messages_ignored += 1
            if message.term <= self.epoch:  # promised to another since: the candidate must try anew
                out.append(Transmit(message.src, Refuse(self.name, self.epoch, self.cluster, "epoch")))
            return
        after = message.after
        base = self.store.base() if after < self.store.first_seq() - 1 else None
        if base is not None:
            out.extend(Transmit(message.src, part) for part in self._snapshot_parts(base))
            after = base.seq
        out.append(Transmit(message.src, Entries(self.name, self.epoch, fitting(self.log.read(after, MAX_BATCH)))))

    def _on_snapshot(self, message: Snapshot, now: float, out: list[Action]) -> None:
        """A part of a snapshot from the sequencer or, while this candidate fetches, from its source."""
        gathering = self.gathering
        fetching = self.role == FETCHING and gathering is not None and message.src == gathering.best
        if fetching:
            if message.term != self.epoch:
                return
        elif not self._accept_sequencer(message, out):
            return
        base = self._assemble(message)
        if base is None:
            return
        held = self.log.commit + len(gathering.fetched) if fetching and gathering else self.verified
        if base.seq > held:
            self._install(base, message.src, now, out)
            if fetching and gathering:
                gathering.fetched = []
        if not fetching:
            self.verified = max(self.verified, base.seq)
            self._ack_due = message.src

    def _assemble(self, part: Snapshot) -> Base | None:
        """The snapshot once its last part is in; parts must come in order, a first part restarts."""
        key = (part.src, part.term, part.base, part.base_term, part.total)
        if part.offset == 0:
            self._snapshot = (key, [])
        if self._snapshot is None or self._snapshot[0] != key or part.offset != len(self._snapshot[1]):
            self.counters.link_messages_ignored += 1  # a part lost before this one: the source sends it all again
            return None
        users = self._snapshot[1]
        users.extend(part.users)
        if len(users) < part.total:
            return None
        self._snapshot = None
        return Base(part.base, part.base_term, {join["user"]: join for join in users}, part.config)

    def _install(self, base: Base, source: str, now: float, out: list[Action]) -> None:
        skipped = base.seq - self.log.commit
        self.log.install(base)
        self.counters.snapshots_installed += 1
        self.verified = base.seq
        config = self.log.config
        if config is not None and not self.cluster:
            self._adopt_cluster(config.cluster)
        self.presence.reset(self.store.users(), now)
        out.append(Log("warning", f"chat: installed a snapshot from {source} at seq {base.seq}: "
                                  f"{skipped} entries trimmed before they reached this daemon are not published here"))
        self._resolve_known(out)

    def _adopt_cluster(self, cluster: str) -> None:
        self.cluster = cluster
        self.store.save_state(ChatState(cluster, self.epoch, self.voted_for))

    # ------------------------------------------------------------ sequencer

    def _on_forward(self, message: Forward, now: float, out: list[Action]) -> None:
        if self.leader != self.name or self.role == FOLLOWING or message.src in self.foreign:
            self.counters.link_messages_ignored += 1  # the proposer re-sends once it knows the sequencer
            return
        for proposal in message.proposals:
            if proposal["server"] != message.src:
                self.counters.link_messages_ignored += 1
                continue
            if self.role == ACTIVE:
                self._sequence(proposal, message.src, now, out)
            elif len(self.queue) < MAX_TAIL:
                self.queue.append(proposal)
        self._dirty = True

    def _sequence(self, proposal: Proposal, source: str, now: float, out: list[Action]) -> None:
        """Give `proposal` the next seq, or refuse it; `source` proposed it."""
        key = (proposal["user"], proposal["id"])
        if key in self._pending:
            self.counters.duplicates_dropped += 1
            return
        committed = self.log.find(*key)
        if committed is not None:
            self.counters.duplicates_dropped += 1
            self._result(source, {"user": key[0], "id": key[1], "seq": committed}, now, out)
            return
        refusal = self._refusal(proposal)
        if refusal is not None:
            self.counters.proposals_refused += 1
            code, text = refusal
            self._result(source, {"user": key[0], "id": key[1], "code": code, "message": text}, now, out)
            return
        entry = dict(proposal, seq=self.log.last + 1, term=self.epoch, time=round(self.wall_offset + now, 6))
        if entry["kind"] == "join":
            entry["text"] = "rejoined" if self.presence.present(entry["user"]) is not None else ""
        self._append(entry)

    def _append(self, entry: Entry) -> None:
        self.log.append([entry])
        self._pending[(entry["user"], entry["id"])] = entry["seq"]
        self.presence.sequenced(entry)
        self.counters.entries_sequenced += 1

    def _append_config(self, config: Config, now: float) -> None:
        proposal = self.proposer.proposal("config", "", "", config.text())
        entry = dict(proposal, seq=self.log.last + 1, term=self.epoch, time=round(self.wall_offset + now, 6))
        entry["session"] = ""
        self._append(entry)

    def _refusal(self, proposal: Proposal) -> tuple[str, str] | None:
        """Why the sequencer will not sequence `proposal`, or None."""
        if len(self.log.tail) >= MAX_TAIL:
            return "unavailable", "the sequencer has too many uncommitted entries; retry later"
        quorum = self._quorum_error() if proposal["kind"] in ("message", "join") else None
        if quorum is not None:  # a leave or a timeout waits in the log for the quorum to be back
            return quorum
        current = self.presence.present(proposal["user"])
        if proposal["kind"] == "join":
            if current is not None and current["session"] != proposal["session"]:
                return "name_taken", f"the name {proposal['user']!r} is in use on {current['server']}"
            return None
        if current is None or current["session"] != proposal["session"]:
            return "not_joined", f"{proposal['user']!r} is not in the chat: join first"
        if proposal["kind"] != "message" and current["server"] != proposal["server"]:
            return "not_joined", f"{proposal['user']!r} is on {current['server']} now"  # a stale timeout
        return None

    def _quorum_error(self) -> tuple[str, str] | None:
        """no_quorum when this daemon's side of the network holds no quorum of the voters."""
        config = self.log.config
        live = set(self.peers) | {self.name}
        if self.leader in self.foreign:
            return "unavailable", (f"the leader {self.leader} belongs to another chat cluster: this daemon's "
                                   "cluster has no sequencer (see README, two chat clusters)")
        if config is None or config.is_quorum(live):
            return None
        return "no_quorum", config.shortfall(live)

    def _result(self, source: str, result: dict[str, Any], now: float, out: list[Action]) -> None:
        if source == self.name:
            self._on_results([result], now, out)
        else:
            out.append(Transmit(source, Result(self.name, self.epoch, [result])))

    def _replicate(self, name: str, now: float, out: list[Action]) -> None:
        """Send `name` what it lacks, up to the window; an empty APPEND carries a new commit."""
        follower = self.followers[name]
        log = self.log
        cluster = self._log_cluster()
        if name in self.foreign:
            return  # it belongs to another chat cluster: nothing of this log is its
        while follower.next <= log.last and follower.next - follower.match - 1 < WINDOW:
            if follower.next < self.store.first_seq():
                base = self.store.base()
                if base is None:
                    if not follower.trimmed:
                        follower.trimmed = True
                        out.append(Log("warning", f"chat: cannot catch {name} up from seq {follower.next}: "
                                                  "older than the retained history, whose base is unknown"))
                    return
                out.extend(Transmit(name, part) for part in self._snapshot_parts(base))
                follower.next = base.seq + 1  # its match stays: it holds nothing until it acknowledges
                follower.progress = now
                continue
            prev = follower.next - 1
            entries = fitting(log.read(prev, MAX_BATCH))
            out.append(Transmit(name, Append(self.name, self.epoch, cluster, prev, log.term_at(prev) or 0,
                                             entries, log.commit)))
            follower.next += len(entries)
            follower.told = log.commit
            follower.progress = now  # resend only after resend_interval with nothing sent or acknowledged
        if follower.told < log.commit and follower.next > log.last:
            out.append(Transmit(name, Append(self.name, self.epoch, cluster, log.last, log.last_term, [], log.commit)))
            follower.told = log.commit
            follower.progress = now

    def _snapshot_parts(self, base: Base) -> list[Snapshot]:
        """`base` as SNAPSHOT messages: the presence table in parts that each fit a link message."""
        users = list(base.users.values())
        self.counters.snapshots_sent += 1
        parts: list[Snapshot] = []
        offset = 0
        while not parts or offset < len(users):
            batch = fitting(users[offset:offset + MAX_BATCH])
            parts.append(Snapshot(self.name, self.epoch, base.seq, base.term, offset, len(users), batch, base.config,
                                  self._log_cluster()))
            offset += len(batch)
        return parts

    def _on_ack(self, message: Ack, now: float) -> None:
        follower = self.followers.get(message.src)
        if self.role != ACTIVE or follower is None or message.term != self.epoch:
            self.counters.link_messages_ignored += 1
            return
        if message.last > follower.match or message.commit > follower.commit:
            follower.progress = now
        follower.match = max(follower.match, min(message.last, self.log.last))
        follower.commit = message.commit
        if message.need:  # it could not take what we sent: a gap, a mismatch, or it restarted
            follower.next = min(message.need, self.log.last + 1)
        self._dirty = True

    def _lagging(self, follower: FollowerState) -> bool:
        return follower.match < self.log.last or follower.commit < self.log.commit

    def _advance_commit(self, now: float, out: list[Action]) -> None:
        """Commit up to the newest entry of this epoch that a quorum holds (Raft 5.4.2: older
        entries commit only under it)."""
        log = self.log
        config = log.config
        if config is None:
            return
        me = {self.name} if self.name in config.everyone() else set()
        for seq in sorted({f.match for f in self.followers.values()} | {log.last}, reverse=True):
            if seq <= log.commit or log.term_at(seq) != self.epoch:
                return
            holders = me | {name for name, f in self.followers.items() if f.match >= seq}
            if config.is_quorum(holders):
                self._commit_to(seq, now, out)
                return

    def _note_absent(self, now: float) -> None:
        """Sequencer: when each voter went out of the view, for remove_dead_after."""
        config = self.log.config
        voters = config.everyone() if config else set()
        for name in list(self.absent):
            if name in self.peers or name not in voters:
                del self.absent[name]
        self.dead &= voters - set(self.peers)
        for name in voters - set(self.peers) - {self.name} - self.dead:
            self.absent.setdefault(name, now)

    def _change_config(self, now: float, out: list[Action]) -> None:
        """One membership change at a time, once the latest configuration and an entry of this
        epoch are committed: finish a joint configuration, else remove or add one daemon."""
        log = self.log
        config = log.config
        if config is None or log.config_seq > log.commit or log.commit_term != self.epoch:
            return
        if config.joint:
            self._append_config(Config(config.cluster, config.voters), now)
            self._dirty = True
            return
        voters = self._next_voters(config, now)
        if voters is not None:
            self.counters.config_changes += 1
            added = set(voters) - set(config.voters)
            change = f"adding {', '.join(added)}" if added else f"removing {', '.join(set(config.voters) - set(voters))}"
            out.append(Log("info", f"chat: {change}: voters will be {', '.join(sorted(voters))}"))
            self._append_config(Config(config.cluster, voters, config.voters), now)
            self._dirty = True

    def _next_voters(self, config: Config, now: float) -> dict[str, int] | None:
        """The voters after the next change, or None: asked removals first, then the long dead,
        then daemons that have caught up."""
        voters = config.voters
        live = set(self.peers) | {self.name}
        for name in sorted(self.removals):
            self.removals.discard(name)
            self.excluded.add(name)
            if name in voters and len(voters) > 1:
                return {n: p for n, p in voters.items() if n != name}
        for name in sorted(self.dead):
            rest = {n: p for n, p in voters.items() if n != name}
            if name in voters and rest and quorum_of(rest, live):
                return rest
        if self.name not in voters and not self.retiring and self.name not in self.excluded:
            return {**voters, self.name: self.priority}  # a sequencer that joined lately: it holds the log
        for name in sorted(self.peers):
            follower = self.followers.get(name)
            if name not in voters and name not in self.foreign and name not in self.excluded and follower is not None \
                    and follower.match >= self.log.commit:
                return {**voters, name: self.peers[name]}
        return None

    def _on_remove(self, message: Remove, now: float) -> None:
        if self.role == ACTIVE and message.src not in self.foreign:
            self.removals.add(message.name)
            self._dirty = True
        else:
            self.counters.link_messages_ignored += 1

    def forget(self, name: str, now: float) -> list[Action]:
        """An operator removes `name` from the configuration at once (`dsctl forget`)."""
        out: list[Action] = []
        if self.role == ACTIVE:
            self.removals.add(name)
            self._dirty = True
        elif self.leader not in (None, self.name):
            out.append(Transmit(self.leader, Remove(self.name, self.epoch, name)))  # type: ignore[arg-type]
        return self._done(now, out)

    def retire(self, now: float) -> list[Action]:
        """This daemon is leaving: ask the sequencer to remove it (again every resend_interval)."""
        self.retiring = True
        self._retire_sent = now - self.limits.resend_interval
        return self.tick(now)

    def _retire_again(self, now: float, out: list[Action]) -> None:
        if not self.retiring or self.retired() or now < self._retire_sent + self.limits.resend_interval:
            return
        self._retire_sent = now
        if self.role == ACTIVE:
            self.removals.add(self.name)
            self._dirty = True
        elif self.leader not in (None, self.name):
            out.append(Transmit(self.leader, Remove(self.name, self.epoch, self.name)))  # type: ignore[arg-type]

    # ----------------------------------------------------------------- commit

    def _commit_to(self, seq: int, now: float, out: list[Action]) -> None:
        """Publish and act on the entries up to `seq` (stored at the end of the input)."""
        entries = self.log.take_committed(seq)
        if not entries:
            return
        self.counters.entries_committed += len(entries)
        for entry in entries:
            key = (entry["user"], entry["id"])
            self._pending.pop(key, None)
            self.presence.committed(entry, now)
            if entry["kind"] == "config":
                config = self.log.config
                if not self.cluster and config is not None:
                    self._adopt_cluster(config.cluster)
                topic = "chat.config"
            else:
                topic = "chat.message" if entry["kind"] == "message" else "chat.presence"
            out.append(Publish(topic, public(entry)))
            self._resolve(key, entry["seq"], out)
        self._resolve_known(out)

    def _resolve_known(self, out: list[Action]) -> None:
        for key, seq in self.proposer.known_by(self.log.commit):
            self._resolve(key, seq, out)

    def _resolve(self, key: Key, seq: int, out: list[Action]) -> None:
        for waiter in self.proposer.resolve(key):
            result: dict[str, Any] = {"seq": seq}
            if waiter.kind == "join":
                result.update(user=key[0], server=self.name, client_timeout=self.limits.client_timeout)
            out.append(Reply(waiter.request, result))

    def _on_results(self, results: list[dict[str, Any]], now: float, out: list[Action]) -> None:
        for result in results:
            key = (result["user"], result["id"])
            if key not in self.proposer.outbox:
                continue
            if "code" in result:
                keep = result["code"] == "no_quorum" and self.proposer.outbox[key]["kind"] in ("leave", "timeout")
                for waiter in self.proposer.answered(key) if keep else self.proposer.resolve(key):
                    out.append(Reply(waiter.request, error=(result["code"], result["message"])))
            elif result["seq"] <= self.log.commit:
                self._resolve(key, result["seq"], out)
            else:
                self.proposer.known[key] = result["seq"]

    # ---------------------------------------------------------------- clients

    def _propose(self, proposal: Proposal, waiter: Waiter | None, now: float, out: list[Action]) -> None:
        self.proposer.add(proposal, waiter, now)
        if self.leader == self.name:
            if self.role == ACTIVE:
                self._sequence(proposal, self.name, now, out)
                self._dirty = True
            else:
                self.queue.append(proposal)
        elif self.leader is not None:
            self.counters.proposals_forwarded += 1
            self.proposer.fresh.append(proposal)

    def join(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        out: list[Action] = []
        if not USER_PATTERN.match(user):
            out.append(Reply(request, error=(
                "bad_user", "a user name is 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )))
            return self._done(now, out)
        if not SESSION_PATTERN.match(session):
            out.append(Reply(request, error=("bad_args", "session must be 16-64 characters of A-Z a-z 0-9 _ -")))
            return self._done(now, out)
        current = self.presence.present(user) if self.role == ACTIVE else None  # a follower's view may lag
        error = self._quorum_error()
        if error is None and current is not None and current["session"] != session:
            error = ("name_taken", f"the name {user!r} is in use on {current['server']}")
        if error is not None:
            out.append(Reply(request, error=error))
            return self._done(now, out)
        waiter = Waiter(request, "join", now + self.limits.request_timeout)
        pending = self.proposer.waiting_join(user, session)
        if pending is not None:
            self.proposer.wait(pending, waiter)
            return self._done(now, out)
        sessions = self.presence.sessions
        if user not in sessions and len(sessions) + self.proposer.joining(set(sessions)) >= self.limits.max_clients:
            self.counters.proposals_refused += 1
            out.append(Reply(request, error=(
                "too_many_clients", f"this daemon has its limit of {self.limits.max_clients} users ([chat] max_clients); "
                "try another daemon or later")))
            return self._done(now, out)
        self._propose(self.proposer.proposal("join", user, session), waiter, now, out)
        return self._done(now, out)

    def send(self, request: Any, user: str, session: str, id: str, text: str, now: float) -> list[Action]:
        out: list[Action] = []
        error = self._session_error(user, session)
        size = utf8_size(text)
        if error is None and not ID_PATTERN.match(id):
            error = ("bad_args", "id must be 1-64 characters of A-Z a-z 0-9 _ -")
        elif error is None and (size is None or not text.strip()):
            error = ("bad_args", "text must be non-empty UTF-8")
        elif error is None and size is not None and size > self.limits.max_message:
            error = ("too_large", f"message of {size} bytes exceeds the limit of {self.limits.max_message}")
        if error is not None:
            out.append(Reply(request, error=error))
            return self._done(now, out)
        client = self.presence.sessions[user]
        client.last_heard = now
        key = (user, id)
        committed = self.log.find(user, id)
        if committed is not None:
            out.append(Reply(request, {"seq": committed}))
            return self._done(now, out)
        waiter = Waiter(request, "message", now + self.limits.request_timeout)
        if key in self.proposer.outbox:
            self.proposer.wait(key, waiter)
            return self._done(now, out)
        error = self._quorum_error()
        if error is None and not self.presence.take_token(client, now, self.limits.rate):
            error = ("rate_limited", f"more than {self.limits.rate:g} messages/s (burst {self.limits.burst}); "
                                     "retry shortly")
        if error is not None:
            out.append(Reply(request, error=error))
            return self._done(now, out)
        proposal = {"kind": "message", "user": user, "text": text, "id": id, "server": self.name, "session": session}
        self._propose(proposal, waiter, now, out)
        return self._done(now, out)

    def heartbeat(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        error = self._session_error(user, session)
        if error is not None:
            return self._done(now, [Reply(request, error=error)])
        self.presence.sessions[user].last_heard = now
        return self._done(now, [Reply(request, {"last_seq": self.log.commit})])

    def leave(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        """The session ends here at once; the leave entry commits when the log can take it (after a
        heal, on the minority side: the client is told no_quorum meanwhile)."""
        out: list[Action] = []
        error = self._session_error(user, session)
        if error is not None:
            out.append(Reply(request, error=error))
            return self._done(now, out)
        del self.presence.sessions[user]
        error = self._quorum_error()
        waiter = Waiter(request, "leave", now + self.limits.request_timeout) if error is None else None
        self._propose(self.proposer.proposal("leave", user, session), waiter, now, out)
        if error is not None:
            out.append(Reply(request, error=error))
        return self._done(now, out)

    def _session_error(self, user: str, session: str) -> tuple[str, str] | None:
        client = self.presence.sessions.get(user)
        if client is not None and client.session == session:
            return None
        return "not_joined", f"{user!r} has not joined through this server (or timed out): join first"

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[Action]:
        """Retries, client timeouts, request deadlines, membership changes."""
        out: list[Action] = []
        self._expire_clients(now, out)
        if self.leader == self.name and self.role == FOLLOWING and now >= self._heard_sequencer + self.limits.gather_timeout:
            self._start_candidacy(now, out)  # the view says lead, and the sequencer of a newer epoch fell silent
        if self.leader == self.name:
            self._leader_tick(now, out)
        elif self.leader is not None:
            self._forward(self.proposer.due(now, self.limits.resend_interval), out)
        self._retire_again(now, out)
        for waiter in self.proposer.expired(now):
            out.append(Reply(waiter.request, error=(
                "unavailable", "not committed in time (no sequencer?); retry with the same id",
            )))
        return self._done(now, out)

    def _forward(self, proposals: list[Proposal], out: list[Action]) -> None:
        while proposals:
            batch = fitting(proposals[:MAX_BATCH])
            out.append(Transmit(self.leader, Forward(self.name, self.epoch, batch)))  # type: ignore[arg-type]
            del proposals[:len(batch)]

    def _expire_clients(self, now: float, out: list[Action]) -> None:
        for user, client in list(self.presence.sessions.items()):
            if now >= client.last_heard + self.limits.client_timeout:
                del self.presence.sessions[user]
                out.append(Log("info", f"chat: {user} timed out"))
                self._propose(self.proposer.proposal("timeout", user, client.session), None, now, out)

    def _leader_tick(self, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if gathering is not None and now >= gathering.sent + self.limits.resend_interval:
            gathering.sent = now
            if self.role == GATHERING and now >= gathering.started + self.limits.gather_timeout:
                self._gathered(now, out, force=True)
            if self.role == GATHERING and self.gathering is not None:
                for name in sorted(set(self.peers) - set(self.gathering.statuses)):
                    out.append(Transmit(name, Gather(self.name, self.epoch, self.cluster)))
            elif self.role == FETCHING and now >= gathering.started + self.limits.gather_timeout:
                self._start_candidacy(now, out)  # the fetch source went silent: gather again
            elif self.role == FETCHING and gathering.best is not None:
                out.append(Transmit(gathering.best, Fetch(self.name, self.epoch,
                                                          self.log.commit + len(gathering.fetched))))
        if self.role != ACTIVE:
            return
        for name, follower in self.followers.items():
            if self._lagging(follower) and now >= follower.progress + self.limits.resend_interval:
                follower.next = follower.match + 1
                follower.told = follower.commit
                follower.progress = now
                self._replicate(name, now, out)
        self._expire_orphans(now, out)
        for name, since in list(self.absent.items()):
            if now >= since + self.limits.remove_dead_after:
                del self.absent[name]
                self.dead.add(name)
                self._dirty = True

    def _expire_orphans(self, now: float, out: list[Action]) -> None:
        """Users whose daemon left the cluster time out unless they come back elsewhere."""
        for join in self.presence.orphaned(set(self.peers) | {self.name}, now):
            if now >= self.presence.orphans[join["user"]] + self.limits.client_timeout:
                del self.presence.orphans[join["user"]]
                proposal = self.proposer.proposal("timeout", join["user"], join["session"], server=join["server"])
                self._sequence(proposal, self.name, now, out)
                self._dirty = True

    def next_deadline(self) -> float | None:
        """When `tick` must run next, or None when nothing is waiting on time."""
        limits = self.limits
        deadlines = [s.last_heard + limits.client_timeout for s in self.presence.sessions.values()]
        for deadline in (self.proposer.first_deadline(),
                         self.proposer.next_resend(limits.resend_interval) if self.leader not in (None, self.name)
                         else None):
            if deadline is not None:
                deadlines.append(deadline)
        if self.gathering is not None:
            deadlines.append(self.gathering.sent + limits.resend_interval)
        if self.leader == self.name and self.role == FOLLOWING:
            deadlines.append(self._heard_sequencer + limits.gather_timeout)
        if self.retiring and not self.retired():
            deadlines.append(self._retire_sent + limits.resend_interval)
        if self.role == ACTIVE:
            deadlines += [f.progress + limits.resend_interval for f in self.followers.values() if self._lagging(f)]
            deadlines += [since + limits.client_timeout for since in self.presence.orphans.values()]
            deadlines += [since + limits.remove_dead_after for since in self.absent.values()]
        return min(deadlines, default=None)

    # -------------------------------------------------------------- batching

    def hold(self) -> None:
        """Gather the output of the inputs that follow until `release`.

        The service holds while it drains one event-loop turn's worth of requests and link
        messages, so a burst of sends costs one FORWARD, one APPEND per follower, one ACK
        and one store transaction rather than one of each per message. Nothing is returned
        before `release`: what it says must be on disk first.
        """
        if self._held is None:
            self._held = []

    def release(self, now: float) -> list[Action]:
        out, self._held = self._held or [], None
        return self._done(now, out)

    def _done(self, now: float, out: list[Action]) -> list[Action]:
        """The end of an input: flush what it produced and write the log, unless held."""
        if self._held is not None:
            self._held.extend(out)
            return []
        self._flush(now, out)
        return out

    def _flush(self, now: float, out: list[Action]) -> None:
        fresh, self.proposer.fresh = self.proposer.fresh, []
        if fresh and self.leader not in (None, self.name):
            self._forward(fresh, out)
        if self._dirty and self.role == ACTIVE:
            self._dirty = False
            self._advance_commit(now, out)
            self._change_config(now, out)
            for name in sorted(self.followers):
                self._replicate(name, now, out)
        self._dirty = False
        if self._ack_due is not None:
            if self._ack_due == self.sequencer:
                out.append(Transmit(self._ack_due, Ack(self.name, self.epoch, self.verified, self.log.commit, 0)))
            self._ack_due = None
        self.log.sync()  # before any of `out` leaves this daemon

    # ------------------------------------------------------------------ input

    def receive(self, message: LinkMessage, now: float) -> list[Action]:
        """A link message from another daemon (already decoded by `dsd.linkwire`)."""
        out: list[Action] = []
        if not isinstance(message, Refuse) and not self._foreign_to(getattr(message, "cluster", "")):
            self.highest_epoch = max(self.highest_epoch, message.term)
        if isinstance(message, Forward):
            self._on_forward(message, now, out)
        elif isinstance(message, Result):
            self._on_results(message.results, now, out)
        elif isinstance(message, Append):
            self._on_append(message, now, out)
        elif isinstance(message, Ack):
            self._on_ack(message, now)
        elif isinstance(message, Gather):
            self._on_gather(message, out)
        elif isinstance(message, Status):
            self._on_status(message, now, out)
        elif isinstance(message, Refuse):
            self._on_refuse(message, now, out)
        elif isinstance(message, Remove):
            self._on_remove(message, now)
        elif isinstance(message, Fetch):
            self._on_fetch(message, out)
        elif isinstance(message, Entries):
            self._on_entries(message, now, out)
        elif isinstance(message, Snapshot):
            self._on_snapshot(message, now, out)
        return self._done(now, out)

    # ------------------------------------------------------------- queries

    def history(self, limit: int) -> dict[str, Any]:
        """The newest `limit` committed entries, fewer if they would exceed MAX_REPLY_BYTES."""
        newest_first = _fitting_reply(reversed(self.store.latest(limit)))
        return {"entries": [public(e) for e in reversed(newest_first)], "last_seq": self.log.commit}

    def since(self, seq: int, limit: int) -> dict[str, Any]:
        """Committed entries after `seq` (fewer than `limit` past MAX_REPLY_BYTES: the client asks
        again); `first_seq` > seq + 1 says the ones between were trimmed here."""
        entries = [public(e) for e in _fitting_reply(self.store.read(seq, limit, upto=self.log.commit))]
        return {"entries": entries, "last_seq": self.log.commit, "first_seq": self.store.first_seq()}

    def who(self) -> list[dict[str, Any]]:
        return [
            {"user": user, "server": entry["server"], "since": entry["time"]}
            for user, entry in sorted(self.presence.users.items())
        ]
