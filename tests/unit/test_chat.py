"""The chat log core (`dsd.core.chat.Chat`), one daemon at a time, on a fake clock.

Each test drives a single Chat by hand: client requests, link messages written out in
full, view changes and ticks, and checks the actions it returns. Times are plain floats
chosen to be exact in binary, so deadlines compare with ==. Every link message a test
looks at through `transmits` is also checked to survive `dsd.linkwire`'s codec. Many
daemons together are the business of tests/sim/.

The cast: L is the view's leader (and sequencer) unless said otherwise; F is the daemon
under test when it follows; A, B, C, D and G are other daemons. Every daemon has priority
100, so the tie-breaker of an even configuration is the highest name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dsd import linkwire
from dsd.core.actions import Action, Log, Publish, Reply, Transmit
from dsd.core.chat import ACTIVE, CATCHING_UP, FETCHING, FOLLOWING, GATHERING, VOTER, Chat, ChatLimits, public
from dsd.core.chat import core as chat_core
from dsd.core.chat import sequencer as chat_sequencer
from dsd.core.chat.config import Config, parse
from dsd.core.link_messages import (
    MAX_BATCH, MAX_LINK_MESSAGE, PUBLIC_KEYS, Ack, Append, Entries, Fetch, Forward, Gather, Refuse, Remove, Result, Snapshot,
    Status,
)
from dsd.store import Base, ChatState, MemoryStore

# client timeout 8, request timeout 4, resend 0.25, gather timeout 1, dead after 16: exact binary fractions.
LIMITS = ChatLimits(client_timeout=8.0, max_message=8, rate=4.0, burst=3, resend_interval=0.25,
                    request_timeout=4.0, gather_timeout=1.0, remove_dead_after=16.0)
WALL = 1_700_000_000.0
INC = 7  # the incarnation: a cluster formed here is "7", presence ids are "<kind>:7:<n>"
CLUSTER = "7"
S = "alice-session-0001"
S2 = "other-session-0002"
BOB = "bob-session-00003"
EPS = 2**-20


# ------------------------------------------------------------------ building blocks


def make(name: str = "L", store: MemoryStore | None = None, limits: ChatLimits = LIMITS,
         incarnation: int = INC, priority: int = 100) -> Chat:
    return Chat(name, store if store is not None else MemoryStore(1000), limits, WALL, incarnation, priority)


def peers(*names: str) -> dict[str, int]:
    return {name: 100 for name in names}


def config_text(voters: str | tuple[str, ...], old: str | tuple[str, ...] | None = None, cluster: str = CLUSTER) -> str:
    return Config(cluster, peers(*voters), None if old is None else peers(*old)).text()


def config_entry(seq: int, term: int = 1, voters: str | tuple[str, ...] = ("F", "G", "L"),
                 old: str | tuple[str, ...] | None = None, server: str = "L", cluster: str = CLUSTER) -> dict[str, Any]:
    return {"kind": "config", "user": "", "text": config_text(voters, old, cluster), "id": f"config:9:{seq}",
            "server": server, "session": "", "seq": seq, "term": term, "time": WALL}


def proposal(kind: str = "message", user: str = "alice", text: str = "hi", id: str = "m1",
             server: str = "F", session: str = S) -> dict[str, Any]:
    return {"kind": kind, "user": user, "text": text, "id": id, "server": server, "session": session}


def entry(seq: int, term: int = 1, at: float = 0.0, **changes: Any) -> dict[str, Any]:
    return {**proposal(**changes), "seq": seq, "term": term, "time": WALL + at}


def join_entry(seq: int, term: int = 1, at: float = 0.0, **changes: Any) -> dict[str, Any]:
    return entry(seq, term, at, **{"kind": "join", "text": "", "id": f"join:9:{seq}", **changes})


def joined(seq: int, server: str, user: str = "alice") -> dict[str, Any]:
    """A join's reply: the entry's seq, who, where, and the heartbeat deadline the client must keep."""
    return {"seq": seq, "user": user, "server": server, "client_timeout": LIMITS.client_timeout}


def append(prev: int, entries: list[dict[str, Any]], commit: int, term: int = 1, prev_term: int | None = None,
           src: str = "L", cluster: str = CLUSTER) -> Append:
    """An APPEND from `src`; prev_term defaults to `term` (0 at prev 0)."""
    if prev_term is None:
        prev_term = 0 if prev == 0 else term
    return Append(src, term, cluster, prev, prev_term, entries, commit)


def transmits(actions: list[Action], kind: type | None = None) -> list[tuple[str, Any]]:
    """(to, message) of the Transmits, each checked to survive the link codec unchanged."""
    found = []
    for action in actions:
        if isinstance(action, Transmit) and (kind is None or isinstance(action.message, kind)):
            assert linkwire.decode(linkwire.encode(action.message)) == action.message
            found.append((action.to, action.message))
    return found


def replies(actions: list[Action]) -> list[Reply]:
    return [a for a in actions if isinstance(a, Reply)]


def errors(actions: list[Action]) -> list[str]:
    return [a.error[0] for a in replies(actions) if a.error is not None]


def published(actions: list[Action], topic: str | None = None) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, Publish) and (topic is None or a.topic == topic)]


def logs(actions: list[Action], level: str | None = None) -> list[str]:
    return [a.text for a in actions if isinstance(a, Log) and (level is None or a.level == level)]


def advance(chat: Chat, start: float, until: float) -> list[tuple[float, Action]]:
    """Tick at every deadline from `start` up to `until`, as the service's timer would."""
    out: list[tuple[float, Action]] = []
    now = start
    while (deadline := chat.next_deadline()) is not None and deadline <= until:
        now = max(deadline, now)
        out += [(now, action) for action in chat.tick(now)]
        after = chat.next_deadline()
        assert after is None or after > now, f"tick({now}) left next_deadline() at {after}"
    return out


def configs_in(chat: Chat, after: int = 0) -> list[Config]:
    """The configurations of the config entries `chat` holds after `after`, committed or not."""
    return [parse(e["text"]) for e in chat.log.read(after, 10**6) if e["kind"] == "config"]


class RecordingStore(MemoryStore):
    """A MemoryStore that records every write, in order, with the chat state at that moment."""

    def __init__(self, retention: int = 1000) -> None:
        super().__init__(retention)
        self.writes: list[tuple[str, Any]] = []

    def save_state(self, state: ChatState) -> None:
        super().save_state(state)
        self.writes.append(("state", state))

    def append(self, entries: list[dict[str, Any]], commit: int | None = None) -> None:
        super().append(entries, commit)
        self.writes.append(("append", ([e["seq"] for e in entries], commit)))


# ------------------------------------------------------------------ roles


def lone(name: str = "L", store: MemoryStore | None = None, limits: ChatLimits = LIMITS) -> Chat:
    """`name` alone: it forms a cluster of one voter, whose config entry (seq 1) it commits at once."""
    c = make(name, store, limits)
    c.start(0.0)
    c.set_view(name, {}, 0.0)
    assert (c.role, c.commit, c.config) == (ACTIVE, 1, Config(CLUSTER, peers(name)))
    return c


def sequencer(*others: str, limits: ChatLimits = LIMITS) -> Chat:
    """L forms a cluster with `others` (default A and B) in epoch 1; everyone holds and has
    committed the config entry (seq 1), and L knows it."""
    others = others or ("A", "B")
    c = make("L", limits=limits)
    c.set_view("L", peers(*others), 0.0)
    for name in others:
        c.receive(Status(name, 1, "", 0, 0, 0), 0.0)
    assert c.role == ACTIVE and c.log.last == 1
    for name in others:
        c.receive(Ack(name, 1, 1, 0, 0), 0.0)
    for name in others:
        c.receive(Ack(name, 1, 1, 1, 0), 0.0)
    assert c.commit == 1 and c.config == Config(CLUSTER, peers("L", *others))
    assert not any(c._lagging(f) for f in c.followers.values())
    return c


def join_on_sequencer(c: Chat, user: str = "alice", session: str = S, at: float = 0.0) -> int:
    """`user` joins on sequencer `c`; its followers acknowledge, and the join commits."""
    c.join(f"join-{user}", user, session, at)
    seq = c.log.last
    out: list[Action] = []
    for name in sorted(c.followers):
        out += c.receive(Ack(name, c.epoch, seq, c.commit, 0), at)
    assert replies(out) == [Reply(f"join-{user}", joined(seq, c.name, user))]
    for name in sorted(c.followers):
        c.receive(Ack(name, c.epoch, seq, seq, 0), at)
    return seq


def joined_alone(c: Chat, user: str = "alice", session: str = S, at: float = 0.0) -> int:
    (reply,) = replies(c.join(f"join-{user}", user, session, at))
    assert reply.error is None, reply
    return reply.result["seq"]


def follower(name: str = "F", voters: tuple[str, ...] = ("F", "G", "L"), leader: str = "L", epoch: int = 1) -> Chat:
    """`name` promised `epoch` to L and holds L's config entry (seq 1) of `voters`, committed."""
    c = make(name, incarnation=9)
    c.set_view(leader, peers(*[v for v in voters if v != name]), 0.0)
    assert transmits(c.receive(Gather(leader, epoch, ""), 0.0)) == [(leader, Status(name, epoch, "", 0, 0, 0))]
    out = c.receive(append(0, [config_entry(1, epoch, voters)], 1, term=epoch, src=leader), 0.0)
    assert transmits(out) == [(leader, Ack(name, epoch, 1, 1, 0))]
    assert (c.role, c.commit, c.cluster, c.sequencer) == (FOLLOWING, 1, CLUSTER, leader)
    return c


def follower_with_alice(voters: tuple[str, ...] = ("F", "G", "L")) -> Chat:
    """F follows L (3 voters); alice joined through F and her join (seq 2) is committed."""
    c = follower(voters=voters)
    out = c.join("rj", "alice", S, 0.0)
    assert transmits(out) == [("L", Forward("F", 1, [proposal("join", text="", id="join:9:1")]))]
    out = c.receive(append(1, [join_entry(2, id="join:9:1")], 2), 0.0)
    assert replies(out) == [Reply("rj", joined(2, "F"))]
    return c


class Net:
    """A few real cores wired together: every Transmit is encoded, decoded and delivered at
    once, in order, until nothing is left in flight. For rules that need both ends."""

    def __init__(self, names: str, leader: str) -> None:
        self.chats = {name: make(name, incarnation=i) for i, name in enumerate(names, 1)}
        self.said: list[Any] = []  # every link message transmitted
        self.run(lambda c: c.set_view(leader, peers(*[n for n in names if n != c.name]), 0.0))

    def run(self, call: Any) -> dict[str, list[Action]]:
        """`call(chat)` on every core, then deliver; returns what each did besides transmitting."""
        return self.deliver([(name, action) for name, chat in self.chats.items() for action in call(chat)])

    def deliver(self, actions: list[tuple[str, Action]], now: float = 0.0) -> dict[str, list[Action]]:
        done: dict[str, list[Action]] = {name: [] for name in self.chats}
        while actions:
            source, action = actions.pop(0)
            if not isinstance(action, Transmit):
                done[source].append(action)
            elif action.to in self.chats:
                self.said.append(action.message)
                message = linkwire.decode(linkwire.encode(action.message))
                actions += [(action.to, a) for a in self.chats[action.to].receive(message, now)]
        return done


# ------------------------------------------------------------------ candidacy


def test_the_view_leader_raises_its_epoch_and_persists_its_vote_before_any_gather() -> None:
    store = RecordingStore()
    store.save_state(ChatState("", 4, "X"))
    store.writes = []
    c = make("L", store)
    out = c.set_view("L", peers("A", "B"), 0.0)
    assert transmits(out) == [("A", Gather("L", 5, "")), ("B", Gather("L", 5, ""))]
    assert store.writes == [("state", ChatState("", 5, "L"))]  # on disk by the time the GATHERs leave
    assert (c.role, c.epoch, c.voted_for, c.counters.epochs_started) == (GATHERING, 5, "L", 1)


def test_a_candidate_outbids_every_epoch_it_has_heard_of() -> None:
    c = make("L")
    c.set_view("F", peers("F", "A"), 0.0)
    assert transmits(c.receive(Gather("A", 6, ""), 0.0)) == [("A", Refuse("L", 0, "", "leader"))]
    assert c.epoch == 0  # refused: nothing promised
    out = c.set_view("L", peers("F", "A"), 0.5)
    assert transmits(out) == [("A", Gather("L", 7, "")), ("F", Gather("L", 7, ""))]
    assert c.store.state() == ChatState("", 7, "L")


