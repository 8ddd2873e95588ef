"""The chat log: sequencing, replication, commit and leader change, as a pure state machine.

The cluster's leader (from `dsd.core.node`) is the sequencer. Every daemon plays three parts:

- *proposer* for its own clients: a join, send, leave or timeout becomes a proposal kept in
  the outbox and forwarded to the leader until it is seen committed (or refused), so a
  leader change loses nothing; the client's reply waits for the commit.
- *follower*: takes APPENDs from the leader of the current term, acknowledges how far its
  log matches, and serves GATHER/FETCH. Without a quorum it commits what it holds of the
  leader's log at once, without waiting to hear the leader's commit point: the leader and
  it hold those entries, which is the commit rule below. That saves the ACK and the
  leader's next APPEND on the way to its feed and to its clients. With a quorum of more
  than two it waits for the leader's word.
- *leader*: first gathers the survivors' STATUS and adopts the most advanced log (highest
  last term, then highest seq: Viewstamped Replication's view change), stamping the
  uncommitted entries it adopts with its own term; then it sequences proposals, replicates
  them and commits an entry once one follower holds it too, so a committed entry survives
  the crash of any one daemon. Retried proposals (same user and id) are recorded once.
- *quorum* (`[chat] cluster_size` set, `limits.quorum` = a majority of it): an entry commits
  once a quorum of daemons, the leader included, holds it, and a new leader takes messages
  only once a quorum (itself included) has answered its GATHER. Any two quorums share a
  daemon, so the minority side of a partition commits nothing and the logs never split;
  without a quorum both sides of a partition commit on their own.

A daemon that needs entries its source (the leader, or a new leader's fetch source) no
longer retains gets a SNAPSHOT instead: the store's base (the last trimmed seq, its term,
who was present after it), then the retained entries after it as usual. It installs the
base in its store and goes on from there; the trimmed entries it never had are not
published on its feed. Its acknowledgements say it holds the log up to the base, which
is committed already, so a snapshot never counts towards committing anything new.

Committed entries go to the `Store` (synchronously; the store is injected, an in-memory
one in tests) and are published on the feed in seq order. Uncommitted entries live only
here, in `tail`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dsd.core.actions import Action, Log, Publish, Reply, Transmit
from dsd.linkwire import (
    ID_PATTERN, MAX_BATCH, PUBLIC_KEYS, SESSION_PATTERN, USER_PATTERN, Ack, Append, Entries, Entry,
    Fetch, Forward, Gather, LinkMessage, Proposal, Result, Snapshot, Status, fitting, utf8_size,
)
from dsd.store import Base, Store

FOLLOWING, GATHERING, FETCHING, ACTIVE = "following", "gathering", "fetching", "active"
WINDOW = 4 * MAX_BATCH  # entries in flight to one follower
MAX_TAIL = 20_000  # uncommitted entries before the leader refuses new proposals
MAX_EARLY = 64  # messages of a term this node has not heard of yet, kept for when it does
MAX_REPLY_BYTES = 256 * 1024  # of entry text per history/since reply: a client pages on
ENTRY_OVERHEAD = 200  # bytes of an entry's JSON besides its text, roughly
Key = tuple[str, str]  # (user, id)


@dataclass(frozen=True)
class ChatLimits:
    """[chat] settings the core needs, and its retry interval."""

    client_timeout: float = 10.0
    max_message: int = 4096
    rate: float = 20.0
    burst: int = 50
    max_clients: int = 1000
    cluster_size: int = 0  # [chat] cluster_size: 0 = no quorum
    resend_interval: float = 0.2
    request_timeout: float = 5.0
    gather_timeout: float = 2.0

    @property
    def quorum(self) -> int:
        """Daemons that must hold an entry to commit it, and answer a new leader; 0: no quorum."""
        return self.cluster_size // 2 + 1 if self.cluster_size else 0


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


@dataclass
class Session:
    """A client connected to this daemon."""

    session: str
    last_heard: float
    tokens: float
    refilled: float


@dataclass
class Waiter:
    request: Any
    kind: str
    deadline: float


@dataclass
class FollowerState:
    """What the leader knows of one follower's log."""

    next: int
    match: int
    progress: float  # when the follower last acknowledged something new (or was caught up)
    told: int = 0  # the commit point last sent to it
    commit: int = 0  # the commit point it acknowledged
    trimmed: bool = False  # it needs entries this leader no longer keeps and cannot snapshot (reported once)


@dataclass
class Gathering:
    """A new leader's view change: statuses in, then entries fetched from the best."""

    started: float
    statuses: dict[str, Status] = field(default_factory=dict)
    sent: float = 0.0
    best: str | None = None
    fetched: list[Entry] = field(default_factory=list)
    short_of_quorum: bool = False  # said so in the log already


