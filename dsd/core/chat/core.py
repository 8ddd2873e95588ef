"""`Chat`: one daemon's part in the chat log, composing its roles (candidate, voter, sequencer)
with its proposer and presence, and owning what they share: the epoch, the view and the log.
The rules are in the package docstring and in each role's module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dsd.core.actions import Action, Log, Publish, Reply, Transmit
from dsd.core.chat.candidate import Candidate, Gathering
from dsd.core.chat.config import Config
from dsd.core.chat.log import ChatLog
from dsd.core.chat.presence import Presence, Session
from dsd.core.chat.proposer import Key, Proposer, Waiter
from dsd.core.chat.roles import ACTIVE, CATCHING_UP, FETCHING, FOLLOWING, GATHERING, OTHER_CLUSTER, VOTER
from dsd.core.chat.sequencer import FollowerState, Sequencer
from dsd.core.chat.voter import Voter
from dsd.core.link_messages import (
    ID_PATTERN, MAX_BATCH, PUBLIC_KEYS, SESSION_PATTERN, USER_PATTERN, Ack, Append, Entries, Entry, Fetch,
    Forward, Gather, LinkMessage, Proposal, Refuse, Remove, Result, Snapshot, Status, fitting, utf8_size,
)
from dsd.store import ChatState, Store

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


class Chat(Candidate, Voter, Sequencer):
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
        self._snapshot: tuple[tuple[str, int, int, int, int, int], list[Entry], list[list[Any]]] | None = None  # parts so far
        # Output gathered over a batch of inputs (see `hold`) and returned by `release`:
        self._held: list[Action] | None = None
        self._dirty = False  # sequencer: new entries, acks or a view change to act on
        self._ack_due: str | None = None  # follower: the sequencer is owed an ACK
        self._quorum_cache: tuple[Any, ...] | None = None  # see _quorum_error

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


    def _quorum_error(self) -> tuple[str, str] | None:
        """no_quorum when this daemon's side of the network holds no quorum of the voters.

        Asked for every proposal, it changes only with the configuration, the view and the
        foreign daemons: the answer is kept until one of them changes."""
        config, foreign = self.log.config, self.leader in self.foreign
        cached = self._quorum_cache
        if (cached is not None and cached[0] is config and cached[1] is self.peers and cached[2] is self.leader
                and cached[3] is foreign):
            return cached[4]
        live = set(self.peers) | {self.name}
        error: tuple[str, str] | None = None
        if self.leader in self.foreign:
            error = "unavailable", (f"the leader {self.leader} belongs to another chat cluster: this daemon's "
                                    "cluster has no sequencer (see README, two chat clusters)")
        elif config is not None and not config.is_quorum(live):
            error = "no_quorum", config.shortfall(live)
        self._quorum_cache = (config, self.peers, self.leader, foreign, error)
        return error

    # ----------------------------------------------------------------- commit

    def _commit_to(self, seq: int, now: float, out: list[Action]) -> None:
        """Publish and act on the entries up to `seq` (stored at the end of the input): every
        entry's event first, then the replies, so that the feed gets runs of one topic."""
        entries = self.log.take_committed(seq)
        if not entries:
            return
        self.counters.entries_committed += len(entries)
        pending, waiting = self._pending, self.proposer.waiting
        resolved: list[tuple[Key, int]] = []
        for entry in entries:
            key = (entry["user"], entry["id"])
            pending.pop(key, None)
            kind = entry["kind"]
            if kind == "message":
                topic = "chat.message"
            elif kind == "config":
                config = self.log.config
                if not self.cluster and config is not None:
                    self._adopt_cluster(config.cluster)
                topic = "chat.config"
            else:
                self.presence.committed(entry, now)
                topic = "chat.presence"
            out.append(Publish(topic, public(entry)))
            if key in waiting or key in self.proposer.outbox:
                resolved.append((key, entry["seq"]))
        for key, at in resolved:
            self._resolve(key, at, out)
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