def test_a_formed_daemon_names_its_cluster_in_its_gathers() -> None:
    c = follower()
    out = c.set_view("F", peers("G", "L"), 1.0)
    assert transmits(out) == [("G", Gather("F", 2, CLUSTER)), ("L", Gather("F", 2, CLUSTER))]


def test_each_candidacy_is_a_new_epoch() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 0.0)
    c.set_view("A", peers("A"), 0.5)
    assert c.role == FOLLOWING
    assert transmits(c.set_view("L", peers("A"), 1.0)) == [("A", Gather("L", 2, ""))]
    assert c.store.state() == ChatState("", 2, "L")


def test_gather_is_resent_to_the_silent_every_resend_interval() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    assert c.next_deadline() == 0.25
    history = advance(c, 0.0, 0.75)
    assert [(t, a.to, a.message) for t, a in history if isinstance(a, Transmit)] == [
        (t, "B", Gather("L", 1, "")) for t in (0.25, 0.5, 0.75)]
    assert c.role == GATHERING


def test_status_of_another_epoch_or_from_outside_the_view_is_ignored() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 0.0)
    c.receive(Status("X", 1, "", 0, 0, 0), 0.0)
    c.receive(Status("A", 0, "", 0, 0, 0), 0.0)
    assert c.role == GATHERING and c.counters.link_messages_ignored == 2
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    assert c.role == ACTIVE


def test_a_refusal_of_a_newer_epoch_makes_the_candidate_try_a_newer_one_still() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    out = c.receive(Refuse("A", 4, "", "epoch"), 0.0)
    assert transmits(out) == [("A", Gather("L", 5, "")), ("B", Gather("L", 5, ""))]
    assert c.store.state() == ChatState("", 5, "L")


def test_a_refusal_as_not_the_leader_is_asked_again_later() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 0.0)
    assert transmits(c.receive(Refuse("A", 0, "", "leader"), 0.0)) == []
    assert c.epoch == 1
    assert [a.message for _, a in advance(c, 0.0, 0.25) if isinstance(a, Transmit)] == [Gather("L", 1, "")]


def test_a_refusal_from_another_cluster_is_warned_about_once() -> None:
    c = follower()
    c.set_view("F", peers("G", "L", "X"), 1.0)
    out = c.receive(Refuse("X", 3, "other", "cluster"), 1.0) + c.receive(Refuse("X", 3, "other", "cluster"), 1.0)
    assert [t for t in logs(out, "warning") if "X belongs to chat cluster other" in t] == [logs(out, "warning")[0]]
    assert len(logs(out, "warning")) == 1
    assert c.roles() == {"F": VOTER, "G": VOTER, "L": VOTER, "X": "other cluster"}


# ------------------------------------------------------------------ voter


def test_a_voter_promises_its_view_leader_on_disk_before_answering() -> None:
    store = RecordingStore()
    c = make("F", store)
    c.set_view("L", peers("L"), 0.0)
    out = c.receive(Gather("L", 3, ""), 0.0)
    assert transmits(out) == [("L", Status("F", 3, "", 0, 0, 0))]
    assert store.writes == [("state", ChatState("", 3, "L"))]
    assert (c.epoch, c.voted_for, c.sequencer) == (3, "L", "L")


def test_status_tells_the_voters_log() -> None:
    store = MemoryStore(1000)
    store.append([config_entry(1, 1), join_entry(2), entry(3, term=2)], commit=2)
    c = make("F", store)
    c.set_view("G", peers("G", "L"), 0.0)
    assert transmits(c.receive(Gather("G", 3, CLUSTER), 0.0)) == [("G", Status("F", 3, "", 2, 3, 2))]


def test_the_same_gather_again_is_answered_again_without_a_new_promise() -> None:
    store = RecordingStore()
    c = make("F", store)
    c.set_view("L", peers("L"), 0.0)
    c.receive(Gather("L", 3, ""), 0.0)
    assert transmits(c.receive(Gather("L", 3, ""), 0.5)) == [("L", Status("F", 3, "", 0, 0, 0))]
    assert len(store.writes) == 1


def test_a_voter_refuses_an_older_epoch() -> None:
    c = make("F")
    c.set_view("L", peers("L"), 0.0)
    c.receive(Gather("L", 3, ""), 0.0)
    assert transmits(c.receive(Gather("L", 2, ""), 0.0)) == [("L", Refuse("F", 3, "", "epoch"))]
    assert c.store.state() == ChatState("", 3, "L")


def test_a_voter_refuses_a_second_candidate_of_the_epoch_it_promised() -> None:
    c = make("F")
    c.set_view("L", peers("L", "M"), 0.0)
    c.receive(Gather("L", 3, ""), 0.0)
    c.set_view("M", peers("L", "M"), 0.5)  # M is the leader now, but epoch 3 is L's
    assert transmits(c.receive(Gather("M", 3, ""), 0.5)) == [("M", Refuse("F", 3, "", "epoch"))]
    assert c.store.state() == ChatState("", 3, "L")
    assert transmits(c.receive(Gather("M", 4, ""), 0.5)) == [("M", Status("F", 4, "", 0, 0, 0))]
    assert c.store.state() == ChatState("", 4, "M")


def test_a_voter_refuses_a_candidate_that_is_not_its_view_leader() -> None:
    c = make("F")
    c.set_view("L", peers("L", "M"), 0.0)
    assert transmits(c.receive(Gather("M", 1, ""), 0.0)) == [("M", Refuse("F", 0, "", "leader"))]
    assert c.store.state() == ChatState() and c.sequencer is None
    no_leader = make("F")
    assert transmits(no_leader.receive(Gather("M", 1, ""), 0.0)) == [("M", Refuse("F", 0, "", "leader"))]


def test_a_voter_refuses_a_candidate_of_another_cluster() -> None:
    c = follower()
    assert transmits(c.receive(Gather("L", 2, "other"), 0.0)) == [("L", Refuse("F", 1, CLUSTER, "cluster"))]
    assert c.store.state() == ChatState(CLUSTER, 1, "L")
    fresh = make("F")  # belongs to no cluster yet: any will do
    fresh.set_view("L", peers("L"), 0.0)
    assert transmits(fresh.receive(Gather("L", 2, "other"), 0.0)) == [("L", Status("F", 2, "", 0, 0, 0))]


def test_a_voter_never_takes_an_append_of_an_older_epoch() -> None:
    c = follower()
    c.set_view("M", peers("G", "L", "M"), 1.0)
    c.receive(Gather("M", 2, CLUSTER), 1.0)
    out = c.receive(append(1, [entry(2)], 2), 1.0)  # L, still sequencing epoch 1
    assert transmits(out) == [("L", Refuse("F", 2, CLUSTER, "epoch"))]
    assert (c.log.last, c.commit, c.sequencer, c.counters.link_messages_ignored) == (1, 1, "M", 1)


def test_an_older_sequencer_refused_by_a_voter_seeks_a_newer_epoch() -> None:
    c = sequencer()
    out = c.receive(Refuse("A", 2, CLUSTER, "epoch"), 1.0)
    assert transmits(out) == [("A", Gather("L", 3, CLUSTER)), ("B", Gather("L", 3, CLUSTER))]
    assert c.role == GATHERING


def test_a_follower_follows_a_newer_epochs_sequencer() -> None:
    c = follower()
    out = c.receive(append(1, [config_entry(2, 2, server="G")], 1, term=2, prev_term=1, src="G"), 1.0)
    assert c.store.state() == ChatState(CLUSTER, 2, "G")
    assert (c.sequencer, c.epoch) == ("G", 2)
    assert transmits(out) == [("G", Ack("F", 2, 2, 2, 0))]
    assert transmits(c.receive(append(1, [entry(2)], 1), 1.0)) == [("L", Refuse("F", 2, CLUSTER, "epoch"))]


def test_a_sequencer_hearing_of_a_newer_sequencer_steps_down_and_follows() -> None:
    c = sequencer()
    out = c.receive(append(1, [config_entry(2, 2, "ABL", server="A")], 1, term=2, prev_term=1, src="A"), 1.0)
    assert (c.role, c.sequencer, c.epoch) == (FOLLOWING, "A", 2)
    assert transmits(out) == [("A", Ack("L", 2, 2, 2, 0))]
    assert c.store.state() == ChatState(CLUSTER, 2, "A")


def test_an_append_of_another_cluster_is_refused() -> None:
    c = follower()
    out = c.receive(append(1, [entry(2)], 2, term=5, prev_term=1, cluster="other"), 1.0)
    assert transmits(out) == [("L", Refuse("F", 1, CLUSTER, "cluster"))]
    assert (c.epoch, c.log.last) == (1, 1)


def test_fetch_is_answered_only_for_the_epoch_and_candidate_promised() -> None:
    """Any other candidate is told the epoch is taken, so it gathers anew (it would fetch for good)."""
    c = follower()
    c.receive(append(1, [join_entry(2), entry(3)], 3), 0.0)
    taken = Refuse("F", 1, c.cluster, "epoch")
    assert transmits(c.receive(Fetch("G", 1, 0), 0.0)) == [("G", taken)]
    assert transmits(c.receive(Fetch("L", 0, 0), 0.0)) == [("L", taken)]
    assert c.counters.link_messages_ignored == 2
    assert transmits(c.receive(Fetch("L", 1, 1), 0.0)) == [("L", Entries("F", 1, [join_entry(2), entry(3)]))]
    assert transmits(c.receive(Fetch("L", 1, 3), 0.0)) == [("L", Entries("F", 1, []))]


# ------------------------------------------------------------------ restart


def test_a_restarted_core_keeps_its_epoch_vote_uncommitted_tail_and_commit_point() -> None:
    c = follower(voters=("A", "F", "G", "L", "M"))  # 5 voters: L and F are no quorum, nothing commits on arrival
    c.receive(append(1, [join_entry(2), entry(3)], 2), 0.0)
    assert (c.commit, c.log.last) == (2, 3)
    again = make("F", c.store, incarnation=10)
    assert (again.epoch, again.voted_for, again.cluster) == (1, "L", CLUSTER)
    assert (again.commit, again.log.last, again.log.tail) == (2, 3, [entry(3)])
    assert again.config == Config(CLUSTER, peers("A", "F", "G", "L", "M"))
    assert again.who() == [{"user": "alice", "server": "F", "since": WALL}]
    again.set_view("M", peers("A", "G", "L", "M"), 1.0)
    assert transmits(again.receive(Gather("M", 1, CLUSTER), 1.0)) == [("M", Refuse("F", 1, CLUSTER, "epoch"))]
    assert transmits(again.receive(Gather("M", 2, CLUSTER), 1.0)) == [("M", Status("F", 2, CLUSTER, 2, 3, 1))]


def test_a_restarted_candidate_does_not_reuse_its_epoch() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 0.0)
    again = make("L", c.store)
    assert transmits(again.set_view("L", peers("A"), 1.0)) == [("A", Gather("L", 2, ""))]


# ------------------------------------------------------------------ formation


def test_a_lone_daemon_forms_a_cluster_of_one_voter_and_commits_its_config() -> None:
    c = make("L")
    out = c.set_view("L", {}, 0.0)
    config = config_entry(1, 1, "L")
    assert out == [
        Log("info", "chat: sequencing forming cluster 7 from seq 1 (0 uncommitted before it)"),
        Publish("chat.config", public({**config, "id": "config:7:1"})),
    ]
    assert c.store.state() == ChatState(CLUSTER, 1, "L")
    assert (c.role, c.cluster, c.commit) == (ACTIVE, CLUSTER, 1)
    assert c.roles() == {"L": VOTER} and c.retired(), "the last voter stays one: nothing to leave"


def test_with_peers_it_forms_with_all_who_answered() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    assert c.role == GATHERING  # B may still answer
    out = c.receive(Status("B", 1, "", 0, 0, 0), 0.0)
    assert c.role == ACTIVE and c.config == Config(CLUSTER, peers("A", "B", "L"))
    assert [(to, m.entries) for to, m in transmits(out, Append)] == [
        (to, [{**config_entry(1, 1, "ABL"), "id": "config:7:1"}]) for to in ("A", "B")]
    assert c.cluster == "" and c.store.state().cluster == ""  # not until its config entry commits


def test_with_a_silent_peer_it_forms_after_gather_timeout_with_those_who_answered() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    advance(c, 0.0, 1.0 - EPS)
    assert c.role == GATHERING
    advance(c, 0.0, 1.0)
    assert c.role == ACTIVE and c.config == Config(CLUSTER, peers("A", "L"))
    assert c.roles() == {"A": VOTER, "B": CATCHING_UP, "L": VOTER}