def _fitting_reply(entries: Iterable[Entry]) -> list[Entry]:
    """The leading `entries` that fit MAX_REPLY_BYTES (at least one): a reply a client never
    reads stays queued in the daemon, so its size is what bounds that memory."""
    fitting: list[Entry] = []
    size = 0
    for entry in entries:
        size += len(entry["text"].encode()) + ENTRY_OVERHEAD
        if fitting and size > MAX_REPLY_BYTES:
            break
        fitting.append(entry)
    return fitting


def public(entry: Entry) -> dict[str, Any]:
    """An entry as clients see it (no term, no session token)."""
    return {key: entry[key] for key in PUBLIC_KEYS}


def same_entry(a: Entry, b: Entry) -> bool:
    return (a["term"], a["user"], a["id"], a["kind"]) == (b["term"], b["user"], b["id"], b["kind"])


class Chat:
    """Feed it link messages, client requests, view changes and time; it returns actions."""

    def __init__(self, name: str, store: Store, limits: ChatLimits, epoch: float, incarnation: int) -> None:
        self.name = name
        self.store = store
        self.limits = limits
        self.epoch = epoch  # wall clock = epoch + now: entry times without reading a clock
        self.counters = Counters()
        self.term = 0
        self.leader: str | None = None
        self.peers: frozenset[str] = frozenset()
        self.role = FOLLOWING
        self.commit = store.last_seq()
        self.commit_term = store.last_term()
        self.tail: list[Entry] = []
        self.matched = self.commit  # follower: log known to match the leader's up to here
        self.presence: dict[str, Entry] = store.users()
        self.sessions: dict[str, Session] = {}
        self.outbox: dict[Key, Proposal] = {}
        self.waiting: dict[Key, list[Waiter]] = {}
        # The waiters by deadline, so that no input scans them all; replied ones are dropped lazily.
        self._deadlines: list[tuple[float, int, Key, Waiter]] = []
        self._deadline_ids = itertools.count()
        self.known: dict[Key, int] = {}  # proposals the leader says are committed at seq
        self.followers: dict[str, FollowerState] = {}
        self.gathering: Gathering | None = None
        self.queue: list[Proposal] = []  # proposals held while the new leader gathers
        self.orphans: dict[str, float] = {}  # leader: users whose server is gone, since when
        self._pending: dict[Key, int] = {}  # leader: uncommitted entries by (user, id)
        self._tail_presence: dict[str, Entry] = {}  # leader: each user's latest uncommitted presence entry
        self._early: list[tuple[LinkMessage, float]] = []
        self._snapshot: tuple[tuple[str, int, int, int, int], list[Entry]] | None = None  # parts so far
        self._forwarded: dict[Key, float] = {}  # proposer: outbox keys by when last forwarded, oldest first
        # Output gathered over a batch of inputs (see `hold`) and sent by `_flush`:
        self._held = False
        self._dirty = False  # leader: new entries, acks or a view change to act on
        self._forwards: list[Proposal] = []  # proposer: new proposals for the leader
        self._ack_due: str | None = None  # follower: the leader is owed an ACK
        self._ids = itertools.count(1)
        self._id_prefix = f"{incarnation % 36**8:x}"

    @property
    def last(self) -> int:
        return self.commit + len(self.tail)

    @property
    def last_term(self) -> int:
        return self.tail[-1]["term"] if self.tail else self.commit_term

    def start(self, now: float) -> None:
        """Users the log places on this server, from before a restart, get client_timeout to come back."""
        self._sync_sessions(now)

    def _sync_sessions(self, now: float) -> None:
        """Sessions for the users the log places on this server, and only them; new ones get
        client_timeout to come back (after a restart, or a snapshot that placed them here)."""
        for user, client in list(self.sessions.items()):
            entry = self.presence.get(user)
            if entry is None or entry["server"] != self.name or entry["session"] != client.session:
                del self.sessions[user]
        for user, entry in self.presence.items():
            if entry["server"] == self.name and user not in self.sessions:
                self.sessions[user] = Session(entry["session"], now, float(self.limits.burst), now)

    # ----------------------------------------------------------- cluster view

    def set_view(self, leader: str | None, term: int, peers: frozenset[str], now: float) -> list[Action]:
        """The membership changed: the leader, its term, or the set of live peers."""
        out: list[Action] = []
        gone = self.peers - peers
        if self.limits.cluster_size and len(peers) + 1 > self.limits.cluster_size >= len(self.peers) + 1:
            out.append(Log("warning", f"chat: {len(peers) + 1} daemons in the view, more than [chat] cluster_size "
                                      f"= {self.limits.cluster_size}: two sides of a partition could both commit"))
        self.peers = peers
        if (leader, term) != (self.leader, self.term):
            self.term = max(self.term, term)
            self.leader = leader
            self._new_leader(now, out)
            early, self._early = self._early, []
            for message, _ in early:
                out.extend(self.receive(message, now))
        elif self.leader == self.name:
            for name in gone:
                self.followers.pop(name, None)
            for name in peers - set(self.followers):
                if self.role == ACTIVE:
                    self.followers[name] = FollowerState(self.commit + 1, 0, now)
            if self.role == GATHERING and gone:
                self._gathered(now, out)
            elif self.role == FETCHING and self.gathering and self.gathering.best in gone:
                self._start_gathering(now, out)
            elif self.role == ACTIVE:
                self._dirty = True
                self._expire_orphans(now, out)
        return self._done(now, out)

    def _new_leader(self, now: float, out: list[Action]) -> None:
        self.followers = {}
        self.gathering = None
        self.orphans = {}
        self.matched = self.commit
        if self.leader == self.name:
            self._start_gathering(now, out)
            return
        self.role = FOLLOWING
        for proposal in self.queue:  # others' proposals: their proposers forward them again
            if proposal["server"] == self.name:
                self.outbox.setdefault((proposal["user"], proposal["id"]), proposal)
        self.queue = []
        self._pending = {}
        # Hand the outbox to the new leader at once.
        self._forwarded = dict.fromkeys(self.outbox, now - self.limits.resend_interval)

    # ---------------------------------------------------------------- leader

    def _start_gathering(self, now: float, out: list[Action]) -> None:
        self.role = GATHERING
        self.gathering = Gathering(started=now, sent=now)
        for name in sorted(self.peers):
            out.append(Transmit(name, Gather(self.name, self.term)))
        self._gathered(now, out)

    def _gathered(self, now: float, out: list[Action], force: bool = False) -> None:
        """Every live peer answered GATHER (or gather_timeout passed): adopt the most advanced log,
        once the answers (this daemon's included) reach the quorum, if there is one."""
        gathering = self.gathering
        assert gathering is not None
        if not force and not self.peers <= set(gathering.statuses):
            return
        quorum = self.limits.quorum
        if quorum and len(gathering.statuses.keys() & self.peers) + 1 < quorum:
            # A minority must not sequence: the majority may be committing without it.
            if not gathering.short_of_quorum:
                gathering.short_of_quorum = True
                out.append(Log("warning", f"chat: {len(self.peers) + 1} daemons reachable, quorum is {quorum}: "
                                          "not taking messages until more are back"))
            gathering.started = now
            return
        if force:
            silent = ", ".join(sorted(self.peers - set(gathering.statuses)))
            out.append(Log("warning", f"chat: no STATUS from {silent} in time; going on without"))
        statuses = {name: s for name, s in gathering.statuses.items() if name in self.peers}
        best = max(statuses.values(), key=lambda s: (s.last_term, s.last, s.src), default=None)
        if best is None or (best.last_term, best.last) <= (self.last_term, self.last):
            self._activate(statuses, now, out)
            return
        self.role = FETCHING
        gathering.best = best.src
        gathering.fetched = []
        gathering.sent = now
        out.append(Transmit(best.src, Fetch(self.name, self.term, self.commit)))

    def _on_entries(self, message: Entries, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if self.role != FETCHING or gathering is None or message.src != gathering.best:
            return
        expected = self.commit + len(gathering.fetched) + 1
        fresh = [e for e in message.entries if e["seq"] >= expected]
        if fresh and fresh[0]["seq"] != expected:
            return
        gathering.fetched.extend(fresh)
        best = gathering.statuses[message.src]
        if not fresh or self.commit + len(gathering.fetched) >= best.last:
            self.tail = gathering.fetched
            self._activate({n: st for n, st in gathering.statuses.items() if n in self.peers}, now, out)
        else:
            gathering.sent = now
            out.append(Transmit(message.src, Fetch(self.name, self.term, self.commit + len(gathering.fetched))))

    def _activate(self, statuses: dict[str, Status], now: float, out: list[Action]) -> None:
        """The view change is over: commit what is known committed, replicate the rest, sequence."""
        self.role = ACTIVE
        self.gathering = None
        self._pending = {(e["user"], e["id"]): e["seq"] for e in self.tail}
        self._tail_presence = {e["user"]: e for e in self.tail if e["kind"] != "message"}
        known_commit = max((s.commit for s in statuses.values()), default=0)
        self._commit_to(min(known_commit, self.last), now, out)
        for entry in self.tail:
            # The adopted uncommitted entries become this term's (Viewstamped Replication's view
            # change): counted for a commit as of an older term, they could lose a later view
            # change to a log holding a newer term's entry at the same seq (Raft's Figure 8).
            entry["term"] = self.term
        self.followers = {name: FollowerState(self.commit + 1, 0, now) for name in self.peers}
        for name, status in statuses.items():
            self.followers[name] = FollowerState(status.commit + 1, status.commit, now)
        out.append(Log("info", f"chat: leading term {self.term} from seq {self.last} ({len(self.tail)} uncommitted)"))
        queued, self.queue = self.queue, []
        for proposal in list(self.outbox.values()) + queued:
            self._sequence(proposal, proposal["server"], now, out)
        self._dirty = True
        self._expire_orphans(now, out)

    def _sequence(self, proposal: Proposal, source: str, now: float, out: list[Action]) -> None:
        """Give `proposal` the next seq, or refuse it; `source` proposed it."""
        key = (proposal["user"], proposal["id"])
        if key in self._pending:
            self.counters.duplicates_dropped += 1
            return
        committed = self.store.find(*key)
        if committed is not None:
            self.counters.duplicates_dropped += 1
            self._result(source, {"user": key[0], "id": key[1], "seq": committed}, now, out)
            return
        refusal = self._refusal(proposal)
        if refusal is None and len(self.tail) >= MAX_TAIL:
            refusal = ("unavailable", "the leader has too many uncommitted entries; retry later")
        if refusal is not None:
            self.counters.proposals_refused += 1
            code, text = refusal
            self._result(source, {"user": key[0], "id": key[1], "code": code, "message": text}, now, out)
            return
        entry = dict(proposal, seq=self.last + 1, term=self.term, time=round(self.epoch + now, 6))
        if entry["kind"] == "join":
            entry["text"] = "rejoined" if self._present(entry["user"]) is not None else ""
        self.tail.append(entry)
        self._pending[key] = entry["seq"]
        if entry["kind"] != "message":
            self._tail_presence[entry["user"]] = entry
        self.counters.entries_sequenced += 1

    def _refusal(self, proposal: Proposal) -> tuple[str, str] | None:
        """Why the leader will not sequence `proposal` given who is present, or None."""
        current = self._present(proposal["user"])
        if proposal["kind"] == "join":
            if current is not None and current["session"] != proposal["session"]:
                return "name_taken", f"the name {proposal['user']!r} is in use on {current['server']}"
            return None
        if current is None or current["session"] != proposal["session"]:
            return "not_joined", f"{proposal['user']!r} is not in the chat: join first"
        if proposal["kind"] != "message" and current["server"] != proposal["server"]:
            return "not_joined", f"{proposal['user']!r} is on {current['server']} now"  # a stale timeout
        return None

    def _present(self, user: str) -> Entry | None:
        """Leader: the join entry that makes `user` present, counting uncommitted entries."""
        entry = self._tail_presence.get(user)
        if entry is None:
            return self.presence.get(user)
        return entry if entry["kind"] == "join" else None

    def _result(self, source: str, result: dict[str, Any], now: float, out: list[Action]) -> None:
        if source == self.name:
            self._on_results([result], now, out)
        else:
            out.append(Transmit(source, Result(self.name, self.term, [result])))

    def _replicate(self, name: str, now: float, out: list[Action]) -> None:
        """Send `name` what it lacks, up to the window; an empty APPEND carries a new commit."""
        follower = self.followers[name]
        while follower.next <= self.last and follower.next - follower.match - 1 < WINDOW:
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
            entries = self._read(follower.next - 1, MAX_BATCH)
            out.append(Transmit(name, Append(self.name, self.term, follower.next - 1, entries, self.commit)))
            follower.next += len(entries)
            follower.told = self.commit
            follower.progress = now  # resend only after resend_interval with nothing sent or acknowledged
        if follower.told < self.commit and follower.next > self.last:
            out.append(Transmit(name, Append(self.name, self.term, self.last, [], self.commit)))
            follower.told = self.commit
            follower.progress = now

    def _snapshot_parts(self, base: Base) -> list[Snapshot]:
        """`base` as SNAPSHOT messages: the presence table in parts that each fit a link message."""
        users = list(base.users.values())
        self.counters.snapshots_sent += 1
        parts: list[Snapshot] = []
        offset = 0
        while not parts or offset < len(users):
            batch = fitting(users[offset:offset + MAX_BATCH])
            parts.append(Snapshot(self.name, self.term, base.seq, base.term, offset, len(users), batch))
            offset += len(batch)
        return parts

    def _read(self, after: int, limit: int) -> list[Entry]:
        """Entries after `after`, committed (from the store) then uncommitted, in one link message's size."""
        entries = self.store.read(after, limit) if after < self.commit else []
        start = max(after, self.commit) - self.commit
        return fitting(entries + self.tail[start:start + limit - len(entries)])

    def _on_ack(self, message: Ack, now: float, out: list[Action]) -> None:
        follower = self.followers.get(message.src)
        if self.role != ACTIVE or follower is None:
            return
        if message.last > follower.match or message.commit > follower.commit:
            follower.progress = now
        follower.match = min(message.last, self.last)
        follower.commit = message.commit
        if message.need:  # it could not take what we sent: a gap, or it restarted
            follower.next = min(message.need, self.last + 1)
        self._dirty = True

    def _lagging(self, follower: FollowerState) -> bool:
        return follower.match < self.last or follower.commit < self.commit

    def _advance_commit(self, now: float, out: list[Action]) -> None:
        """Committed = held by `quorum` daemons, the leader included; without a quorum, by the
        leader and at least one follower (by the leader alone if alone)."""
        matches = sorted((f.match for f in self.followers.values()), reverse=True)
        if not self.limits.quorum:
            held = matches[0] if matches else self.last
        elif self.limits.quorum <= 1:
            held = self.last
        elif len(matches) >= self.limits.quorum - 1:
            held = matches[self.limits.quorum - 2]
        else:
            return
        self._commit_to(min(held, self.last), now, out)

    # ----------------------------------------------------------------- batching

    def hold(self) -> None:
        """Gather the output of the inputs that follow until `release`.

        The service holds while it drains one event-loop turn's worth of requests and link
        messages, so a burst of sends costs one FORWARD, one APPEND per follower, one ACK
        and one store transaction rather than one of each per message.
        """
        self._held = True

    def release(self, now: float) -> list[Action]:
        self._held = False
        return self._done(now, [])

    def _done(self, now: float, out: list[Action]) -> list[Action]:
        """The end of an input: flush what it produced, unless held."""
        if not self._held:
            self._flush(now, out)
        return out

    def _flush(self, now: float, out: list[Action]) -> None:
        forwards, self._forwards = self._forwards, []
        if forwards and self.leader not in (None, self.name):
            while forwards:
                batch = fitting(forwards[:MAX_BATCH])
                out.append(Transmit(self.leader, Forward(self.name, self.term, batch)))
                del forwards[:len(batch)]
        if self._ack_due is not None:
            if self._ack_due == self.leader:
                out.append(Transmit(self._ack_due, Ack(self.name, self.term, self.matched, self.commit, 0)))
            self._ack_due = None
        if self._dirty:
            self._dirty = False
            if self.role == ACTIVE:
                self._advance_commit(now, out)
                for name in sorted(self.followers):
                    self._replicate(name, now, out)

    # -------------------------------------------------------------- follower

    def receive(self, message: LinkMessage, now: float) -> list[Action]:
        """A link message from another daemon (already decoded by `dsd.linkwire`)."""
        out: list[Action] = []
        if message.term > self.term:
            if len(self._early) < MAX_EARLY:
                self._early.append((message, now))
            return out
        if isinstance(message, Forward):
            self._on_forward(message, now, out)
        elif isinstance(message, Result):
            self._on_results(message.results, now, out)
        elif message.term < self.term:
            self.counters.link_messages_ignored += 1
        elif isinstance(message, Ack):
            self._on_ack(message, now, out)
        elif isinstance(message, Status):
            if self.role == GATHERING and self.gathering is not None and message.src in self.peers:
                self.gathering.statuses[message.src] = message
                self._gathered(now, out)
        elif isinstance(message, Entries):
            self._on_entries(message, now, out)
        elif isinstance(message, Snapshot) and self.leader == self.name:
            self._on_snapshot(message, now, out)  # from the fetch source
        elif message.src != self.leader:
            self.counters.link_messages_ignored += 1
        elif isinstance(message, Gather):
            self.matched = self.commit
            out.append(Transmit(message.src, Status(self.name, self.term, self.commit, self.last, self.last_term)))
        elif isinstance(message, Fetch):
            self._on_fetch(message, out)
        elif isinstance(message, Append):
            self._on_append(message, now, out)
        elif isinstance(message, Snapshot):
            self._on_snapshot(message, now, out)
        return self._done(now, out)

    def _on_fetch(self, message: Fetch, out: list[Action]) -> None:
        after = message.after
        base = self.store.base() if after < self.store.first_seq() - 1 else None
        if base is not None:
            out.extend(Transmit(message.src, part) for part in self._snapshot_parts(base))
            after = base.seq
        out.append(Transmit(message.src, Entries(self.name, self.term, self._read(after, MAX_BATCH))))

    def _on_snapshot(self, message: Snapshot, now: float, out: list[Action]) -> None:
        """A part of a snapshot from the leader or, while this new leader fetches, from its source."""
        gathering = self.gathering
        if self.leader == self.name and (self.role != FETCHING or gathering is None or message.src != gathering.best):
            self.counters.link_messages_ignored += 1
            return
        base = self._assemble(message)
        if base is None:
            return
        held = self.commit + len(gathering.fetched) if gathering is not None else self.matched
        if base.seq > held:
            self._install(base, message.src, now, out)
            if gathering is not None:
                gathering.fetched = []  # all at or before the base
        if gathering is None:
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
        return Base(part.base, part.base_term, {join["user"]: join for join in users})

    def _install(self, base: Base, source: str, now: float, out: list[Action]) -> None:
        """Go on from `base`: the entries up to it were trimmed everywhere before this daemon got them."""
        self.store.install(base)
        self.counters.snapshots_installed += 1
        skipped = base.seq - self.commit
        self.tail = self.tail[skipped:]
        self.commit, self.commit_term = base.seq, base.term
        self.matched = max(self.matched, base.seq)
        self.presence = self.store.users()
        self._sync_sessions(now)
        out.append(Log("warning", f"chat: installed a snapshot from {source} at seq {base.seq}: "
                                  f"{skipped} entries trimmed before they reached this daemon are not published here"))
        self._resolve_known(out)

    def _on_append(self, message: Append, now: float, out: list[Action]) -> None:
        if message.prev > self.matched:
            out.append(Transmit(message.src, Ack(self.name, self.term, self.matched, self.commit, self.matched + 1)))
            return
        for entry in message.entries:
            index = entry["seq"] - self.commit - 1
            if index < 0:
                continue
            if index < len(self.tail):
                if same_entry(self.tail[index], entry):
                    continue
                del self.tail[index:]
            self.tail.append(entry)
        if message.entries:
            self.matched = max(self.matched, message.entries[-1]["seq"])
        committed = self.commit
        if self.limits.quorum > 2:  # the leader and this follower are not enough: wait for its word
            self._commit_to(min(message.commit, self.matched), now, out)
        else:  # held by the leader and by this follower: committed
            self._commit_to(self.matched, now, out)
        if message.entries or self.commit > committed:
            self._ack_due = message.src

    # -------------------------------------------------------------- commit

    def _commit_to(self, seq: int, now: float, out: list[Action]) -> None:
        """Store, publish and act on the entries up to `seq`."""
        count = seq - self.commit
        if count <= 0:
            return
        entries, self.tail = self.tail[:count], self.tail[count:]
        self.store.append(entries)
        self.commit = seq
        self.commit_term = entries[-1]["term"]
        self.counters.entries_committed += len(entries)
        for entry in entries:
            self._pending.pop((entry["user"], entry["id"]), None)
            if self._tail_presence.get(entry["user"]) is entry:
                del self._tail_presence[entry["user"]]
            self._apply_presence(entry, now)
            topic = "chat.message" if entry["kind"] == "message" else "chat.presence"
            out.append(Publish(topic, public(entry)))
            self._resolve((entry["user"], entry["id"]), entry["seq"], out)
        self._resolve_known(out)

    def _resolve_known(self, out: list[Action]) -> None:
        for key, known in list(self.known.items()):
            if known <= self.commit:
                del self.known[key]
                self._resolve(key, known, out)

    def _apply_presence(self, entry: Entry, now: float) -> None:
        user = entry["user"]
        if entry["kind"] == "message":
            return
        if entry["kind"] == "join":
            self.presence[user] = entry
            session = self.sessions.get(user)
            if entry["server"] != self.name:
                self.sessions.pop(user, None)
            elif session is None or session.session != entry["session"]:
                self.sessions[user] = Session(entry["session"], now, float(self.limits.burst), now)
        else:
            self.presence.pop(user, None)
            if entry["server"] == self.name:
                self.sessions.pop(user, None)
        self.orphans.pop(user, None)

    # -------------------------------------------------------------- proposer

    def _propose(self, proposal: Proposal, waiter: Waiter | None, now: float, out: list[Action]) -> None:
        key = (proposal["user"], proposal["id"])
        if waiter is not None:
            self._wait(key, waiter)
        self.outbox[key] = proposal
        if self.leader == self.name:
            if self.role == ACTIVE:
                self._sequence(proposal, self.name, now, out)
                self._dirty = True
            else:
                self.queue.append(proposal)
        elif self.leader is not None:
            self.counters.proposals_forwarded += 1
            self._forwards.append(proposal)
            self._forwarded.pop(key, None)
            self._forwarded[key] = now

    def _on_forward(self, message: Forward, now: float, out: list[Action]) -> None:
        if self.leader != self.name:
            self.counters.link_messages_ignored += 1  # the proposer re-sends once it knows the leader
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

    def _on_results(self, results: list[dict[str, Any]], now: float, out: list[Action]) -> None:
        for result in results:
            key = (result["user"], result["id"])
            if key not in self.outbox:
                continue
            del self.outbox[key]
            self._forwarded.pop(key, None)
            if "code" in result:
                for waiter in self.waiting.pop(key, []):
                    out.append(Reply(waiter.request, error=(result["code"], result["message"])))
            elif result["seq"] <= self.commit:
                self._resolve(key, result["seq"], out)
            else:
                self.known[key] = result["seq"]

    def _resolve(self, key: Key, seq: int, out: list[Action]) -> None:
        self.outbox.pop(key, None)
        self._forwarded.pop(key, None)
        for waiter in self.waiting.pop(key, []):
            result: dict[str, Any] = {"seq": seq}
            if waiter.kind == "join":
                result.update(user=key[0], server=self.name, client_timeout=self.limits.client_timeout)
            out.append(Reply(waiter.request, result))

    # ---------------------------------------------------------------- clients

    def join(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        out: list[Action] = []
        if not USER_PATTERN.match(user):
            out.append(Reply(request, error=(
                "bad_user", "a user name is 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )))
            return out
        if not SESSION_PATTERN.match(session):
            out.append(Reply(request, error=("bad_args", "session must be 16-64 characters of A-Z a-z 0-9 _ -")))
            return out
        current = self._present(user) if self.role == ACTIVE else None  # a follower's view may lag: the leader decides
        if current is not None and current["session"] != session:
            out.append(Reply(request, error=("name_taken", f"the name {user!r} is in use on {current['server']}")))
            return out
        waiter = Waiter(request, "join", now + self.limits.request_timeout)
        joining = 0
        for key, proposal in self.outbox.items():
            if proposal["kind"] == "join" and proposal["user"] == user and proposal["session"] == session:
                self._wait(key, waiter)
                return out
            joining += proposal["kind"] == "join" and proposal["user"] not in self.sessions
        if user not in self.sessions and len(self.sessions) + joining >= self.limits.max_clients:
            self.counters.proposals_refused += 1
            out.append(Reply(request, error=(
                "too_many_clients", f"this daemon has its limit of {self.limits.max_clients} users ([chat] max_clients); "
                "try another daemon or later")))
            return out
        self._propose(self._proposal("join", user, session, ""), waiter, now, out)
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
            return out
        client = self.sessions[user]
        client.last_heard = now
        key = (user, id)
        committed = self.store.find(user, id)
        if committed is not None:
            out.append(Reply(request, {"seq": committed}))
            return out
        waiter = Waiter(request, "message", now + self.limits.request_timeout)
        if key in self.outbox:
            self._wait(key, waiter)
            return out
        if not self._take_token(client, now):
            out.append(Reply(request, error=(
                "rate_limited", f"more than {self.limits.rate:g} messages/s (burst {self.limits.burst}); retry shortly",
            )))
            return out
        proposal = {"kind": "message", "user": user, "text": text, "id": id, "server": self.name, "session": session}
        self._propose(proposal, waiter, now, out)
        return self._done(now, out)

    def heartbeat(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        error = self._session_error(user, session)
        if error is not None:
            return [Reply(request, error=error)]
        self.sessions[user].last_heard = now
        return [Reply(request, {"last_seq": self.commit})]

    def leave(self, request: Any, user: str, session: str, now: float) -> list[Action]:
        out: list[Action] = []
        error = self._session_error(user, session)
        if error is not None:
            out.append(Reply(request, error=error))
            return out
        del self.sessions[user]
        waiter = Waiter(request, "leave", now + self.limits.request_timeout)
        self._propose(self._proposal("leave", user, session, ""), waiter, now, out)
        return self._done(now, out)

    def _wait(self, key: Key, waiter: Waiter) -> None:
        """`waiter` waits for the proposal `key` until it is resolved or its deadline passes (`tick`)."""
        self.waiting.setdefault(key, []).append(waiter)
        heapq.heappush(self._deadlines, (waiter.deadline, next(self._deadline_ids), key, waiter))

    def _first_waiter(self) -> Waiter | None:
        """The waiter with the earliest deadline, dropping the replied ones ahead of it."""
        deadlines = self._deadlines
        while deadlines:
            _, _, key, waiter = deadlines[0]
            if any(w is waiter for w in self.waiting.get(key, ())):
                return waiter
            heapq.heappop(deadlines)
        return None

    def _session_error(self, user: str, session: str) -> tuple[str, str] | None:
        client = self.sessions.get(user)
        if client is not None and client.session == session:
            return None
        return "not_joined", f"{user!r} has not joined through this server (or timed out): join first"

    def _take_token(self, client: Session, now: float) -> bool:
        client.tokens = min(float(self.limits.burst), client.tokens + (now - client.refilled) * self.limits.rate)
        client.refilled = now
        if client.tokens < 1:
            return False
        client.tokens -= 1
        return True

    def _proposal(self, kind: str, user: str, session: str, text: str, server: str | None = None) -> Proposal:
        return {
            "kind": kind, "user": user, "text": text, "id": f"{kind}-{self._id_prefix}-{next(self._ids)}",
            "server": server or self.name, "session": session,
        }

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[Action]:
        """Retries, client timeouts, request deadlines."""
        out: list[Action] = []
        self._expire_clients(now, out)
        if self.leader == self.name:
            self._leader_tick(now, out)
        elif self.leader is not None:
            self._forward_again(now, out)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, key, waiter = heapq.heappop(self._deadlines)
            waiters = self.waiting.get(key, [])
            if not any(w is waiter for w in waiters):
                continue  # replied already
            waiters[:] = [w for w in waiters if w is not waiter]
            if not waiters:
                del self.waiting[key]
            out.append(Reply(waiter.request, error=(
                "unavailable", "not committed in time (no leader?); retry with the same id",
            )))
        return self._done(now, out)

    def _forward_again(self, now: float, out: list[Action]) -> None:
        """Forward again each proposal not committed within resend_interval of its last forward."""
        due = []
        for key, sent in self._forwarded.items():
            if now < sent + self.limits.resend_interval:
                break
            due.append(key)
        proposals = []
        for key in due:
            del self._forwarded[key]
            if key in self.outbox:
                proposals.append(self.outbox[key])
                self._forwarded[key] = now
        while proposals:
            batch = fitting(proposals[:MAX_BATCH])
            out.append(Transmit(self.leader, Forward(self.name, self.term, batch)))  # type: ignore[arg-type]
            del proposals[:len(batch)]

    def _expire_clients(self, now: float, out: list[Action]) -> None:
        for user, client in list(self.sessions.items()):
            if now >= client.last_heard + self.limits.client_timeout:
                del self.sessions[user]
                out.append(Log("info", f"chat: {user} timed out"))
                self._propose(self._proposal("timeout", user, client.session, ""), None, now, out)

    def _leader_tick(self, now: float, out: list[Action]) -> None:
        gathering = self.gathering
        if gathering is not None and now >= gathering.sent + self.limits.resend_interval:
            gathering.sent = now
            if self.role == GATHERING and now >= gathering.started + self.limits.gather_timeout:
                self._gathered(now, out, force=True)
            elif self.role == GATHERING:
                for name in sorted(self.peers - set(gathering.statuses)):
                    out.append(Transmit(name, Gather(self.name, self.term)))
            elif gathering.best is not None:
                out.append(Transmit(gathering.best, Fetch(self.name, self.term, self.commit + len(gathering.fetched))))
        if self.role != ACTIVE:
            return
        for name, follower in self.followers.items():
            if self._lagging(follower) and now >= follower.progress + self.limits.resend_interval:
                follower.next = follower.match + 1
                follower.told = follower.commit
                follower.progress = now
                self._replicate(name, now, out)
        self._expire_orphans(now, out)

    def _expire_orphans(self, now: float, out: list[Action]) -> None:
        """Users whose daemon left the cluster time out unless they come back elsewhere."""
        alive = self.peers | {self.name}
        orphans = {
            user: entry for user in self.presence
            if (entry := self._present(user)) is not None and entry["server"] not in alive
        }
        for user in set(self.orphans) - set(orphans):
            del self.orphans[user]
        sequenced = False
        for user, entry in sorted(orphans.items()):
            since = self.orphans.setdefault(user, now)
            if now >= since + self.limits.client_timeout:
                del self.orphans[user]
                proposal = self._proposal("timeout", user, entry["session"], "", server=entry["server"])
                self._sequence(proposal, self.name, now, out)
                sequenced = True
        if sequenced:
            self._dirty = True

    def next_deadline(self) -> float | None:
        """When `tick` must run next, or None when nothing is waiting on time."""
        deadlines = [s.last_heard + self.limits.client_timeout for s in self.sessions.values()]
        waiter = self._first_waiter()
        if waiter is not None:
            deadlines.append(waiter.deadline)
        if self._forwarded and self.leader not in (None, self.name):
            deadlines.append(next(iter(self._forwarded.values())) + self.limits.resend_interval)
        if self.gathering is not None:
            deadlines.append(self.gathering.sent + self.limits.resend_interval)
        if self.role == ACTIVE:
            deadlines += [f.progress + self.limits.resend_interval for f in self.followers.values() if self._lagging(f)]
            deadlines += [since + self.limits.client_timeout for since in self.orphans.values()]
        return min(deadlines, default=None)

    # ------------------------------------------------------------- queries

    def history(self, limit: int) -> dict[str, Any]:
        """The newest `limit` entries, fewer if they would exceed MAX_REPLY_BYTES."""
        newest_first = _fitting_reply(reversed(self.store.latest(limit)))
        return {"entries": [public(e) for e in reversed(newest_first)], "last_seq": self.commit}

    def since(self, seq: int, limit: int) -> dict[str, Any]:
        """Entries after `seq` (fewer than `limit` past MAX_REPLY_BYTES: the client asks again);
        `first_seq` > seq + 1 says the ones between were trimmed here."""
        entries = [public(e) for e in _fitting_reply(self.store.read(seq, limit))]
        return {"entries": entries, "last_seq": self.commit, "first_seq": self.store.first_seq()}

    def who(self) -> list[dict[str, Any]]:
        return [
            {"user": user, "server": entry["server"], "since": entry["time"]}
            for user, entry in sorted(self.presence.items())
        ]