def test_bootstrap_expect_waits_for_that_many_daemons() -> None:
    c = make("L", limits=replace(LIMITS, bootstrap_expect=3))
    c.set_view("L", peers("A"), 0.0)
    out = c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    assert logs(out) == ["chat: forming the chat: 2 of [chat] bootstrap_expect = 3 daemons here"]
    history = advance(c, 0.0, 3.0)
    assert c.role == GATHERING and c.config is None and logs([a for _, a in history]) == []  # said once
    c.set_view("L", peers("A", "B"), 3.0)
    c.tick(3.25)
    c.receive(Status("B", 1, "", 0, 0, 0), 3.25)
    assert c.role == ACTIVE and c.config == Config(CLUSTER, peers("A", "B", "L"))


def test_a_cluster_id_is_adopted_when_its_config_entry_commits() -> None:
    c = make("F")
    c.set_view("L", peers("A", "B", "G", "L"), 0.0)
    c.receive(Gather("L", 1, ""), 0.0)
    c.receive(append(0, [config_entry(1, 1, ("A", "B", "F", "G", "L"))], 0), 0.0)
    assert c.config is not None and (c.commit, c.cluster, c.store.state().cluster) == (0, "", "")
    assert c.roles()["F"] == VOTER
    out = c.receive(append(1, [], 1), 0.0)
    assert (c.commit, c.cluster, c.store.state()) == (1, CLUSTER, ChatState(CLUSTER, 1, "L"))
    assert published(out, "chat.config") == [public(config_entry(1, 1, ("A", "B", "F", "G", "L")))]


def test_the_first_entry_of_every_epoch_restates_the_configuration() -> None:
    c = follower()
    c.receive(append(1, [join_entry(2)], 2), 0.0)
    c.set_view("F", peers("G", "L"), 1.0)
    c.receive(Status("G", 2, CLUSTER, 2, 2, 1), 1.0)
    out = c.receive(Status("L", 2, CLUSTER, 2, 2, 1), 1.0)
    assert c.role == ACTIVE
    (first,) = c.log.tail
    assert (first["seq"], first["term"], first["kind"], first["text"]) == (3, 2, "config", config_text("FGL"))
    assert [(to, m.prev, m.prev_term, m.entries) for to, m in transmits(out, Append)] == [
        ("G", 2, 1, [first]), ("L", 2, 1, [first])]
    assert logs(out) == ["chat: sequencing epoch 2 from seq 3 (0 uncommitted before it)"]


# ------------------------------------------------------------------ log matching


def five_voter_follower_holding(*entries: dict[str, Any]) -> Chat:
    """F, one of 5 voters, holds the committed config (seq 1) then `entries` uncommitted, of epoch 1."""
    c = follower(voters=("A", "F", "G", "L", "M"))
    c.receive(append(1, list(entries), 1), 0.0)
    assert (c.commit, c.log.tail) == (1, list(entries))
    return c


def test_an_append_beyond_the_log_is_answered_with_what_it_needs() -> None:
    c = follower()
    out = c.receive(append(3, [entry(4)], 1), 0.0)
    assert transmits(out) == [("L", Ack("F", 1, 1, 1, 2))]
    assert c.log.last == 1


def test_an_append_whose_prev_term_does_not_match_gets_the_commit_point_as_need() -> None:
    c = five_voter_follower_holding(entry(2), entry(3, id="m3"))
    c.set_view("M", peers("A", "G", "L", "M"), 1.0)
    c.receive(Gather("M", 2, CLUSTER), 1.0)
    out = c.receive(append(3, [entry(4, term=2)], 1, term=2, src="M"), 1.0)  # M's 3 is of epoch 2
    assert transmits(out) == [("M", Ack("F", 2, 1, 1, 2))]
    assert c.log.tail == [entry(2), entry(3, id="m3")]


def test_a_conflicting_uncommitted_suffix_is_truncated() -> None:
    c = five_voter_follower_holding(entry(2), entry(3, id="m3"))
    c.set_view("M", peers("A", "G", "L", "M"), 1.0)
    c.receive(Gather("M", 2, CLUSTER), 1.0)
    new = config_entry(2, 2, ("A", "F", "G", "L", "M"), server="M")
    out = c.receive(append(1, [new], 1, term=2, prev_term=1, src="M"), 1.0)
    assert transmits(out) == [("M", Ack("F", 2, 2, 1, 0))]
    assert c.log.tail == [new] and c.store.read(0, 10) == [config_entry(1, 1, ("A", "F", "G", "L", "M")), new]
    assert c.store.last_seq() == 2


def test_entries_already_held_are_not_rewritten() -> None:
    c = five_voter_follower_holding(entry(2), entry(3, id="m3"))
    store = c.store
    out = c.receive(append(1, [entry(2), entry(3, id="m3")], 1), 0.0)
    assert transmits(out) == [("L", Ack("F", 1, 3, 1, 0))]
    assert store.last_seq() == 3 and c.log.tail == [entry(2), entry(3, id="m3")]


def test_a_follower_acknowledges_only_the_prefix_it_checked() -> None:
    c = five_voter_follower_holding(entry(2), entry(3, id="m3"), entry(4, id="m4"))
    c.set_view("M", peers("A", "G", "L", "M"), 1.0)
    c.receive(Gather("M", 2, CLUSTER), 1.0)
    out = c.receive(append(1, [entry(2)], 1, term=2, prev_term=1, src="M"), 1.0)
    assert transmits(out) == [("M", Ack("F", 2, 2, 1, 0))]  # it holds 3 and 4, unchecked in epoch 2
    assert c.verified == 2 and c.log.last == 4
    out = c.receive(append(1, [], 1, term=2, prev_term=1, src="M"), 1.0)  # nothing new: no ACK
    assert transmits(out) == []
    out = c.receive(append(3, [entry(4, id="m4")], 1, term=2, prev_term=1, src="M"), 1.0)
    assert transmits(out) == [("M", Ack("F", 2, 4, 1, 0))]


def test_a_follower_commits_no_further_than_it_checked() -> None:
    c = five_voter_follower_holding(entry(2), entry(3, id="m3"))
    c.set_view("M", peers("A", "G", "L", "M"), 1.0)
    c.receive(Gather("M", 2, CLUSTER), 1.0)
    c.receive(append(1, [entry(2)], 9, term=2, prev_term=1, src="M"), 1.0)
    assert c.commit == 2


def test_a_repeated_append_is_idempotent() -> None:
    c = follower()
    message = append(1, [join_entry(2), entry(3)], 1)
    c.receive(message, 0.0)
    assert transmits(c.receive(message, 0.0)) == [("L", Ack("F", 1, 3, 3, 0))]  # its ACK may have been lost
    assert c.store.read(1, 10) == [join_entry(2), entry(3)] and c.commit == 3


def test_an_empty_append_without_news_gets_no_ack() -> None:
    c = follower()
    assert c.receive(append(1, [], 1), 0.0) == []


# ------------------------------------------------------------------ commit rule


def candidate_with_adopted_entries() -> Chat:
    """L held entries 2 and 3 of epoch 1, uncommitted, under the config {A, B, L} (seq 1, committed);
    it wins epoch 2 from A and B, who hold only the config: its tail is 2, 3 and its config entry 4."""
    store = MemoryStore(1000)
    store.append([config_entry(1, 1, "ABL"), join_entry(2, server="L"), entry(3, server="L")], commit=1)
    store.save_state(ChatState(CLUSTER, 1, "A"))
    c = make("L", store)
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 2, CLUSTER, 1, 1, 1), 0.0)
    out = c.receive(Status("B", 2, CLUSTER, 1, 1, 1), 0.0)
    assert c.role == ACTIVE and [(e["seq"], e["term"]) for e in c.log.tail] == [(2, 1), (3, 1), (4, 2)]
    assert [(m.prev, [e["seq"] for e in m.entries]) for _, m in transmits(out, Append)] == [(1, [2, 3, 4])] * 2
    return c


def test_the_sequencer_commits_older_epochs_entries_only_with_one_of_its_own() -> None:
    c = candidate_with_adopted_entries()
    assert c.receive(Ack("A", 2, 3, 1, 0), 0.0) == [] and c.commit == 1  # a quorum holds 3, of epoch 1
    out = c.receive(Ack("A", 2, 4, 1, 0), 0.0)
    assert c.commit == 4
    assert [(e["seq"], e["kind"]) for e in published(out)] == [(2, "join"), (3, "message"), (4, "config")]


def test_the_sequencer_commits_once_a_quorum_holds_an_entry() -> None:
    c = sequencer("A", "B", "C", "D")
    c.join("r", "alice", S, 0.0)
    assert c.receive(Ack("A", 1, 2, 1, 0), 0.0) == [] and c.commit == 1  # L and A: 2 of 5
    out = c.receive(Ack("C", 1, 2, 1, 0), 0.0)
    assert c.commit == 2 and replies(out) == [Reply("r", joined(2, "L"))]
    assert [to for to, m in transmits(out, Append)] == ["A", "B", "C", "D"]  # the new commit point


def test_a_follower_commits_on_arrival_when_it_and_the_sequencer_are_a_quorum() -> None:
    c = follower()  # 3 voters: F and L are 2 of 3
    out = c.receive(append(1, [join_entry(2), entry(3)], 1), 0.0)
    assert c.commit == 3 and [e["seq"] for e in published(out)] == [2, 3]
    assert transmits(out) == [("L", Ack("F", 1, 3, 3, 0))]


def test_the_sequencer_tells_its_commit_point_only_to_followers_that_have_not_committed_it() -> None:
    """With 3 voters a follower commits on arrival and says so in its ACK: no commit-only APPEND
    follows for it (a round trip per message saved); one whose ACK is behind is told."""
    c = sequencer()
    c.join("r", "alice", S, 0.0)
    out = c.receive(Ack("A", 1, 2, 2, 0), 0.0)  # A committed 2 on arrival (it and L are a quorum)
    assert c.commit == 2 and replies(out) == [Reply("r", joined(2, "L"))]
    assert [(to, m.entries, m.commit) for to, m in transmits(out, Append)] == [("B", [], 2)]
    assert transmits(c.receive(Ack("B", 1, 2, 2, 0), 0.0)) == []


def test_a_follower_of_five_voters_waits_for_the_sequencers_commit_point() -> None:
    c = follower(voters=("A", "F", "G", "L", "M"))
    out = c.receive(append(1, [join_entry(2), entry(3)], 1), 0.0)
    assert c.commit == 1 and published(out) == []
    assert transmits(out) == [("L", Ack("F", 1, 3, 1, 0))]
    out = c.receive(append(3, [], 2), 0.0)
    assert c.commit == 2 and [e["seq"] for e in published(out)] == [2]
    assert transmits(out) == [("L", Ack("F", 1, 3, 2, 0))]


def test_a_follower_does_not_commit_on_arrival_entries_of_an_older_epoch() -> None:
    c = follower()
    c.set_view("G", peers("G", "L"), 1.0)
    c.receive(Gather("G", 2, CLUSTER), 1.0)
    out = c.receive(append(1, [entry(2)], 1, term=2, prev_term=1, src="G"), 1.0)  # adopted by G, of epoch 1
    assert c.commit == 1 and transmits(out) == [("G", Ack("F", 2, 2, 1, 0))]
    out = c.receive(append(2, [config_entry(3, 2, server="G")], 1, term=2, prev_term=1, src="G"), 1.0)
    assert c.commit == 3 and [e["seq"] for e in published(out)] == [2, 3]


def test_a_sequencer_outside_its_configuration_commits_with_the_voters_alone() -> None:
    c = sequencer()
    c.forget("L", 1.0)  # L is removed: joint {A, B} / {A, B, L}, then {A, B}
    for _ in range(2):
        for name in ("A", "B"):
            c.receive(Ack(name, 1, c.log.last, c.commit, 0), 1.0)
    assert c.config == Config(CLUSTER, peers("A", "B")) and c.commit == c.log.last == 3
    c.join("r", "alice", S, 1.0)
    assert c.receive(Ack("A", 1, 4, 3, 0), 1.0) == [] and c.commit == 3  # A alone: 1 of {A, B}, B the top
    assert replies(c.receive(Ack("B", 1, 4, 3, 0), 1.0)) == [Reply("r", joined(4, "L"))]
    assert c.retired()


# ------------------------------------------------------------------ adoption


def candidate(*others: str, epoch: int) -> Chat:
    """L, with an empty log, stands for `epoch` with `others` in its view."""
    store = MemoryStore(1000)
    store.save_state(ChatState("", epoch - 1, ""))
    c = make("L", store)
    assert transmits(c.set_view("L", peers(*others), 0.0)) == [(name, Gather("L", epoch, "")) for name in others]
    return c


def test_the_candidate_fetches_the_most_advanced_log_and_keeps_its_terms() -> None:
    c = candidate("A", "B", epoch=3)
    c.receive(Status("A", 3, "", 1, 5, 1), 0.0)  # longer, but of an older epoch
    out = c.receive(Status("B", 3, "", 1, 3, 2), 0.0)
    assert transmits(out) == [("B", Fetch("L", 3, 0))] and c.role == FETCHING
    held = [config_entry(1, 1, "ABL"), entry(2, term=1), entry(3, term=2, id="m3")]
    assert c.receive(Entries("A", 3, held), 0.0) == []  # not the source it chose
    out = c.receive(Entries("B", 3, held), 0.0)
    assert c.role == ACTIVE
    assert [(e["seq"], e["term"]) for e in c.log.read(0, 10)] == [(1, 1), (2, 1), (3, 2), (4, 3)]
    assert c.log.read(0, 3) == held  # adopted as they are: never re-stamped
    assert c.commit == 1 and [e["seq"] for e in published(out)] == [1]  # A and B said 1 is committed


def test_between_logs_ending_in_the_same_epoch_the_longer_one_is_fetched() -> None:
    c = candidate("A", "B", epoch=3)
    c.receive(Status("A", 3, "", 0, 4, 2), 0.0)
    assert transmits(c.receive(Status("B", 3, "", 0, 3, 2), 0.0)) == [("A", Fetch("L", 3, 0))]


def test_the_candidate_keeps_its_own_log_when_it_is_the_most_advanced() -> None:
    store = MemoryStore(1000)
    store.append([config_entry(1, 1, "ABL"), entry(2, term=2)], commit=1)
    store.save_state(ChatState(CLUSTER, 2, "A"))
    c = make("L", store)
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 3, CLUSTER, 1, 4, 1), 0.0)  # longer, but of an older epoch
    out = c.receive(Status("B", 3, CLUSTER, 1, 2, 2), 0.0)  # as advanced: no need to fetch it
    assert transmits(out, Fetch) == [] and c.role == ACTIVE
    assert [(e["seq"], e["term"]) for e in c.log.tail] == [(2, 2), (3, 3)]


def test_a_long_log_is_fetched_in_batches() -> None:
    c = candidate("A", epoch=2)
    c.receive(Status("A", 2, "", 0, 3, 1), 0.0)
    out = c.receive(Entries("A", 2, [config_entry(1, 1, "AL")]), 0.0)
    assert transmits(out) == [("A", Fetch("L", 2, 1))] and c.role == FETCHING
    out = c.receive(Entries("A", 2, [entry(3)]), 0.0)  # a gap: dropped, the FETCH is repeated
    assert c.role == FETCHING and transmits(out) == []
    assert [a.message for _, a in advance(c, 0.0, 0.25) if isinstance(a, Transmit)] == [Fetch("L", 2, 1)]
    c.receive(Entries("A", 2, [entry(2), entry(3, id="m3")]), 0.25)
    assert c.role == ACTIVE and [(e["seq"], e["term"]) for e in c.log.read(0, 10)] == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_the_fetch_source_leaving_the_view_starts_a_new_epoch() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    c.receive(Status("B", 1, "", 0, 3, 1), 0.0)
    assert c.role == FETCHING
    out = c.set_view("L", peers("A"), 0.5)
    assert transmits(out) == [("A", Gather("L", 2, ""))] and c.role == GATHERING


def test_a_voter_gone_while_gathering_is_no_longer_awaited() -> None:
    c = make("L")
    c.set_view("L", peers("A", "B"), 0.0)
    c.receive(Status("A", 1, "", 0, 0, 0), 0.0)
    c.set_view("L", peers("A"), 0.125)
    assert c.role == ACTIVE and c.config == Config(CLUSTER, peers("A", "L"))


def test_a_candidate_without_a_quorum_of_its_configuration_waits_and_says_why() -> None:
    c = follower(voters=("A", "F", "G", "L", "M"))
    c.set_view("F", peers("G"), 1.0)
    out = c.receive(Status("G", 2, CLUSTER, 1, 1, 1), 1.0)
    assert logs(out, "warning") == ["chat: this daemon's side of the network holds 2 of the chat's 5 voters: "
                                    "not taking messages until more are back"]
    assert c.role == GATHERING
    history = advance(c, 1.0, 3.0)
    assert c.role == GATHERING and logs([a for _, a in history]) == []
    c.set_view("F", peers("G", "L"), 3.0)
    c.tick(3.25)
    c.receive(Status("L", 2, CLUSTER, 1, 1, 1), 3.25)
    assert c.role == ACTIVE


# ------------------------------------------------------------------ no quorum

NO_QUORUM_1_OF_3 = ("no_quorum", "this daemon's side of the network holds 1 of the chat's 3 voters")


def test_the_quorum_answer_follows_a_new_configuration_with_the_view_unchanged() -> None:
    """The answer is kept between proposals; a config entry alone (no view change) must renew it."""
    c = follower()  # voters F, G, L; the view holds G and L
    assert errors(c.join("r1", "alice", S, 0.0)) == []
    c.receive(append(1, [config_entry(2, voters=("F", "G", "L", "M", "N"), old=("F", "G", "L"))], 1), 0.0)
    assert errors(c.join("r2", "bob", BOB, 0.0)) == []  # 3 of 5 in the view: F, G and L
    c.set_view("L", peers("L"), 0.0)
    assert errors(c.join("r3", "carol", S2, 0.0)) == ["no_quorum"]  # F and L: 2 of 5
    c.receive(append(2, [config_entry(3, voters=("F", "L"), old=None)], 1), 0.0)
    assert errors(c.join("r4", "carol", S2, 0.0)) == []  # the same view, a smaller configuration


def test_clients_are_told_at_once_when_the_leader_turns_out_to_be_of_another_cluster() -> None:
    c = follower()
    assert errors(c.join("r1", "alice", S, 0.0)) == []
    c.receive(Refuse("L", 3, "other", "cluster"), 1.0)  # nothing else changes: the view, the configuration
    assert errors(c.join("r2", "bob", BOB, 1.0)) == ["unavailable"]


def test_a_commit_publishes_all_its_entries_before_its_replies() -> None:
    """So that the service can put a commit's feed events in one message of one topic."""
    c = sequencer()
    c.set_view("L", peers("A"), 0.0)  # L and A are the quorum now
    c.join("j", "alice", S, 0.0)
    c.receive(Ack("A", 1, 2, 1, 0), 0.0)
    c.limits = replace(c.limits, rate=1e6, burst=10**6)
    c.presence.sessions["alice"].tokens = 100.0
    for i in range(3):
        c.send(f"s{i}", "alice", S, f"m{i}", "hi", 0.0)
    out = c.receive(Ack("A", 1, 5, 2, 0), 0.0)
    kinds = [type(a).__name__ for a in out if isinstance(a, (Publish, Reply))]
    assert kinds == ["Publish"] * 3 + ["Reply"] * 3, kinds


def test_a_sequencer_cut_off_from_its_quorum_refuses_joins_and_sends_at_once() -> None:
    c = sequencer()
    join_on_sequencer(c)
    c.set_view("L", {}, 1.0)  # A and B are gone: L is 1 of 3
    last = c.log.last
    assert replies(c.join("rb", "bob", BOB, 1.0)) == [Reply("rb", error=NO_QUORUM_1_OF_3)]
    assert replies(c.send("rs", "alice", S, "m1", "hi", 1.0)) == [Reply("rs", error=NO_QUORUM_1_OF_3)]
    assert c.log.last == last and c.proposer.outbox == {}
    assert c.heartbeat("h", "alice", S, 1.0) == [Reply("h", {"last_seq": 2})]  # the session goes on


def test_a_follower_on_the_minority_side_refuses_at_once_saying_how_many_voters_it_holds() -> None:
    c = follower_with_alice(voters=("A", "F", "G", "L", "M"))
    c.set_view("G", peers("G"), 1.0)  # F and G: 2 of 5
    error = ("no_quorum", "this daemon's side of the network holds 2 of the chat's 5 voters")
    assert c.join("rb", "bob", BOB, 1.0) == [Reply("rb", error=error)]
    assert c.send("rs", "alice", S, "m1", "hi", 1.0) == [Reply("rs", error=error)]
    assert c.proposer.outbox == {} and c.next_deadline() == 1.0 + LIMITS.client_timeout  # the session only


def test_a_leave_on_the_minority_side_is_told_no_quorum_and_proposed_after_the_heal() -> None:
    c = follower_with_alice(voters=("A", "F", "G", "L", "M"))
    c.set_view("G", peers("G"), 1.0)
    out = c.leave("rl", "alice", S, 1.0)
    error = ("no_quorum", "this daemon's side of the network holds 2 of the chat's 5 voters")
    assert replies(out) == [Reply("rl", error=error)]
    leave = proposal("leave", text="", id="leave:9:2")
    assert transmits(out) == [("G", Forward("F", 1, [leave]))]
    assert c.sessions == {} and list(c.proposer.outbox.values()) == [leave]
    assert [a.message for _, a in advance(c, 1.0, 1.25) if isinstance(a, Transmit)] == [Forward("F", 1, [leave])]
    c.set_view("L", peers("A", "G", "L", "M"), 2.0)  # healed: L leads again
    assert [a.message for a in c.tick(2.0) if isinstance(a, Transmit)] == [Forward("F", 1, [leave])]


def test_a_leave_forwarded_to_a_minority_sequencer_is_kept_by_its_proposer() -> None:
    c = follower_with_alice(voters=("A", "F", "G", "L", "M"))
    c.set_view("L", peers("L"), 1.0)  # L still sequences, but L and F are 2 of 5
    out = c.leave("rl", "alice", S, 1.0)
    (forward,) = [m for _, m in transmits(out, Forward)]
    refused = {"user": "alice", "id": forward.proposals[0]["id"], "code": "no_quorum", "message": "2 of 5"}
    c.receive(Result("L", 1, [refused]), 1.0)  # what L answers (see the test above)
    assert list(c.proposer.outbox.values()) == forward.proposals


def test_a_leave_on_a_minority_sequencer_is_recorded_after_the_heal() -> None:
    c = sequencer()
    join_on_sequencer(c)
    c.set_view("L", {}, 1.0)
    assert replies(c.leave("rl", "alice", S, 1.0)) == [Reply("rl", error=NO_QUORUM_1_OF_3)]
    c.set_view("L", peers("A", "B"), 2.0)
    for name in ("A", "B"):
        c.receive(Ack(name, 1, c.log.last, c.commit, 0), 2.0)
    assert c.who() == []


# ------------------------------------------------------------------ membership changes


def ack_all(c: Chat, now: float, *names: str) -> list[Action]:
    """Every follower named acknowledges all of the sequencer's log and its commit point, twice
    (the second time for the commit point the first produced)."""
    out: list[Action] = []
    for _ in range(2):
        for name in names or sorted(c.followers):
            out += c.receive(Ack(name, c.epoch, c.log.last, c.commit, 0), now)
    return out


def test_a_caught_up_peer_becomes_a_voter_through_a_joint_configuration() -> None:
    c = sequencer()
    out = c.set_view("L", peers("A", "B", "N"), 1.0)
    assert transmits(out) == [("N", append(1, [], 1))]  # optimistic: it may hold it all
    assert c.roles()["N"] == CATCHING_UP and c.log.last == 1
    c.receive(Ack("N", 1, 0, 0, 1), 1.0)
    assert c.log.last == 1  # not caught up: no change
    out = c.receive(Ack("N", 1, 1, 1, 0), 1.0)
    assert logs(out) == ["chat: adding N: voters will be A, B, L, N"]
    assert configs_in(c, 1) == [Config(CLUSTER, peers("A", "B", "L", "N"), old=peers("A", "B", "L"))]
    assert c.roles()["N"] == VOTER
    c.receive(Ack("A", 1, 2, 1, 0), 1.0)
    assert c.commit == 1  # {L, A} is a quorum of the old voters, not of the new (2 of 4 without N, the top)
    c.receive(Ack("N", 1, 2, 1, 0), 1.0)
    assert c.commit == 2
    assert configs_in(c, 2) == [Config(CLUSTER, peers("A", "B", "L", "N"))]
    ack_all(c, 1.0)
    assert c.commit == 3 and c.config == Config(CLUSTER, peers("A", "B", "L", "N"))
    assert c.counters.config_changes == 1


def test_a_voter_absent_for_remove_dead_after_is_removed_while_the_rest_is_a_quorum() -> None:
    c = sequencer()
    c.set_view("L", peers("A"), 1.0)
    assert c.next_deadline() == 1.0 + LIMITS.remove_dead_after
    assert c.tick(17.0 - EPS) == [] and c.log.last == 1
    out = c.tick(17.0)
    assert logs(out) == ["chat: removing B: voters will be A, L"]
    assert configs_in(c, 1) == [Config(CLUSTER, peers("A", "L"), old=peers("A", "B", "L"))]
    ack_all(c, 17.0)
    assert c.config == Config(CLUSTER, peers("A", "L")) and c.commit == c.log.last == 3
    assert c.roles() == {"A": VOTER, "L": VOTER}


def test_an_absent_voter_that_comes_back_in_time_is_kept() -> None:
    c = sequencer()
    c.set_view("L", peers("A"), 1.0)
    c.set_view("L", peers("A", "B"), 10.0)
    advance(c, 10.0, 40.0)
    assert c.log.last == 1 and c.config == Config(CLUSTER, peers("A", "B", "L"))


def test_no_dead_voter_is_removed_when_the_rest_would_be_no_quorum_of_this_side() -> None:
    c = make("L", priority=1)  # A and B outrank L: {L} is no quorum of {L, A} nor of {L, B}
    c.set_view("L", {"A": 100, "B": 100}, 0.0)
    for name in ("A", "B"):
        c.receive(Status(name, 1, "", 0, 0, 0), 0.0)
    ack_all(c, 0.0)
    assert c.commit == 1 and c.config == Config(CLUSTER, {"A": 100, "B": 100, "L": 1})
    c.set_view("L", {}, 1.0)
    advance(c, 1.0, 40.0)
    assert c.log.last == 1 and c.counters.config_changes == 0


def test_remove_takes_a_voter_out_at_once() -> None:
    c = sequencer()
    out = c.receive(Remove("A", 1, "B"), 1.0)  # B is still in the view
    assert logs(out) == ["chat: removing B: voters will be A, L"]
    assert configs_in(c, 1) == [Config(CLUSTER, peers("A", "L"), old=peers("A", "B", "L"))]


def test_forget_on_the_sequencer_removes_at_once_and_elsewhere_asks_the_leader() -> None:
    c = sequencer()
    assert logs(c.forget("B", 1.0)) == ["chat: removing B: voters will be A, L"]
    f = follower()
    assert transmits(f.forget("G", 1.0)) == [("L", Remove("F", 1, "G"))]
    assert f.receive(Remove("G", 1, "L"), 1.0) == [] and f.counters.link_messages_ignored == 1


def test_membership_changes_one_at_a_time() -> None:
    c = sequencer("A", "B", "C", "D")
    c.set_view("L", peers("A", "B"), 1.0)  # C and D are gone (and would be re-added if they were not)
    c.receive(Remove("A", 1, "D"), 1.0)
    c.receive(Remove("A", 1, "C"), 1.0)
    assert c.log.last == 2  # C waits for D's change to end
    for _ in range(3):
        ack_all(c, 1.0)
    assert configs_in(c, 1) == [
        Config(CLUSTER, peers("A", "B", "C", "L"), old=peers("A", "B", "C", "D", "L")),
        Config(CLUSTER, peers("A", "B", "C", "L")),
        Config(CLUSTER, peers("A", "B", "L"), old=peers("A", "B", "C", "L")),
        Config(CLUSTER, peers("A", "B", "L")),
    ]
    assert c.config == Config(CLUSTER, peers("A", "B", "L")) and c.commit == c.log.last == 5


def test_no_membership_change_before_an_entry_of_the_epoch_is_committed() -> None:
    c = candidate_with_adopted_entries()  # its config entry (4) is not committed yet
    out = c.receive(Remove("A", 2, "B"), 0.0)
    assert logs(out) == [] and c.log.last == 4
    out = c.receive(Ack("A", 2, 4, 1, 0), 0.0)
    assert logs(out) == ["chat: removing B: voters will be A, L"] and c.log.last == 5


def test_a_retiring_follower_asks_until_a_committed_configuration_leaves_it_out() -> None:
    c = follower(voters=("A", "F", "G", "L", "M"))
    assert not c.retired()
    out = c.retire(1.0)
    assert transmits(out) == [("L", Remove("F", 1, "F"))]
    assert c.next_deadline() == 1.25
    assert transmits(c.tick(1.25)) == [("L", Remove("F", 1, "F"))]
    c.receive(append(1, [config_entry(2, 1, "AGLM", old="AFGLM")], 2), 1.25)
    assert c.commit == 2 and not c.retired()  # still in the old half of the joint configuration
    c.receive(append(2, [config_entry(3, 1, "AGLM")], 2), 1.25)
    assert c.commit == 2 and not c.retired()  # out of the final one, not committed yet
    c.receive(append(3, [], 3), 1.25)
    assert c.retired() and c.roles()["F"] == CATCHING_UP
    assert transmits(c.tick(1.5)) == [] and c.next_deadline() is None


def test_a_retiring_sequencer_removes_itself() -> None:
    c = sequencer()
    out = c.retire(1.0)
    assert logs(out) == ["chat: removing L: voters will be A, B"]
    ack_all(c, 1.0)
    assert c.config == Config(CLUSTER, peers("A", "B")) and c.retired()


def test_a_retiring_daemon_retires_while_still_in_the_view() -> None:
    net = Net("ABL", leader="L")
    assert net.chats["L"].role == ACTIVE and net.chats["L"].config == Config("3", peers("A", "B", "L"))
    net.deliver([("A", action) for action in net.chats["A"].retire(1.0)], 1.0)
    for step in range(1, 9):
        net.run(lambda c: c.tick(1.0 + step / 4))
    assert net.chats["A"].retired()
    assert "A" not in net.chats["L"].config.everyone()


# ------------------------------------------------------------------ ids


def test_presence_ids_hold_a_colon_so_no_client_id_can_be_one() -> None:
    c = lone()
    out = c.join("rj", "alice", S, 0.0)
    assert [e["id"] for e in published(out)] == ["join:7:2"]
    assert replies(c.send("r", "alice", S, "leave:7:3", "forged", 0.0)) == [
        Reply("r", error=("bad_args", "id must be 1-64 characters of A-Z a-z 0-9 _ -"))]
    assert [e["id"] for e in published(c.leave("rl", "alice", S, 0.0))] == ["leave:7:3"]


def test_a_send_retried_after_its_entry_was_trimmed_gets_its_old_seq() -> None:
    c = lone(store=MemoryStore(2), limits=replace(LIMITS, rate=1e6, burst=10**6))
    joined_alone(c)
    assert replies(c.send("r1", "alice", S, "m1", "hi", 1.0)) == [Reply("r1", {"seq": 3})]
    for i in range(5):
        c.send(f"x{i}", "alice", S, f"x{i}", "more", 1.0)
    assert c.store.first_seq() > 3 and c.log.last == 8
    assert c.send("again", "alice", S, "m1", "hi", 2.0) == [Reply("again", {"seq": 3})]
    assert c.log.last == 8 and c.counters.entries_sequenced == 8


# ------------------------------------------------------------------ clients: a lone sequencer


def test_a_join_commits_at_once_alone_and_publishes_exactly_the_public_keys() -> None:
    c = lone()
    out = c.join("r1", "alice", S, 0.5)
    expected = join_entry(2, at=0.5, server="L", id="join:7:2")
    assert out == [Publish("chat.presence", public(expected)), Reply("r1", joined(2, "L"))]
    assert set(published(out)[0]) == set(PUBLIC_KEYS) and "session" not in published(out)[0]
    assert c.store.read(1, 10) == [expected] and (c.commit, c.log.tail) == (2, [])


def test_send_and_leave_commit_and_reply_their_seq() -> None:
    c = lone()
    joined_alone(c)
    out = c.send("r2", "alice", S, "m1", "hello", 1.0)
    assert out == [Publish("chat.message", public(entry(3, at=1.0, text="hello", server="L"))),
                   Reply("r2", {"seq": 3})]
    out = c.leave("r3", "alice", S, 2.0)
    assert [(e["kind"], e["seq"], e["server"]) for e in published(out, "chat.presence")] == [("leave", 4, "L")]
    assert replies(out) == [Reply("r3", {"seq": 4})]
    assert c.who() == [] and errors(c.leave("r", "alice", S, 2.0)) == ["not_joined"]
    assert (c.counters.entries_sequenced, c.counters.entries_committed) == (4, 4)


@pytest.mark.parametrize("user", ["", "u" * 33, "_alice", ".alice", "-alice", "al ice", "alice\n", "a/b", "a:b"])
def test_join_with_a_bad_user_name_is_refused(user: str) -> None:
    c = lone()
    out = c.join("r", user, S, 0.0)
    assert errors(out) == ["bad_user"] and len(out) == 1 and c.log.last == 1


@pytest.mark.parametrize("user", ["a", "u" * 32, "9lives", "a.b-c_d"])
def test_join_with_a_good_user_name_is_accepted(user: str) -> None:
    assert joined_alone(lone(), user) == 2


@pytest.mark.parametrize("session", ["", "s" * 15, "s" * 65, "session with spaces", "session.with.dots!", "a:" * 9])
def test_join_with_a_bad_session_is_bad_args(session: str) -> None:
    c = lone()
    assert errors(c.join("r", "alice", session, 0.0)) == ["bad_args"] and c.log.last == 1


def test_join_of_a_name_held_by_another_session_is_name_taken_without_a_proposal() -> None:
    c = sequencer()
    join_on_sequencer(c)
    out = c.join("r", "alice", S2, 1.0)
    assert errors(out) == ["name_taken"] and transmits(out) == []
    assert c.log.last == 2 and c.proposer.outbox == {}


def test_join_again_with_the_same_session_is_recorded_as_rejoined() -> None:
    c = lone()
    joined_alone(c)
    out = c.join("r", "alice", S, 1.0)
    assert [(e["kind"], e["text"]) for e in published(out)] == [("join", "rejoined")]
    assert replies(out) == [Reply("r", joined(3, "L"))]


def test_a_join_over_max_clients_is_refused_but_a_rejoin_is_not() -> None:
    c = lone(limits=replace(LIMITS, max_clients=2))
    for user in ("alice", "bob"):
        assert errors(c.join("r", user, S, 0.0)) == []
    last = c.log.last
    out = c.join("r", "carol", S, 0.0)
    assert errors(out) == ["too_many_clients"] and "max_clients" in replies(out)[0].error[1]
    assert c.log.last == last and set(c.sessions) == {"alice", "bob"} and c.proposer.outbox == {}
    assert errors(c.join("r", "alice", S, 0.0)) == []
    c.leave("r", "bob", S, 0.0)
    assert errors(c.join("r", "carol", S, 0.0)) == []


def test_joins_waiting_for_their_commit_count_against_max_clients() -> None:
    c = follower()
    c.limits = replace(c.limits, max_clients=1)
    assert errors(c.join("r1", "alice", S, 0.0)) == []  # forwarded, not committed yet
    assert errors(c.join("r2", "bob", BOB, 0.0)) == ["too_many_clients"]


def test_send_without_a_session_here_is_not_joined() -> None:
    c = lone()
    assert errors(c.send("r", "alice", S, "m1", "hi", 0.0)) == ["not_joined"]
    joined_alone(c)
    assert errors(c.send("r", "alice", S2, "m1", "hi", 0.0)) == ["not_joined"]
    assert errors(c.send("r", "bob", S, "m1", "hi", 0.0)) == ["not_joined"]
    assert errors(c.send("r", "alice", S, "m1", "x" * 9, 0.0)) == ["too_large"]
    assert errors(c.send("r", "bob", S, "m1", "x" * 9, 0.0)) == ["not_joined"]  # the session is checked first
    assert c.log.last == 2


@pytest.mark.parametrize("id", ["", "i" * 65, "a b", "a.b", "a:b", "\u00e9", "id\n"])
def test_send_with_a_bad_id_is_bad_args(id: str) -> None:
    c = lone()
    joined_alone(c)
    assert errors(c.send("r", "alice", S, id, "hi", 0.0)) == ["bad_args"] and c.log.last == 2


@pytest.mark.parametrize("text", ["", " ", " \n\t", "\ud800", "a\udc00"])
def test_send_with_empty_or_unencodable_text_is_bad_args(text: str) -> None:
    c = lone()
    joined_alone(c)
    assert errors(c.send("r", "alice", S, "m1", text, 0.0)) == ["bad_args"] and c.log.last == 2


def test_the_message_size_limit_counts_utf8_bytes_and_is_exact() -> None:
    c = lone()
    joined_alone(c)
    assert errors(c.send("r1", "alice", S, "m1", "x" * 8, 0.0)) == []
    assert errors(c.send("r2", "alice", S, "m2", "é" * 4, 0.0)) == []  # 4 characters, 8 bytes
    assert errors(c.send("r3", "alice", S, "m3", "x" * 9, 0.0)) == ["too_large"]
    assert errors(c.send("r4", "alice", S, "m4", "é" * 5, 0.0)) == ["too_large"]
    assert [e["text"] for e in c.store.read(2, 10)] == ["x" * 8, "é" * 4]


def test_rate_limited_after_the_burst_and_ok_again_after_refill() -> None:
    c = lone()
    joined_alone(c)
    for i in range(LIMITS.burst):
        assert errors(c.send(f"r{i}", "alice", S, f"m{i}", "hi", 1.0)) == []
    assert errors(c.send("over", "alice", S, "over", "hi", 1.0)) == ["rate_limited"]
    refill = 1 / LIMITS.rate
    assert errors(c.send("early", "alice", S, "early", "hi", 1.0 + refill - EPS)) == ["rate_limited"]
    assert errors(c.send("later", "alice", S, "later", "hi", 1.0 + refill)) == []
    assert errors(c.send("then", "alice", S, "then", "hi", 1.0 + refill)) == ["rate_limited"]
    assert [e["id"] for e in c.store.read(2, 10)] == ["m0", "m1", "m2", "later"]


def test_tokens_refill_up_to_the_burst_only() -> None:
    c = lone()
    joined_alone(c)
    sent = [errors(c.send(f"r{i}", "alice", S, f"m{i}", "hi", 100.0)) for i in range(LIMITS.burst + 1)]
    assert sent == [[]] * LIMITS.burst + [["rate_limited"]]


def test_a_send_with_an_id_already_committed_replies_its_seq_spending_no_token() -> None:
    c = lone()
    joined_alone(c)
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    for i in range(5):
        assert c.send(f"d{i}", "alice", S, "m1", "hi again", 1.0) == [Reply(f"d{i}", {"seq": 3})]
    assert errors(c.send("r2", "alice", S, "m2", "hi", 1.0)) == []
    assert c.counters.entries_sequenced == 4


def test_heartbeat_answers_the_commit_point_and_keeps_the_session() -> None:
    c = lone()
    joined_alone(c)
    assert c.heartbeat("h", "alice", S, 7.0) == [Reply("h", {"last_seq": 2})]
    assert c.next_deadline() == 7.0 + LIMITS.client_timeout
    assert c.tick(8.0) == []
    assert errors(c.heartbeat("h", "alice", S2, 7.0)) == ["not_joined"]
    assert errors(c.heartbeat("h", "bob", S, 7.0)) == ["not_joined"]


# ------------------------------------------------------------------ clients: with followers


def test_a_join_on_the_sequencer_is_replied_only_at_commit() -> None:
    c = sequencer()
    out = c.join("r1", "alice", S, 0.0)
    assert transmits(out) == [(to, append(1, [join_entry(2, server="L", id="join:7:2")], 1)) for to in ("A", "B")]
    assert replies(out) == [] and c.commit == 1 and c.store.last_seq() == 2  # held on disk before it is sent
    out = c.receive(Ack("A", 1, 2, 1, 0), 0.125)
    assert replies(out) == [Reply("r1", joined(2, "L"))]
    assert transmits(out) == [(to, append(2, [], 2)) for to in ("A", "B")]  # the new commit point


def test_a_forwarded_proposal_is_sequenced_and_replicated() -> None:
    c = sequencer()
    p = proposal("join", text="", id="join:9:1", server="A")
    out = c.receive(Forward("A", 1, [p]), 0.5)
    assert transmits(out) == [(to, append(1, [{**p, "seq": 2, "term": 1, "time": WALL + 0.5}], 1)) for to in "AB"]


def test_a_refused_forwarded_proposal_goes_back_as_a_result() -> None:
    c = sequencer()
    out = c.receive(Forward("A", 1, [proposal(server="A")]), 0.5)  # alice never joined
    assert transmits(out) == [("A", Result("L", 1, [{"user": "alice", "id": "m1", "code": "not_joined",
                                                     "message": "'alice' is not in the chat: join first"}]))]
    assert c.log.last == 1 and c.counters.proposals_refused == 1


def test_a_forwarded_proposal_claiming_another_server_is_ignored() -> None:
    c = sequencer()
    assert transmits(c.receive(Forward("A", 1, [proposal("join", text="", server="X")]), 0.5)) == []
    assert c.log.last == 1 and c.counters.link_messages_ignored == 1


def test_a_forward_to_a_non_leader_is_ignored() -> None:
    c = follower()
    assert c.receive(Forward("G", 1, [proposal("join", text="", server="G")]), 0.0) == []
    assert c.log.last == 1 and c.counters.link_messages_ignored == 1


def test_a_forwarded_duplicate_gets_the_committed_seq_or_is_dropped_while_pending() -> None:
    c = sequencer()
    p = proposal("join", text="", id="j1", server="A")
    c.receive(Forward("A", 1, [p]), 0.0)
    assert transmits(c.receive(Forward("A", 1, [p]), 0.0)) == [] and c.counters.duplicates_dropped == 1
    c.receive(Ack("A", 1, 2, 1, 0), 0.0)
    out = c.receive(Forward("A", 1, [p]), 0.5)
    assert transmits(out, Result) == [("A", Result("L", 1, [{"user": "alice", "id": "j1", "seq": 2}]))]
    assert c.log.last == 2 and c.counters.duplicates_dropped == 2


def test_proposals_reaching_a_candidate_wait_for_its_epoch() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 0.0)
    assert c.join("r", "alice", S, 0.0) == [] and c.log.last == 0
    assert c.receive(Forward("A", 1, [proposal(user="bob", session=BOB, server="A")]), 0.0) == []
    out = c.receive(Status("A", 1, "", 0, 0, 0), 0.25)
    assert [e["kind"] for _, m in transmits(out, Append) for e in m.entries] == ["config", "join"]
    assert transmits(out, Result) == [("A", Result("L", 1, [{"user": "bob", "id": "m1", "code": "not_joined",
                                                             "message": "'bob' is not in the chat: join first"}]))]


def test_a_deposed_candidate_gives_back_only_its_own_proposals() -> None:
    c = make("L")
    c.set_view("L", peers("A", "M"), 0.0)
    c.receive(Forward("A", 1, [proposal(server="A")]), 0.0)
    c.join("r", "alice", S, 0.0)
    c.set_view("M", peers("A", "M"), 0.5)
    out = c.tick(0.5)
    assert [p["server"] for _, m in transmits(out, Forward) for p in m.proposals] == ["L"]


def test_a_follower_forwards_a_join_and_replies_when_it_commits() -> None:
    c = follower()
    out = c.join("r", "alice", S, 0.0)
    assert transmits(out) == [("L", Forward("F", 1, [proposal("join", text="", id="join:9:1")]))]
    assert c.join("r2", "alice", S, 0.0) == []  # the same join, pending: waits for it
    out = c.receive(append(1, [join_entry(2, id="join:9:1")], 1), 0.0)
    assert replies(out) == [Reply("r", joined(2, "F")), Reply("r2", joined(2, "F"))]
    assert c.who() == [{"user": "alice", "server": "F", "since": WALL}]


def test_a_follower_leaves_name_taken_to_the_sequencer() -> None:
    c = follower_with_alice()  # F still shows alice (session S): it may not have heard of her leave
    out = c.join("r", "alice", S2, 1.0)
    [(to, forward)] = transmits(out, Forward)
    assert errors(out) == [] and forward.proposals[0]["session"] == S2
    refused = {"user": "alice", "id": forward.proposals[0]["id"], "code": "name_taken", "message": "taken"}
    assert c.receive(Result("L", 1, [refused]), 1.0) == [Reply("r", error=("name_taken", "taken"))]
    assert c.proposer.outbox == {}


def test_a_result_with_a_seq_answers_at_once_if_committed_else_at_commit() -> None:
    c = follower_with_alice(voters=("A", "F", "G", "L", "M"))
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    c.send("r2", "alice", S, "m2", "hi", 1.0)
    out = c.receive(Result("L", 1, [{"user": "alice", "id": "m1", "seq": 2},
                                    {"user": "alice", "id": "m2", "seq": 3}]), 1.0)
    assert out == [Reply("r1", {"seq": 2})]
    out = c.receive(append(2, [entry(3, id="elsewhere")], 3), 1.0)
    assert replies(out) == [Reply("r2", {"seq": 3})] and c.proposer.outbox == {}


def test_a_send_retried_while_pending_waits_for_the_same_entry() -> None:
    c = follower_with_alice()
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    assert c.send("r2", "alice", S, "m1", "hi", 1.0) == []
    out = c.receive(append(2, [entry(3, at=1.0)], 2), 1.0)
    assert replies(out) == [Reply("r1", {"seq": 3}), Reply("r2", {"seq": 3})]


def test_a_join_on_another_server_ends_the_session_here() -> None:
    c = follower_with_alice()
    c.receive(append(2, [join_entry(3, server="G", id="join:5:1", text="rejoined")], 2), 1.0)
    assert c.who() == [{"user": "alice", "server": "G", "since": WALL}]
    assert errors(c.heartbeat("h", "alice", S, 1.0)) == ["not_joined"]


def test_a_stale_timeout_from_a_previous_server_does_not_remove_a_rejoined_user() -> None:
    c = sequencer()
    c.receive(Forward("A", 1, [proposal("join", text="", id="j1", server="A")]), 0.0)
    ack_all(c, 0.0)
    join_on_sequencer(c, at=1.0)  # the client failed over to L with its session
    assert c.who() == [{"user": "alice", "server": "L", "since": WALL + 1.0}]
    out = c.receive(Forward("A", 1, [proposal("timeout", text="", id="timeout:9:1", server="A")]), 1.5)
    assert [r["code"] for _, m in transmits(out, Result) for r in m.results] == ["not_joined"]
    assert c.who() == [{"user": "alice", "server": "L", "since": WALL + 1.0}]


# ------------------------------------------------------------------ request timeouts and forwarding


def test_a_request_without_a_leader_times_out_unavailable() -> None:
    c = make("F")
    assert c.join("r", "alice", S, 0.0) == []
    assert c.next_deadline() == LIMITS.request_timeout
    assert c.tick(LIMITS.request_timeout - EPS) == []
    out = c.tick(LIMITS.request_timeout)
    assert out == [Reply("r", error=("unavailable", "not committed in time (no sequencer?); retry with the same id"))]
    assert c.next_deadline() is None


def test_a_request_times_out_when_not_committed_in_time_but_stays_forwarded() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    history = advance(c, 1.0, 5.0)
    assert [(t, a.error[0]) for t, a in history if isinstance(a, Reply)] == [(5.0, "unavailable")]
    assert ("alice", "m1") in c.proposer.outbox


def test_each_request_times_out_once_and_only_waiting_ones_set_the_deadline() -> None:
    c = make("F")
    c.join("r1", "alice", S, 0.0)
    c.join("r2", "bob", BOB, 1.0)
    refused = {"user": "alice", "id": "join:7:1", "code": "name_taken", "message": "taken"}
    assert replies(c.receive(Result("L", 0, [refused]), 2.0)) == [Reply("r1", error=("name_taken", "taken"))]
    assert c.next_deadline() == 1.0 + LIMITS.request_timeout
    history = advance(c, 2.0, 10.0)
    assert [(t, a.request) for t, a in history if isinstance(a, Reply)] == [(5.0, "r2")]
    assert c.next_deadline() is None


def test_a_proposal_made_without_a_leader_goes_to_the_first_leader() -> None:
    c = make("F")
    c.join("r", "alice", S, 0.0)
    assert c.set_view("L", peers("L"), 1.0) == []
    assert c.next_deadline() == 1.0
    assert transmits(c.tick(1.0)) == [("L", Forward("F", 0, [proposal("join", text="", id="join:7:1")]))]


def test_a_forward_is_resent_every_resend_interval_until_committed() -> None:
    c = follower_with_alice()
    forward = Forward("F", 1, [proposal()])
    assert transmits(c.send("r", "alice", S, "m1", "hi", 1.0)) == [("L", forward)]
    assert c.next_deadline() == 1.25
    history = advance(c, 1.0, 2.0)
    assert [(t, a.message) for t, a in history if isinstance(a, Transmit)] == [
        (t, forward) for t in (1.25, 1.5, 1.75, 2.0)]
    c.receive(append(2, [entry(3, at=1.0)], 2), 2.0)
    assert c.proposer.outbox == {} and transmits([a for _, a in advance(c, 2.0, 4.0)]) == []


def test_the_outbox_is_forwarded_to_a_new_leader_at_once() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    assert c.set_view("G", peers("G", "L"), 1.125) == []
    assert c.next_deadline() == 1.125
    assert transmits(c.tick(1.125)) == [("G", Forward("F", 1, [proposal()]))]
    assert c.next_deadline() == 1.125 + LIMITS.resend_interval


def test_forwards_are_batched_by_max_batch() -> None:
    c = follower_with_alice()
    c.limits = replace(c.limits, rate=1e6)
    c.presence.burst = 10**6
    c.sessions["alice"].tokens = 10**6
    for i in range(MAX_BATCH + 1):
        c.send(f"r{i}", "alice", S, f"m{i}", "hi", 0.0)
    resent = [a for t, a in advance(c, 0.0, 0.25) if t == 0.25]
    assert [len(m.proposals) for _, m in transmits(resent, Forward)] == [MAX_BATCH, 1]


# ------------------------------------------------------------------ client timeouts and orphans


def test_a_silent_client_is_timed_out_with_a_timeout_entry() -> None:
    c = lone()
    joined_alone(c, at=0.5)
    assert c.next_deadline() == 0.5 + LIMITS.client_timeout
    assert c.tick(8.5 - EPS) == []
    out = c.tick(8.5)
    assert out[0] == Log("info", "chat: alice timed out")
    (event,) = published(out, "chat.presence")
    assert (event["kind"], event["user"], event["server"], event["seq"], event["id"]) == (
        "timeout", "alice", "L", 3, "timeout:7:3")
    assert c.who() == [] and c.sessions == {} and c.next_deadline() is None
    assert errors(c.heartbeat("h", "alice", S, 8.5)) == ["not_joined"]


def test_a_follower_forwards_the_timeout_of_its_client() -> None:
    c = follower_with_alice()
    out = c.tick(LIMITS.client_timeout)
    assert logs(out) == ["chat: alice timed out"]
    assert transmits(out) == [("L", Forward("F", 1, [proposal("timeout", text="", id="timeout:9:2")]))]
    assert c.sessions == {} and ("alice", "timeout:9:2") in c.proposer.outbox


def test_start_gives_the_users_placed_here_before_a_restart_a_grace_period() -> None:
    store = MemoryStore(1000)
    store.append([config_entry(1), join_entry(2), join_entry(3, user="bob", session=BOB, server="G")], commit=3)
    c = make("F", store)
    c.start(10.0)
    c.set_view("L", peers("G", "L"), 10.0)
    assert c.heartbeat("h", "alice", S, 12.0) == [Reply("h", {"last_seq": 3})]
    assert errors(c.heartbeat("h", "bob", BOB, 12.0)) == ["not_joined"]
    assert c.next_deadline() == 12.0 + LIMITS.client_timeout


def test_start_times_out_the_users_that_do_not_come_back() -> None:
    store = MemoryStore(1000)
    store.append([config_entry(1, 1, "L"), join_entry(2, server="L")], commit=2)
    c = make("L", store)
    c.start(10.0)
    c.set_view("L", {}, 10.0)
    assert c.next_deadline() == 18.0
    assert [(e["kind"], e["user"]) for e in published(c.tick(18.0), "chat.presence")] == [("timeout", "alice")]


def sequencer_with_alice_on_a() -> Chat:
    c = sequencer()
    c.receive(Forward("A", 1, [proposal("join", text="", id="j1", server="A")]), 0.0)
    ack_all(c, 0.0)
    assert c.who() == [{"user": "alice", "server": "A", "since": WALL}]
    return c


def test_the_users_of_a_daemon_that_left_time_out_after_client_timeout() -> None:
    c = sequencer_with_alice_on_a()
    c.set_view("L", peers("B"), 5.0)
    assert c.next_deadline() == 5.0 + LIMITS.client_timeout
    assert published(c.tick(13.0 - EPS)) == []
    out = c.tick(13.0)
    assert [(e["kind"], e["user"], e["server"]) for _, m in transmits(out, Append) for e in m.entries] == [
        ("timeout", "alice", "A")]
    out = c.receive(Ack("B", 1, 3, 2, 0), 13.0)
    assert [e["kind"] for e in published(out)] == ["timeout"] and c.who() == []


def test_an_orphan_that_rejoins_elsewhere_is_not_timed_out() -> None:
    c = sequencer_with_alice_on_a()
    c.set_view("L", peers("B"), 5.0)
    join_on_sequencer(c, at=6.0)  # the client failed over to L with its session
    out = c.tick(13.0)
    assert transmits(out, Append) == [] and c.who()[0]["server"] == "L"


def test_a_restarted_core_recovers_commit_and_presence_but_no_sessions_until_start() -> None:
    store = MemoryStore(1000)
    store.append([config_entry(1), join_entry(2), entry(3, term=3)], commit=3)
    c = make("F", store)
    assert (c.commit, c.log.last, c.log.last_term) == (3, 3, 3)
    assert c.who() == [{"user": "alice", "server": "F", "since": WALL}] and c.sessions == {}
    c.start(1.0)
    assert list(c.sessions) == ["alice"]


# ------------------------------------------------------------------ queries


def test_history_since_and_who_show_committed_entries_only() -> None:
    c = sequencer()
    join_on_sequencer(c)
    join_on_sequencer(c, "bob", BOB, at=0.5)
    for i in range(3):
        c.send(f"r{i}", "alice", S, f"m{i}", f"t{i}", 1.0)
        ack_all(c, 1.0)
    c.send("r", "alice", S, "pending", "not yet", 2.0)
    assert c.history(2) == {"entries": [public(e) for e in c.store.read(4, 2)], "last_seq": 6}
    assert [e["text"] for e in c.history(2)["entries"]] == ["t1", "t2"]
    assert [e["seq"] for e in c.history(100)["entries"]] == [1, 2, 3, 4, 5, 6]
    assert [e["seq"] for e in c.since(2, 2)["entries"]] == [3, 4]
    assert c.since(6, 10) == {"entries": [], "last_seq": 6, "first_seq": 1}
    assert all(set(e) == set(PUBLIC_KEYS) for e in c.since(0, 10)["entries"])
    assert c.who() == [{"user": "alice", "server": "L", "since": WALL},
                       {"user": "bob", "server": "L", "since": WALL + 0.5}]


def test_history_and_since_stop_at_max_reply_bytes_and_since_pages_on() -> None:
    c = lone(limits=replace(LIMITS, max_message=65536, rate=1e6, burst=10**6))
    joined_alone(c)
    big = "x" * 60_000
    for i in range(10):
        c.send(f"r{i}", "alice", S, f"m{i}", big, 1.0)
    per_reply = chat_core.MAX_REPLY_BYTES // (60_000 + chat_core.ENTRY_OVERHEAD)
    assert per_reply == 4
    first = c.since(2, 1000)["entries"]
    assert [e["seq"] for e in first] == [3, 4, 5, 6]
    assert c.since(6, 1000)["entries"][0]["seq"] == 7
    assert [e["seq"] for e in c.history(1000)["entries"]] == [9, 10, 11, 12]  # the newest, oldest first
    c.send("r", "alice", S, "huge", "y" * 65536, 2.0)
    assert [e["id"] for e in c.since(12, 10)["entries"]] == ["huge"]  # one entry always fits
    assert [e["id"] for e in c.history(10)["entries"]][-1] == "huge"


# ------------------------------------------------------------------ MAX_TAIL


@pytest.mark.parametrize("cap", [2, 3])
def test_a_sequencer_with_max_tail_uncommitted_entries_refuses_with_unavailable(monkeypatch, cap: int) -> None:
    c = sequencer(limits=replace(LIMITS, rate=1e6, burst=10**6))
    join_on_sequencer(c)
    monkeypatch.setattr(chat_sequencer, "MAX_TAIL", cap)
    for i in range(cap):
        assert transmits(c.send(f"r{i}", "alice", S, f"m{i}", "hi", 0.0), Append) != []
    assert len(c.log.tail) == cap
    out = c.send("over", "alice", S, "over", "hi", 0.0)
    assert errors(out) == ["unavailable"] and transmits(out) == []
    assert len(c.log.tail) == cap and c.counters.proposals_refused == 1
    c.receive(Ack("A", 1, 2 + cap, 2, 0), 0.0)
    assert c.log.tail == []
    assert errors(c.send("again", "alice", S, "over", "hi", 0.5)) == [] and len(c.log.tail) == 1


# ------------------------------------------------------------------ batching: hold and release


def test_held_inputs_cost_one_append_per_follower_and_one_store_transaction(monkeypatch) -> None:
    c = sequencer(limits=replace(LIMITS, rate=1e6, burst=10**6))
    join_on_sequencer(c)
    writes: list[list[int]] = []
    store_append = c.store.append
    monkeypatch.setattr(c.store, "append", lambda entries, commit=None: (
        writes.append([e["seq"] for e in entries]), store_append(entries, commit))[-1])
    c.hold()
    assert c.send("r1", "alice", S, "m1", "one", 1.0) == []
    assert c.send("r2", "alice", S, "m2", "two", 1.0) == []
    assert c.receive(Forward("A", 1, [proposal("join", user="bob", text="", session=BOB, id="jb", server="A")]),
                     1.0) == []
    assert writes == [] and c.store.last_seq() == 2  # nothing leaves, nothing is written, before release
    out = c.release(1.0)
    assert [(to, [e["seq"] for e in m.entries]) for to, m in transmits(out)] == [("A", [3, 4, 5]), ("B", [3, 4, 5])]
    assert writes == [[3, 4, 5]]
    assert c.release(1.0) == []


def test_a_commit_and_a_send_in_one_held_batch_cost_one_store_transaction() -> None:
    """The send's dedupe looks up what this batch committed without writing it first."""
    store = RecordingStore()
    c = make("F", store, limits=replace(LIMITS, rate=1e6, burst=10**6))
    c.set_view("L", peers("G", "L"), 0.0)
    c.receive(Gather("L", 1, ""), 0.0)
    c.receive(append(0, [config_entry(1), join_entry(2, id="join:9:1", server="F")], 0), 0.0)
    store.writes.clear()
    c.hold()
    c.receive(append(2, [entry(3, id="m1", server="F")], 1), 0.0)  # F and L: 3 commits on arrival
    c.send("again", "alice", S, "m1", "hi", 0.0)  # a retry of what just committed
    c.send("new", "alice", S, "m2", "hi", 0.0)
    c.receive(append(3, [entry(4, id="m9", server="G")], 3), 0.0)
    out = c.release(0.0)
    assert replies(out) == [Reply("again", {"seq": 3})]
    assert store.writes == [("append", ([3, 4], 4))]
    assert [p["id"] for _, m in transmits(out, Forward) for p in m.proposals] == ["m2"]


def test_a_held_follower_acknowledges_a_burst_once() -> None:
    c = follower()
    c.hold()
    c.receive(append(1, [join_entry(2)], 1), 0.0)
    c.receive(append(2, [entry(3)], 1), 0.0)
    assert transmits(c.release(0.0)) == [("L", Ack("F", 1, 3, 3, 0))]


# ------------------------------------------------------------------ next_deadline


def test_next_deadline_is_none_when_nothing_waits_on_time() -> None:
    assert make("F").next_deadline() is None
    assert follower().next_deadline() is None
    assert sequencer().next_deadline() is None
    c = lone()
    assert c.next_deadline() is None
    joined_alone(c)
    c.leave("r", "alice", S, 1.0)
    assert c.next_deadline() is None


def test_next_deadline_is_the_earliest_pending_deadline() -> None:
    c = follower_with_alice()  # the session: 0 + 8
    c.heartbeat("h", "alice", S, 3.0)  # 3 + 8 = 11
    assert c.next_deadline() == 11.0
    c.join("rb", "bob", BOB, 6.5)  # the waiter: 10.5, the forward's resend: 6.75
    assert c.next_deadline() == 6.75
    c.tick(6.75)
    assert c.next_deadline() == 7.0
    out = c.receive(append(2, [join_entry(3, user="bob", session=BOB, id="join:9:2")], 3), 6.75)
    assert replies(out) == [Reply("rb", joined(3, "F", "bob"))]
    assert c.next_deadline() == 11.0  # alice's session; bob's runs to 6.75 + 8


def test_next_deadline_while_gathering_is_the_gather_resend_and_a_lagging_follower_its_resend() -> None:
    c = make("L")
    c.set_view("L", peers("A"), 2.0)
    assert c.next_deadline() == 2.25
    s = sequencer()
    s.join("r", "alice", S, 3.0)
    assert s.next_deadline() == 3.25  # A and B lag: resend then
    history = advance(s, 3.0, 3.5)
    assert [(t, a.to, [e["seq"] for e in a.message.entries]) for t, a in history if isinstance(a, Transmit)] == [
        (3.25, "A", [2]), (3.25, "B", [2]), (3.5, "A", [2]), (3.5, "B", [2])]


def test_a_new_peer_of_an_active_sequencer_is_caught_up_from_what_it_needs() -> None:
    c = sequencer()
    join_on_sequencer(c)
    out = c.set_view("L", peers("A", "B", "N"), 1.0)
    assert transmits(out) == [("N", append(2, [], 2))]
    out = c.receive(Ack("N", 1, 0, 0, 1), 1.0)
    assert [(to, m.prev, [e["seq"] for e in m.entries]) for to, m in transmits(out)] == [("N", 0, [1, 2])]


# ------------------------------------------------------------------ catch-up beyond the retained history

ALICE_ON_L = join_entry(2, server="L")
BOB_ON_X = join_entry(3, user="bob", session=BOB, server="X")
GL_CONFIG = config_entry(1, 1, "GL")


def trimmed_store() -> MemoryStore:
    """The config {G, L}, alice (on L) and bob (on X), then messages up to 22, all committed; 13..22 retained."""
    store = MemoryStore(10)
    store.append([GL_CONFIG, ALICE_ON_L, BOB_ON_X] + retained(4, 22), commit=22)
    store.save_state(ChatState(CLUSTER, 1, "L"))
    assert store.base() == Base(12, 1, {"alice": ALICE_ON_L, "bob": BOB_ON_X}, GL_CONFIG)
    return store


def retained(first: int, last: int) -> list[dict[str, Any]]:
    return [entry(i, id=f"m{i}", server="L") for i in range(first, last + 1)]


def sequencer_of_a_trimmed_log() -> tuple[Chat, list[Action]]:
    """L, with the trimmed store, wins epoch 2 with G, whose log is empty; returns what that sent."""
    c = make("L", trimmed_store())
    c.set_view("L", peers("G"), 0.0)
    out = c.receive(Status("G", 2, "", 0, 0, 0), 0.0)
    assert c.role == ACTIVE
    return c, out


def test_a_follower_behind_the_retained_history_gets_a_snapshot_then_the_entries_after_it() -> None:
    c, out = sequencer_of_a_trimmed_log()
    (new_config,) = c.log.read(22, 10)
    ids = list(c.store.base().ids)  # the trimmed ids go with it, for dedupe
    assert [row[2] for row in ids] == list(range(2, 13))  # every trimmed entry but the config
    assert transmits(out) == [
        ("G", Snapshot("L", 2, 12, 1, 0, 2, [ALICE_ON_L, BOB_ON_X], GL_CONFIG, CLUSTER, 0, len(ids), ids)),
        ("G", Append("L", 2, CLUSTER, 12, 1, retained(13, 22) + [new_config], 23)),
    ]
    assert c.commit == 23  # {G, L}: L is the top, alone a quorum
    assert c.followers["G"].match == 0 and c.counters.snapshots_sent == 1  # nothing held until acknowledged
    assert c.receive(Ack("G", 2, 23, 23, 0), 0.0) == []
    assert c.followers["G"].match == 23 and not c._lagging(c.followers["G"])


def test_a_lost_snapshot_is_sent_again_after_resend_interval() -> None:
    c, _ = sequencer_of_a_trimmed_log()
    history = advance(c, 0.0, 0.25)
    assert [(t, type(a.message)) for t, a in history if isinstance(a, Transmit)] == [
        (0.25, Snapshot), (0.25, Append)]


def test_a_follower_installs_a_snapshot_and_publishes_only_what_follows_it() -> None:
    c = make("F")
    c.set_view("L", peers("L"), 0.0)
    c.receive(Gather("L", 2, CLUSTER), 0.0)
    out = c.receive(Snapshot("L", 2, 12, 1, 0, 2, [ALICE_ON_L, BOB_ON_X], config_entry(1, 1, "FL"), ""), 0.0)
    assert out == [
        Log("warning", "chat: installed a snapshot from L at seq 12: "
                       "12 entries trimmed before they reached this daemon are not published here"),
        Transmit("L", Ack("F", 2, 12, 12, 0)),
    ]
    assert (c.commit, c.log.last, c.cluster, c.config) == (12, 12, CLUSTER, Config(CLUSTER, peers("F", "L")))
    assert c.counters.snapshots_installed == 1 and c.store.first_seq() == 13
    assert [u["user"] for u in c.who()] == ["alice", "bob"]
    out = c.receive(append(12, retained(13, 14), 14, term=2, prev_term=1), 0.0)
    assert [e["seq"] for e in published(out)] == [13, 14]
    assert c.since(0, 100) == {"entries": [public(e) for e in retained(13, 14)], "last_seq": 14, "first_seq": 13}


def test_a_snapshot_at_or_before_what_the_follower_holds_is_only_acknowledged() -> None:
    c = follower()
    c.receive(append(1, [join_entry(2), entry(3)], 3), 0.0)
    out = c.receive(Snapshot("L", 1, 3, 1, 0, 0, [], None, ""), 0.0)
    assert out == [Transmit("L", Ack("F", 1, 3, 3, 0))]
    assert c.store.read(1, 10) == [join_entry(2), entry(3)] and c.who() != []


def test_a_snapshot_ends_the_sessions_it_does_not_place_here_and_opens_those_it_does() -> None:
    c = follower_with_alice()
    bob_here = join_entry(5, user="bob", session=BOB, server="F", id="j-bob")
    c.receive(Snapshot("L", 1, 10, 1, 0, 1, [bob_here], config_entry(1), ""), 2.0)  # alice left meanwhile
    assert errors(c.heartbeat("h", "alice", S, 3.0)) == ["not_joined"]
    assert c.heartbeat("h", "bob", BOB, 3.0) == [Reply("h", {"last_seq": 10})]


def test_a_snapshot_resolves_a_proposal_known_committed_within_it() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 0.0)
    c.receive(Result("L", 1, [{"user": "alice", "id": "m1", "seq": 5}]), 0.0)
    out = c.receive(Snapshot("L", 1, 10, 1, 0, 1, [join_entry(2)], config_entry(1), ""), 0.0)
    assert replies(out) == [Reply("r", {"seq": 5})]


def test_a_large_presence_table_goes_in_parts_and_a_gap_between_them_is_ignored(monkeypatch) -> None:
    monkeypatch.setattr(chat_sequencer, "MAX_BATCH", 2)
    joins = [join_entry(i, user=f"u{i}", server="X") for i in range(2, 7)]
    store = MemoryStore(1)
    store.append([GL_CONFIG] + joins + [entry(7)], commit=7)
    c = make("L", store)
    c.set_view("L", peers("G"), 0.0)
    parts = [m for _, m in transmits(c.receive(Status("G", 1, "", 0, 0, 0), 0.0), Snapshot)]
    assert [(p.offset, p.total, [u["user"] for u in p.users]) for p in parts] == [
        (0, 5, ["u2", "u3"]), (2, 5, ["u4", "u5"]), (4, 5, ["u6"])]
    g = make("G")
    g.set_view("L", peers("L"), 0.0)
    g.receive(Gather("L", 1, ""), 0.0)
    assert g.receive(parts[0], 0.0) == [] and g.receive(parts[2], 0.0) == []  # the middle one was lost
    assert g.commit == 0 and g.counters.link_messages_ignored == 1
    out = [a for part in parts for a in g.receive(part, 0.0)]  # sent again, whole
    assert transmits(out) == [("L", Ack("G", 1, 6, 6, 0))]
    assert [u["user"] for u in g.who()] == ["u2", "u3", "u4", "u5", "u6"]


def test_snapshot_parts_of_a_large_presence_table_each_fit_in_one_link_message() -> None:
    count = 2 * MAX_BATCH + 1
    joins = [join_entry(i, user=f"u{i:031d}", id=f"{i:064d}", server="X" * 64, session=f"{i:064d}", text="rejoined")
             for i in range(2, count + 2)]
    store = MemoryStore(1)
    store.append([GL_CONFIG] + joins + [entry(count + 2)], commit=count + 2)
    c = make("L", store)
    c.set_view("L", peers("G"), 0.0)
    parts = [m for _, m in transmits(c.receive(Status("G", 1, "", 0, 0, 0), 0.0), Snapshot)]
    assert [len(p.users) for p in parts] == [MAX_BATCH, MAX_BATCH, 1]
    assert all(len(linkwire.encode(p)) <= MAX_LINK_MESSAGE for p in parts)


def test_a_fetch_reaching_before_the_history_is_answered_with_a_snapshot_first() -> None:
    c = make("F", trimmed_store())
    c.set_view("M", peers("M"), 0.0)
    c.receive(Gather("M", 2, CLUSTER), 0.0)
    ids = list(c.store.base().ids)
    assert transmits(c.receive(Fetch("M", 2, 3), 0.0)) == [
        ("M", Snapshot("F", 2, 12, 1, 0, 2, [ALICE_ON_L, BOB_ON_X], GL_CONFIG, CLUSTER, 0, len(ids), ids)),
        ("M", Entries("F", 2, retained(13, 22)))]
    assert transmits(c.receive(Fetch("M", 2, 12), 0.0)) == [("M", Entries("F", 2, retained(13, 22)))]


def test_a_candidate_behind_the_sources_history_installs_its_snapshot_then_sequences() -> None:
    c = candidate("G", epoch=2)
    assert transmits(c.receive(Status("G", 2, CLUSTER, 22, 22, 1), 0.0)) == [("G", Fetch("L", 2, 0))]
    out = c.receive(Snapshot("X", 1, 12, 1, 0, 0, [], None, ""), 0.0)  # not its fetch source, and an older epoch
    assert transmits(out) == [("X", Refuse("L", 2, "", "epoch"))] and c.commit == 0
    c.receive(Snapshot("G", 2, 12, 1, 0, 2, [ALICE_ON_L, BOB_ON_X], GL_CONFIG, ""), 0.0)
    assert c.role == FETCHING and c.commit == 12 and c.cluster == CLUSTER
    out = c.receive(Entries("G", 2, retained(13, 22)), 0.0)
    assert c.role == ACTIVE and c.commit == 23  # and its own config entry: L is the top of {G, L}
    assert [e["seq"] for e in published(out)] == list(range(13, 24))
    assert c.store.first_seq() == 13 and [u["user"] for u in c.who()] == ["alice", "bob"]


class LegacyStore(MemoryStore):
    """A store whose base is unknown, as a history trimmed before snapshots existed."""

    def base(self) -> None:  # type: ignore[override]
        return None


def test_a_follower_older_than_a_history_with_no_known_base_is_reported_once() -> None:
    store = LegacyStore(10)
    store.append([GL_CONFIG] + retained(2, 22), commit=22)
    c = make("L", store)
    c.set_view("L", peers("G"), 0.0)
    out = c.receive(Status("G", 1, "", 0, 0, 0), 0.0) + c.receive(Ack("G", 1, 0, 0, 1), 0.0)
    history = [(0.0, a) for a in out] + advance(c, 0.0, 1.0)
    assert c.role == ACTIVE and c.followers["G"].match == 0
    assert logs([a for _, a in history], "warning") == [
        "chat: cannot catch G up from seq 1: older than the retained history, whose base is unknown"]
    assert transmits([a for _, a in history], Append) == transmits([a for _, a in history], Snapshot) == []


# ------------------------------------------------------------------ the link codec


def test_a_catch_up_append_fits_in_one_link_message() -> None:
    store = MemoryStore(10_000)
    text = "é" * 2048  # 4096 bytes of UTF-8: the default max_message
    store.append([GL_CONFIG] + [entry(i, id=f"m{i}", text=text) for i in range(2, MAX_BATCH + 2)], commit=1)
    c = make("L", store, ChatLimits())
    c.set_view("L", peers("G"), 0.0)
    appends = [m for _, m in transmits(c.receive(Status("G", 1, "", 0, 0, 0), 0.0), Append)]
    assert sum(len(m.entries) for m in appends) == MAX_BATCH + 2  # and both config entries
    assert all(len(linkwire.encode(m)) <= MAX_LINK_MESSAGE for m in appends)


def test_everything_a_cluster_of_three_says_survives_the_codec() -> None:
    net = Net("ABL", leader="L")
    chats = net.chats
    net.deliver([("A", a) for a in chats["A"].join("r", "alice", S, 0.0)])
    net.deliver([("A", a) for a in chats["A"].send("r", "alice", S, "m1", "é\x00\"\\ \U0001f600", 0.0)])
    net.deliver([("B", a) for a in chats["B"].forget("A", 0.0)])
    net.run(lambda c: c.set_view("B", peers(*[n for n in "ABL" if n != c.name]), 1.0))
    assert chats["B"].role == ACTIVE and chats["A"].who() == [{"user": "alice", "server": "A", "since": WALL}]
    assert {type(m) for m in net.said} >= {Forward, Append, Ack, Gather, Status, Remove}
    for message in net.said:
        assert linkwire.decode(linkwire.encode(message)) == message
