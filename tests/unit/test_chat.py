"""The chat log core (`dsd.core.chat.Chat`), one daemon at a time, on a fake clock.

Each test drives a single Chat by hand: client requests, link messages written out in
full, view changes and ticks, and checks the exact actions it returns. Times are plain
floats chosen to be exact in binary, so deadlines compare with ==. Many daemons
together are the business of tests/sim/test_chat_sim.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dsd import linkwire
from dsd.core import chat as chat_module
from dsd.core.actions import Action, Log, Publish, Reply, Transmit
from dsd.core.chat import ACTIVE, FETCHING, FOLLOWING, GATHERING, Chat, ChatLimits, public
from dsd.linkwire import (
    MAX_LINK_MESSAGE, PUBLIC_KEYS, Ack, Append, Entries, Fetch, Forward, Gather, Result, Snapshot, Status,
)
from dsd.store import Base, MemoryStore

# client timeout 8, request timeout 4, resend 0.25, gather timeout 1: exact binary fractions.
LIMITS = ChatLimits(client_timeout=8.0, max_message=8, rate=4.0, burst=3, resend_interval=0.25,
                    request_timeout=4.0, gather_timeout=1.0)
EPOCH = 1_700_000_000.0
INCARNATION = 7  # presence ids are "<kind>-7-<n>"
S = "alice-session-0001"
S2 = "other-session-0002"
BOB = "bob-session-00003"
EPS = 2**-20


def make(name: str = "L", store: MemoryStore | None = None, limits: ChatLimits = LIMITS) -> Chat:
    return Chat(name, store if store is not None else MemoryStore(1000), limits, EPOCH, INCARNATION)


def proposal(kind: str = "message", user: str = "alice", text: str = "hi", id: str = "m1",
             server: str = "F", session: str = S) -> dict[str, Any]:
    return {"kind": kind, "user": user, "text": text, "id": id, "server": server, "session": session}


def entry(seq: int, term: int = 1, at: float = 0.0, **changes: Any) -> dict[str, Any]:
    return {**proposal(**changes), "seq": seq, "term": term, "time": EPOCH + at}


def join_entry(seq: int, term: int = 1, at: float = 0.0, n: int = 1, **changes: Any) -> dict[str, Any]:
    return entry(seq, term, at, **{"kind": "join", "text": "", "id": f"join-7-{n}", **changes})


def joined(seq: int, server: str, user: str = "alice") -> dict[str, Any]:
    """A join's reply: the entry's seq, who, where, and the heartbeat deadline the client must keep."""
    return {"seq": seq, "user": user, "server": server, "client_timeout": LIMITS.client_timeout}


def transmits(actions: list[Action], kind: type | None = None) -> list[tuple[str, Any]]:
    return [(a.to, a.message) for a in actions
            if isinstance(a, Transmit) and (kind is None or isinstance(a.message, kind))]


def replies(actions: list[Action]) -> list[Reply]:
    return [a for a in actions if isinstance(a, Reply)]


def errors(actions: list[Action]) -> list[str]:
    return [a.error[0] for a in replies(actions) if a.error is not None]


def published(actions: list[Action], topic: str | None = None) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, Publish) and (topic is None or a.topic == topic)]


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


def lone_leader(name: str = "L", store: MemoryStore | None = None, limits: ChatLimits = LIMITS) -> Chat:
    c = make(name, store, limits)
    out = c.set_view(name, 1, frozenset(), 0.0)
    assert out == [Log("info", "chat: leading term 1 from seq 0 (0 uncommitted)")]
    assert c.role == ACTIVE
    return c


def joined_alone(c: Chat, user: str = "alice", session: str = S, at: float = 0.0) -> int:
    out = c.join(f"join-{user}", user, session, at)
    (reply,) = replies(out)
    assert reply.error is None, reply
    return reply.result["seq"]


def leader_with_peer(peer: str = "F") -> Chat:
    """L leads term 1 with one follower whose log is empty."""
    c = make("L")
    assert transmits(c.set_view("L", 1, frozenset({peer}), 0.0)) == [(peer, Gather("L", 1))]
    assert c.role == GATHERING
    c.receive(Status(peer, 1, 0, 0, 0), 0.0)
    assert c.role == ACTIVE
    return c


def leader_with_alice() -> Chat:
    """L leads term 1 with follower F; alice joined on L and seq 1 is committed everywhere."""
    c = leader_with_peer()
    c.join("rj", "alice", S, 0.0)
    out = c.receive(Ack("F", 1, 1, 0, 0), 0.0)
    assert replies(out) == [Reply("rj", joined(1, "L"))]
    c.receive(Ack("F", 1, 1, 1, 0), 0.0)
    return c


def follower(name: str = "F", leader: str = "L", term: int = 1) -> Chat:
    c = make(name)
    assert c.set_view(leader, term, frozenset({leader}), 0.0) == []
    assert c.role == FOLLOWING
    return c


def follower_with_alice() -> Chat:
    """F follows L in term 1; alice joined through F and her join (seq 1) is committed."""
    c = follower()
    out = c.join("rj", "alice", S, 0.0)
    assert out == [Transmit("L", Forward("F", 1, [proposal("join", text="", id="join-7-1")]))]
    out = c.receive(Append("L", 1, 0, [join_entry(1)], 1), 0.0)
    assert replies(out) == [Reply("rj", joined(1, "F"))]
    return c


def deposed(*ids: str) -> Chat:
    """F led term 1 with follower G: alice joined through F (seq 1, committed: G acknowledged it),
    then sent messages `ids` (seq 2, 3, ...: acknowledged by nobody); now M leads term 2.

    A deposed leader is the one daemon that holds uncommitted entries of another leader's
    term: a follower commits what it holds of its leader's log at once."""
    c = make("F")
    c.set_view("F", 1, frozenset({"G"}), 0.0)
    c.receive(Status("G", 1, 0, 0, 0), 0.0)
    c.join("rj", "alice", S, 0.0)
    c.receive(Ack("G", 1, 1, 0, 0), 0.0)
    for id in ids:
        c.send(f"r{id}", "alice", S, id, "hi", 0.0)
    c.set_view("M", 2, frozenset({"M", "G"}), 1.0)
    assert (c.role, c.commit, c.tail) == (FOLLOWING, 1, [entry(2 + i, id=id) for i, id in enumerate(ids)])
    return c


# ------------------------------------------------------------- lone leader


def test_lone_leader_commits_a_join_at_once_and_publishes_it() -> None:
    c = lone_leader()
    out = c.join("r1", "alice", S, 0.5)
    expected = join_entry(1, at=0.5, server="L")
    assert out == [
        Publish("chat.presence", {k: expected[k] for k in PUBLIC_KEYS}),
        Reply("r1", joined(1, "L")),
    ]
    assert c.store.read(0, 10) == [expected]
    assert (c.commit, c.tail) == (1, [])


def test_published_events_carry_exactly_the_public_keys() -> None:
    c = lone_leader()
    joined_alone(c)
    out = c.send("r2", "alice", S, "m1", "hello", 1.0)
    (event,) = published(out, "chat.message")
    assert event == {"seq": 2, "kind": "message", "user": "alice", "text": "hello", "id": "m1",
                     "server": "L", "time": EPOCH + 1.0}
    assert set(event) == set(PUBLIC_KEYS)
    assert "session" not in event and "term" not in event
    assert replies(out) == [Reply("r2", {"seq": 2})]
    out = c.leave("r3", "alice", S, 2.0)
    assert [(e["kind"], e["seq"]) for e in published(out, "chat.presence")] == [("leave", 3)]
    assert published(out, "chat.message") == []
    assert replies(out) == [Reply("r3", {"seq": 3})]


def test_counters_count_sequenced_and_committed_entries() -> None:
    c = lone_leader()
    joined_alone(c)
    c.send("r", "alice", S, "m1", "hi", 0.0)
    assert (c.counters.entries_sequenced, c.counters.entries_committed) == (2, 2)


# ----------------------------------------------------------- leader, one peer


def test_leader_gathers_before_sequencing_and_status_completes_it() -> None:
    c = make("L")
    out = c.set_view("L", 1, frozenset({"F"}), 0.0)
    assert out == [Transmit("F", Gather("L", 1))]
    assert c.role == GATHERING
    out = c.join("r1", "alice", S, 0.0)
    assert out == [] and c.tail == []  # held until the view change is over
    out = c.receive(Status("F", 1, 0, 0, 0), 0.25)
    assert c.role == ACTIVE
    assert out == [
        Log("info", "chat: leading term 1 from seq 0 (0 uncommitted)"),
        Transmit("F", Append("L", 1, 0, [join_entry(1, at=0.25, server="L")], 0)),
    ]


def test_status_from_a_stranger_or_of_another_term_does_not_complete_gathering() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"F"}), 0.0)
    c.receive(Status("X", 2, 0, 0, 0), 0.0)
    c.receive(Status("F", 1, 0, 0, 0), 0.0)
    assert c.role == GATHERING
    assert c.counters.link_messages_ignored == 1  # the older term
    c.receive(Status("F", 2, 0, 0, 0), 0.0)
    assert c.role == ACTIVE


def test_entry_commits_only_after_the_followers_ack_and_the_reply_waits_for_it() -> None:
    c = leader_with_peer()
    out = c.join("r1", "alice", S, 0.0)
    assert out == [Transmit("F", Append("L", 1, 0, [join_entry(1, server="L")], 0))]
    assert c.commit == 0 and c.store.last_seq() == 0
    assert c.tick(0.0) == []
    out = c.receive(Ack("F", 1, 1, 0, 0), 0.125)
    assert out == [
        Publish("chat.presence", public(join_entry(1, server="L"))),
        Reply("r1", joined(1, "L")),
        Transmit("F", Append("L", 1, 1, [], 1)),  # tell the follower the new commit point
    ]
    assert c.commit == 1


def test_send_reply_comes_only_at_commit() -> None:
    c = leader_with_alice()
    out = c.send("r2", "alice", S, "m1", "hi", 1.0)
    assert out == [Transmit("F", Append("L", 1, 1, [entry(2, at=1.0, server="L")], 1))]
    assert replies(out) == [] and published(out) == []
    assert c.receive(Ack("F", 1, 1, 1, 0), 1.0) == []  # an ack that holds nothing new
    out = c.receive(Ack("F", 1, 2, 1, 0), 1.0)
    assert replies(out) == [Reply("r2", {"seq": 2})]
    assert [e["seq"] for e in published(out, "chat.message")] == [2]


def test_follower_ack_with_need_makes_the_leader_resend_from_there() -> None:
    c = leader_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    c.send("r3", "alice", S, "m2", "hi", 1.0)
    out = c.receive(Ack("F", 1, 1, 1, 2), 1.0)
    assert transmits(out) == [("F", Append("L", 1, 1, [entry(2, at=1.0, server="L"),
                                                      entry(3, at=1.0, id="m2", server="L")], 1))]


def test_lagging_follower_is_resent_what_it_lacks_every_resend_interval() -> None:
    c = leader_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    history = advance(c, 1.0, 1.75)
    again = Transmit("F", Append("L", 1, 1, [entry(2, at=1.0, server="L")], 1))
    resends = [t for t, a in history if a == again]
    assert resends[-3:] == [1.25, 1.5, 1.75]
    assert set(resends) <= {1.0, 1.25, 1.5, 1.75}
    assert [a for _, a in history if isinstance(a, Transmit) and a != again] == []
    c.receive(Ack("F", 1, 2, 1, 0), 1.75)
    c.receive(Ack("F", 1, 2, 2, 0), 1.75)
    assert c.next_deadline() == 1.0 + LIMITS.client_timeout  # alice's session only


def test_first_resend_of_an_append_waits_one_resend_interval() -> None:
    c = leader_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    assert c.next_deadline() == 1.0 + LIMITS.resend_interval
    history = advance(c, 1.0, 1.5)
    assert [t for t, a in history if isinstance(a, Transmit)] == [1.25, 1.5]


def test_forward_from_a_follower_is_sequenced_and_replicated() -> None:
    c = leader_with_peer()
    p = proposal("join", text="", id="join-9-1")
    out = c.receive(Forward("F", 1, [p]), 0.5)
    assert out == [Transmit("F", Append("L", 1, 0, [{**p, "seq": 1, "term": 1, "time": EPOCH + 0.5}], 0))]
    assert c.counters.entries_sequenced == 1


def test_forwarded_proposal_refused_goes_back_to_its_proposer_as_a_result() -> None:
    c = leader_with_peer()
    out = c.receive(Forward("F", 1, [proposal()]), 0.5)  # alice never joined
    (result,) = transmits(out)
    assert result[0] == "F" and isinstance(result[1], Result)
    assert result[1].results == [{"user": "alice", "id": "m1", "code": "not_joined",
                                  "message": result[1].results[0]["message"]}]
    assert c.tail == [] and c.counters.proposals_refused == 1


def test_forwarded_proposal_claiming_another_server_is_ignored() -> None:
    c = leader_with_peer()
    out = c.receive(Forward("F", 1, [proposal("join", text="", server="X")]), 0.5)
    assert out == [] and c.tail == []
    assert c.counters.link_messages_ignored == 1


def test_forward_to_a_non_leader_is_ignored_and_counted() -> None:
    c = follower()
    assert c.receive(Forward("X", 1, [proposal("join", text="", server="X")]), 0.0) == []
    assert c.tail == [] and c.counters.link_messages_ignored == 1


def test_forwarded_duplicate_of_a_committed_entry_gets_its_seq() -> None:
    c = leader_with_peer()
    p = proposal("join", text="", id="j1")
    c.receive(Forward("F", 1, [p]), 0.0)
    c.receive(Ack("F", 1, 1, 0, 0), 0.0)
    out = c.receive(Forward("F", 1, [p]), 0.5)
    assert transmits(out) == [("F", Result("L", 1, [{"user": "alice", "id": "j1", "seq": 1}]))]
    assert c.last == 1 and c.counters.duplicates_dropped == 1


def test_forwarded_duplicate_of_an_uncommitted_entry_is_dropped_silently() -> None:
    c = leader_with_peer()
    p = proposal("join", text="", id="j1")
    c.receive(Forward("F", 1, [p]), 0.0)
    assert c.receive(Forward("F", 1, [p]), 0.0) == []
    assert c.last == 1 and c.counters.duplicates_dropped == 1


def test_leader_behind_a_peer_fetches_its_log_before_leading() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"F"}), 0.0)
    e1, e2 = join_entry(1), entry(2)
    out = c.receive(Status("F", 2, 0, 2, 1), 0.0)
    assert out == [Transmit("F", Fetch("L", 2, 0))]
    assert c.role == FETCHING
    out = c.receive(Entries("F", 2, [e1, e2]), 0.0)
    assert c.role == ACTIVE and c.tail == [e1, e2]
    assert transmits(out) == [("F", Append("L", 2, 0, [e1, e2], 0))]
    out = c.receive(Ack("F", 2, 2, 0, 0), 0.0)
    assert [e["seq"] for e in published(out)] == [1, 2]
    assert c.store.read(0, 10) == [e1, e2]


def test_leader_adopts_what_a_peer_says_is_committed() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"F"}), 0.0)
    c.receive(Status("F", 2, 1, 1, 1), 0.0)
    out = c.receive(Entries("F", 2, [join_entry(1)]), 0.0)
    assert c.commit == 1 and published(out) == [public(join_entry(1))]
    assert c.who() == [{"user": "alice", "server": "F", "since": EPOCH}]


def test_silent_peer_is_left_out_after_gather_timeout() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"A", "B"}), 0.0)
    c.receive(Status("A", 2, 0, 0, 0), 0.0)
    history = advance(c, 0.0, 1.0)
    assert [(t, a) for t, a in history if isinstance(a, Transmit)] == [
        (t, Transmit("B", Gather("L", 2))) for t in (0.25, 0.5, 0.75)
    ]
    assert c.role == ACTIVE
    assert any(isinstance(a, Log) and a.level == "warning" and "B" in a.text for _, a in history)


def test_fetch_after_gather_timeout_with_a_silent_peer_activates() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"A", "B"}), 0.0)
    c.receive(Status("A", 2, 0, 1, 1), 0.0)  # A is ahead, B says nothing
    history = advance(c, 0.0, 1.0)
    assert ("A", Fetch("L", 2, 0)) in [(a.to, a.message) for _, a in history if isinstance(a, Transmit)]
    assert c.role == FETCHING
    out = c.receive(Entries("A", 2, [join_entry(1)]), 1.0)
    assert c.role == ACTIVE and c.tail == [join_entry(1, term=2)]  # adopted: now the new term's
    assert sorted(to for to, _ in transmits(out, Append)) == ["A", "B"]


def test_peer_gone_while_gathering_completes_the_gathering() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"A", "B"}), 0.0)
    c.receive(Status("A", 2, 0, 0, 0), 0.0)
    assert c.role == GATHERING
    c.set_view("L", 2, frozenset({"A"}), 0.125)
    assert c.role == ACTIVE


def test_best_peer_gone_while_fetching_restarts_the_gathering() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"A", "B"}), 0.0)
    c.receive(Status("A", 2, 0, 0, 0), 0.0)
    c.receive(Status("B", 2, 0, 3, 1), 0.0)
    assert c.role == FETCHING
    out = c.set_view("L", 2, frozenset({"A"}), 0.125)
    assert out == [Transmit("A", Gather("L", 2))]
    assert c.role == GATHERING


def test_peer_leaving_an_active_leader_lets_it_commit_alone() -> None:
    c = leader_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    out = c.set_view("L", 1, frozenset(), 1.0)
    assert replies(out) == [Reply("r2", {"seq": 2})]


def test_new_peer_of_an_active_leader_is_caught_up() -> None:
    c = lone_leader()
    joined_alone(c)
    out = c.set_view("L", 1, frozenset({"G"}), 1.0)
    assert out == [Transmit("G", Append("L", 1, 1, [], 1))]  # optimistic: it may hold it all
    out = c.receive(Ack("G", 1, 0, 0, 1), 1.0)
    assert out == [Transmit("G", Append("L", 1, 0, [join_entry(1, server="L")], 1))]
    out = c.receive(Ack("G", 1, 1, 1, 0), 1.0)
    assert out == [] and c.next_deadline() == LIMITS.client_timeout  # alice's session only


class LegacyStore(MemoryStore):
    """A store whose base is unknown, as a trimmed history from before snapshots."""

    def base(self) -> None:  # type: ignore[override]
        return None


def test_follower_older_than_a_history_with_no_known_base_is_reported_once() -> None:
    store = LegacyStore(10)  # keeps 10 entries once it holds more than 11
    store.append([entry(i, id=f"m{i}", server="L") for i in range(1, 21)])
    assert store.first_seq() == 11
    c = make("L", store)
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    out = c.receive(Status("G", 2, 0, 0, 0), 0.0) + c.receive(Ack("G", 2, 0, 0, 1), 0.0)
    history = [(0.0, a) for a in out] + advance(c, 0.0, 1.0)
    assert c.role == ACTIVE and c.followers["G"].match == 0
    warnings = [a.text for _, a in history if isinstance(a, Log) and a.level == "warning"]
    assert warnings == ["chat: cannot catch G up from seq 1: older than the retained history, whose base is unknown"]
    assert transmits([a for _, a in history], Append) == transmits([a for _, a in history], Snapshot) == []


# ------------------------------------------------ catch-up beyond the retained history

ALICE_ON_L = join_entry(1, server="L")
BOB_ON_X = join_entry(2, user="bob", session=BOB, server="X", id="j-bob")


def trimmed_store(last: int = 20, retention: int = 10) -> MemoryStore:
    """alice (on L) and bob (on X) joined at 1 and 2, then messages up to `last`; 11..20 retained."""
    store = MemoryStore(retention)
    store.append([ALICE_ON_L, BOB_ON_X] + [entry(i, id=f"m{i}", server="L") for i in range(3, last + 1)])
    assert store.base() == Base(last - retention, 1, {"alice": ALICE_ON_L, "bob": BOB_ON_X})
    return store


def retained(first: int, last: int) -> list[dict[str, Any]]:
    return [entry(i, id=f"m{i}", server="L") for i in range(first, last + 1)]


def test_follower_behind_the_retained_history_gets_a_snapshot_then_the_entries_after_it() -> None:
    c = make("L", trimmed_store())
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    out = c.receive(Status("G", 2, 0, 0, 0), 0.0)
    assert transmits(out) == [
        ("G", Snapshot("L", 2, 10, 1, 0, 2, [ALICE_ON_L, BOB_ON_X])),
        ("G", Append("L", 2, 10, retained(11, 20), 20)),
    ]
    assert c.followers["G"].match == 0  # nothing counts as held before it acknowledges
    assert c.counters.snapshots_sent == 1
    assert c.receive(Ack("G", 2, 20, 20, 0), 0.0) == []
    assert c.followers["G"].match == 20 and not c._lagging(c.followers["G"])


def test_follower_installs_a_snapshot_and_publishes_only_what_follows_it() -> None:
    c = follower()
    out = c.receive(Snapshot("L", 1, 10, 1, 0, 2, [ALICE_ON_L, BOB_ON_X]), 0.0)
    assert out == [
        Log("warning", "chat: installed a snapshot from L at seq 10: "
                       "10 entries trimmed before they reached this daemon are not published here"),
        Transmit("L", Ack("F", 1, 10, 10, 0)),
    ]
    assert (c.commit, c.last, c.last_term) == (10, 10, 1) and c.counters.snapshots_installed == 1
    assert (c.store.first_seq(), c.store.last_seq(), c.store.read(0, 100)) == (11, 10, [])
    assert [u["user"] for u in c.who()] == ["alice", "bob"]
    out = c.receive(Append("L", 1, 10, retained(11, 12), 12), 0.0)
    assert [e["seq"] for e in published(out)] == [11, 12]
    assert transmits(out) == [("L", Ack("F", 1, 12, 12, 0))]
    assert c.since(0, 100) == {"entries": [public(e) for e in retained(11, 12)], "last_seq": 12, "first_seq": 11}


def test_follower_keeps_its_uncommitted_entries_after_the_base() -> None:
    c = deposed("m2", "m3")  # holds 2 and 3 of term 1, matched with M only up to its commit, 1
    out = c.receive(Snapshot("M", 2, 2, 1, 0, 1, [join_entry(1)]), 1.0)
    assert (c.commit, c.tail, c.store.first_seq()) == (2, [entry(3, id="m3")], 3)
    assert transmits(out) == [("M", Ack("F", 2, 2, 2, 0))]


def test_snapshot_at_or_before_what_the_follower_holds_is_only_acknowledged() -> None:
    c = follower()
    c.receive(Append("L", 1, 0, [join_entry(1), entry(2)], 2), 0.0)
    out = c.receive(Snapshot("L", 1, 2, 1, 0, 0, []), 0.0)
    assert out == [Transmit("L", Ack("F", 1, 2, 2, 0))]
    assert c.store.read(0, 10) == [join_entry(1), entry(2)] and c.who() != []


def test_snapshot_ends_the_sessions_it_does_not_place_here_and_opens_those_it_does() -> None:
    c = follower_with_alice()  # alice's session on F
    bob_here = join_entry(5, user="bob", session=BOB, server="F", id="j-bob")
    c.receive(Snapshot("L", 1, 10, 1, 0, 1, [bob_here]), 2.0)  # alice left in the trimmed entries
    assert errors(c.heartbeat("h", "alice", S, 3.0)) == ["not_joined"]
    assert c.heartbeat("h", "bob", BOB, 3.0) == [Reply("h", {"last_seq": 10})]
    assert c.next_deadline() == 3.0 + LIMITS.client_timeout


def test_snapshot_resolves_a_proposal_known_committed_within_it() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 0.0)
    c.receive(Result("L", 1, [{"user": "alice", "id": "m1", "seq": 5}]), 0.0)
    out = c.receive(Snapshot("L", 1, 10, 1, 0, 1, [join_entry(1)]), 0.0)
    assert replies(out) == [Reply("r", {"seq": 5})]


def test_only_a_follower_that_acknowledges_entries_counts_towards_their_commit() -> None:
    c = make("L", trimmed_store())
    c.start(0.0)
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    c.receive(Status("G", 2, 0, 0, 0), 0.0)
    out = c.send("r", "alice", S, "new", "hi", 0.0)
    assert transmits(out) == [("G", Append("L", 2, 20, [entry(21, term=2, id="new", server="L")], 20))]
    assert replies(c.receive(Ack("G", 2, 10, 10, 0), 0.0)) == []  # G installed the snapshot, nothing more
    assert c.commit == 20 and c.followers["G"].match == 10
    assert replies(c.receive(Ack("G", 2, 21, 20, 0), 0.0)) == [Reply("r", {"seq": 21})]


def test_lost_snapshot_is_sent_again_after_resend_interval() -> None:
    c = make("L", trimmed_store())
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    c.receive(Status("G", 2, 0, 0, 0), 0.0)
    history = advance(c, 0.0, 0.25)
    assert [(t, m) for t, a in history if isinstance(a, Transmit) for m in [a.message]] == [
        (0.25, Snapshot("L", 2, 10, 1, 0, 2, [ALICE_ON_L, BOB_ON_X])),
        (0.25, Append("L", 2, 10, retained(11, 20), 20)),
    ]


def test_large_presence_table_goes_in_parts_and_a_gap_between_them_is_ignored(monkeypatch) -> None:
    monkeypatch.setattr(chat_module, "MAX_BATCH", 2)
    joins = [join_entry(i, user=f"u{i}", id=f"j{i}", server="X") for i in range(1, 6)]
    store = MemoryStore(1)
    store.append(joins + [entry(6)])
    c = make("L", store)
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    parts = [m for _, m in transmits(c.receive(Status("G", 2, 0, 0, 0), 0.0), Snapshot)]
    assert [(p.offset, p.total, [u["user"] for u in p.users]) for p in parts] == [
        (0, 5, ["u1", "u2"]), (2, 5, ["u3", "u4"]), (4, 5, ["u5"])]
    g = follower("G", "L", 2)
    assert g.receive(parts[0], 0.0) == [] and g.receive(parts[2], 0.0) == []  # the middle one was lost
    assert g.commit == 0 and g.counters.link_messages_ignored == 1
    out = [a for part in parts for a in g.receive(part, 0.0)]  # sent again, whole
    assert transmits(out) == [("L", Ack("G", 2, 5, 5, 0))]
    assert [u["user"] for u in g.who()] == ["u1", "u2", "u3", "u4", "u5"]


def test_snapshot_parts_of_a_large_presence_table_each_fit_in_one_link_message() -> None:
    count = 2 * linkwire.MAX_BATCH + 1
    joins = [join_entry(i, user=f"u{i:031d}", id=f"{i:064d}", server="X" * 64, session=f"{i:064d}", text="rejoined")
             for i in range(1, count + 1)]
    store = MemoryStore(1)
    store.append(joins + [entry(count + 1)])
    c = make("L", store)
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    parts = [m for _, m in transmits(c.receive(Status("G", 2, 0, 0, 0), 0.0), Snapshot)]
    assert [len(p.users) for p in parts] == [linkwire.MAX_BATCH, linkwire.MAX_BATCH, 1]
    for part in parts:
        data = linkwire.encode(part)
        assert len(data) <= MAX_LINK_MESSAGE and linkwire.decode(data) == part


def test_fetch_source_sends_a_snapshot_when_the_fetch_reaches_before_its_history() -> None:
    c = make("F", trimmed_store())
    c.set_view("M", 2, frozenset({"M"}), 0.0)
    out = c.receive(Fetch("M", 2, 3), 0.0)
    assert transmits(out) == [("M", Snapshot("F", 2, 10, 1, 0, 2, [ALICE_ON_L, BOB_ON_X])),
                              ("M", Entries("F", 2, retained(11, 20)))]
    assert transmits(c.receive(Fetch("M", 2, 10), 0.0)) == [("M", Entries("F", 2, retained(11, 20)))]


def test_new_leader_behind_the_sources_history_installs_its_snapshot_then_leads() -> None:
    c = make("L")
    c.set_view("L", 2, frozenset({"F"}), 0.0)
    assert transmits(c.receive(Status("F", 2, 20, 20, 1), 0.0)) == [("F", Fetch("L", 2, 0))]
    assert c.receive(Snapshot("X", 2, 10, 1, 0, 0, []), 0.0) == []  # not its fetch source
    c.receive(Snapshot("F", 2, 10, 1, 0, 2, [ALICE_ON_L, BOB_ON_X]), 0.0)
    assert c.role == FETCHING and c.commit == 10
    out = c.receive(Entries("F", 2, retained(11, 20)), 0.0)
    assert c.role == ACTIVE and c.commit == 20
    assert [e["seq"] for e in published(out)] == list(range(11, 21))
    assert c.store.first_seq() == 11 and [u["user"] for u in c.who()] == ["alice", "bob"]


def test_restarted_core_goes_on_from_an_installed_snapshot() -> None:
    store = MemoryStore(1000)
    store.install(Base(10, 3, {"alice": ALICE_ON_L}))
    c = make("L", store)
    assert (c.commit, c.last, c.last_term) == (10, 10, 3)  # what a STATUS says in a view change
    assert c.who() == [{"user": "alice", "server": "L", "since": EPOCH}]


def test_everything_the_catch_up_transmits_survives_the_codec() -> None:
    c = make("L", trimmed_store())
    c.set_view("L", 2, frozenset({"G"}), 0.0)
    messages = all_link_messages(c.receive(Status("G", 2, 0, 0, 0), 0.0))
    assert {type(m) for m in messages} == {Snapshot, Append}
    for message in messages:
        assert linkwire.decode(linkwire.encode(message)) == message


@pytest.mark.parametrize("cap", [1, 2])
def test_leader_with_max_tail_uncommitted_entries_refuses_with_unavailable(monkeypatch, cap: int) -> None:
    c = leader_with_alice()
    monkeypatch.setattr(chat_module, "MAX_TAIL", cap)
    for i in range(cap):
        assert c.send(f"r{i}", "alice", S, f"m{i}", "hi", 0.0) != []
    assert len(c.tail) == cap
    out = c.send("over", "alice", S, "over", "hi", 0.0)
    assert errors(out) == ["unavailable"] and transmits(out) == []
    assert len(c.tail) == cap and c.counters.proposals_refused == 1
    c.receive(Ack("F", 1, 1 + cap, 1, 0), 0.0)
    assert c.tail == []
    out = c.send("again", "alice", S, "over", "hi", 0.5)
    assert errors(out) == [] and len(c.tail) == 1


# ------------------------------------------------------------------ follower


def test_follower_commits_and_acks_appends_in_order() -> None:
    c = follower()
    out = c.receive(Append("L", 1, 0, [join_entry(1)], 0), 0.0)
    assert transmits(out) == [("L", Ack("F", 1, 1, 1, 0))]
    out = c.receive(Append("L", 1, 1, [entry(2), entry(3, id="m2")], 0), 0.0)
    assert transmits(out) == [("L", Ack("F", 1, 3, 3, 0))]
    assert (c.commit, c.last, c.last_term) == (3, 3, 1)


def test_follower_asks_for_what_it_lacks_when_prev_is_beyond_its_log() -> None:
    c = follower()
    c.receive(Append("L", 1, 0, [join_entry(1)], 0), 0.0)
    out = c.receive(Append("L", 1, 3, [entry(4)], 0), 0.0)
    assert out == [Transmit("L", Ack("F", 1, 1, 1, 2))]
    assert c.last == 1


def test_follower_commits_what_it_holds_of_the_leaders_log_at_once_and_publishes_in_order() -> None:
    """The leader and this follower hold the entries: committed, whatever the commit field says."""
    c = follower()
    entries = [join_entry(1), entry(2), entry(3, id="m2", text="yo")]
    out = c.receive(Append("L", 1, 0, entries, 0), 0.0)
    assert out == [
        Publish("chat.presence", public(entries[0])),
        Publish("chat.message", public(entries[1])),
        Publish("chat.message", public(entries[2])),
        Transmit("L", Ack("F", 1, 3, 3, 0)),
    ]
    assert c.store.read(0, 10) == entries and c.tail == []
    assert c.receive(Append("L", 1, 3, [], 3), 0.0) == []  # the leader's commit point brings no news


def test_follower_commits_no_further_than_it_matches() -> None:
    c = follower()
    c.receive(Append("L", 1, 0, [join_entry(1)], 0), 0.0)
    c.receive(Append("L", 1, 1, [], 5), 0.0)
    assert c.commit == 1


def test_repeated_append_is_idempotent() -> None:
    c = follower()
    append = Append("L", 1, 0, [join_entry(1), entry(2)], 0)
    c.receive(append, 0.0)
    assert c.receive(append, 0.0) == [Transmit("L", Ack("F", 1, 2, 2, 0))]
    assert c.store.read(0, 10) == [join_entry(1), entry(2)] and c.tail == []


def test_empty_append_without_news_gets_no_ack() -> None:
    c = follower()
    assert c.receive(Append("L", 1, 0, [], 0), 0.0) == []


def test_conflicting_uncommitted_entry_of_an_older_term_is_replaced() -> None:
    c = deposed("old", "old2")
    new = entry(2, term=2, id="new")
    out = c.receive(Append("M", 2, 1, [new], 1), 1.0)
    assert published(out) == [public(new)]
    assert transmits(out) == [("M", Ack("F", 2, 2, 2, 0))]
    assert c.tail == []
    assert [e["id"] for e in c.store.read(0, 10)] == ["join-7-1", "new"]


def test_same_entry_kept_from_an_older_term_is_not_replaced() -> None:
    c = deposed("kept")
    old = c.tail[0]
    out = c.receive(Append("M", 2, 1, [entry(2, id="kept"), entry(3, term=2, id="new")], 1), 1.0)
    assert transmits(out) == [("M", Ack("F", 2, 3, 3, 0))]
    assert c.store.read(0, 10) == [join_entry(1), old, entry(3, term=2, id="new")]


def test_new_leader_must_first_confirm_what_the_follower_holds() -> None:
    c = deposed("m2")
    out = c.receive(Append("M", 2, 2, [entry(3, term=2)], 0), 1.0)
    assert out == [Transmit("M", Ack("F", 2, 1, 1, 2))]  # only the committed prefix is known to match


def test_messages_from_a_non_leader_are_ignored_and_counted() -> None:
    c = follower()
    for message in (Append("X", 1, 0, [join_entry(1)], 0), Gather("X", 1), Fetch("X", 1, 0)):
        assert c.receive(message, 0.0) == []
    assert c.tail == [] and c.counters.link_messages_ignored == 3


def test_messages_of_an_older_term_are_ignored_and_counted() -> None:
    c = follower(term=2)
    for message in (Append("L", 1, 0, [join_entry(1)], 0), Gather("L", 1), Fetch("L", 1, 0),
                    Ack("L", 1, 0, 0, 0), Status("L", 1, 0, 0, 0), Entries("L", 1, [])):
        assert c.receive(message, 0.0) == []
    assert c.tail == [] and c.counters.link_messages_ignored == 6


def test_message_of_a_future_term_is_held_and_replayed_when_the_view_reaches_it() -> None:
    c = follower()
    assert c.receive(Append("M", 2, 0, [join_entry(1, term=2)], 0), 0.0) == []
    assert c.last == 0 and c.counters.link_messages_ignored == 0
    out = c.set_view("M", 2, frozenset({"M"}), 0.5)
    assert transmits(out) == [("M", Ack("F", 2, 1, 1, 0))]
    assert c.store.read(0, 10) == [join_entry(1, term=2)]


def test_held_message_of_a_term_still_ahead_stays_held() -> None:
    c = follower()
    c.receive(Gather("N", 3), 0.0)
    assert c.set_view("M", 2, frozenset({"M", "N"}), 0.5) == []
    assert c.set_view("N", 3, frozenset({"M", "N"}), 1.0) == [Transmit("N", Status("F", 3, 0, 0, 0))]


def test_early_messages_are_bounded() -> None:
    c = follower()
    for _ in range(chat_module.MAX_EARLY + 10):
        c.receive(Gather("M", 2), 0.0)
    out = c.set_view("M", 2, frozenset({"M"}), 0.5)
    assert len(transmits(out, Status)) == chat_module.MAX_EARLY


def test_gather_is_answered_with_status() -> None:
    c = deposed("m2")
    out = c.receive(Gather("M", 2), 1.0)
    assert out == [Transmit("M", Status("F", 2, 1, 2, 1))]


def test_fetch_is_answered_with_entries_from_store_then_tail() -> None:
    c = follower()
    c.receive(Append("L", 1, 0, [join_entry(1), entry(2), entry(3, id="m3")], 1), 0.0)
    held = [join_entry(1), entry(2), entry(3, id="m3")]
    assert c.receive(Fetch("L", 1, 0), 0.0) == [Transmit("L", Entries("F", 1, held))]
    assert c.receive(Fetch("L", 1, 2), 0.0) == [Transmit("L", Entries("F", 1, [entry(3, id="m3")]))]
    assert c.receive(Fetch("L", 1, 3), 0.0) == [Transmit("L", Entries("F", 1, []))]


def test_result_with_a_code_refuses_the_waiting_request() -> None:
    c = follower_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    out = c.receive(Result("L", 1, [{"user": "alice", "id": "m1", "code": "not_joined", "message": "no"}]), 1.0)
    assert out == [Reply("r2", error=("not_joined", "no"))]
    assert c.outbox == {}


def test_result_with_a_committed_seq_answers_at_once_and_a_later_one_at_commit() -> None:
    c = follower_with_alice()
    c.send("r2", "alice", S, "m1", "hi", 1.0)
    c.send("r3", "alice", S, "m2", "hi", 1.0)
    out = c.receive(Result("L", 1, [{"user": "alice", "id": "m1", "seq": 1},
                                    {"user": "alice", "id": "m2", "seq": 2}]), 1.0)
    assert out == [Reply("r2", {"seq": 1})]
    out = c.receive(Append("L", 1, 1, [entry(2, id="x", server="F")], 2), 1.0)
    assert replies(out) == [Reply("r3", {"seq": 2})]
    assert c.outbox == {}


# ------------------------------------------------------------ client requests


@pytest.mark.parametrize("user", ["", "u" * 33, "_alice", ".alice", "-alice", "al ice", " alice", "alice\n", "a/b"])
def test_join_with_a_bad_user_name_is_refused(user: str) -> None:
    c = lone_leader()
    out = c.join("r", user, S, 0.0)
    assert errors(out) == ["bad_user"] and len(out) == 1
    assert c.last == 0


@pytest.mark.parametrize("user", ["a", "u" * 32, "9lives", "a.b-c_d"])
def test_join_with_a_good_user_name_is_accepted(user: str) -> None:
    c = lone_leader()
    assert joined_alone(c, user) == 1


@pytest.mark.parametrize("session", ["", "s" * 15, "s" * 65, "session with spaces", "session.with.dots!"])
def test_join_with_a_bad_session_is_bad_args(session: str) -> None:
    c = lone_leader()
    assert errors(c.join("r", "alice", session, 0.0)) == ["bad_args"]
    assert c.last == 0


def test_join_of_a_name_held_by_another_session_is_name_taken_without_a_proposal() -> None:
    c = leader_with_alice()
    out = c.join("r", "alice", S2, 1.0)
    assert errors(out) == ["name_taken"] and transmits(out) == []
    assert c.last == 1 and c.outbox == {}


def test_a_follower_forwards_a_join_its_lagging_presence_calls_taken_and_the_leader_decides() -> None:
    c = follower_with_alice()  # F still shows alice (session S): it has not heard of her leave yet
    out = c.join("r", "alice", S2, 1.0)
    assert errors(out) == []
    [(to, forward)] = transmits(out, Forward)
    assert to == "L" and forward.proposals[0]["session"] == S2
    leave = entry(2, kind="leave", text="", id="leave-1")
    rejoin = join_entry(3, at=1.0, session=S2, id=forward.proposals[0]["id"])
    out = c.receive(Append("L", 1, 1, [leave, rejoin], 3), 1.0)
    assert replies(out) == [Reply("r", joined(3, "F"))]


def test_a_join_over_max_clients_is_refused_and_changes_nothing_but_a_rejoin_is_not() -> None:
    c = lone_leader()
    c.limits = replace(c.limits, max_clients=2)
    for user in ("alice", "bob"):
        assert errors(c.join("r", user, S, 0.0)) == []
    last = c.last
    out = c.join("r", "carol", S, 0.0)
    assert errors(out) == ["too_many_clients"] and "max_clients" in replies(out)[0].error[1]
    assert c.last == last and set(c.sessions) == {"alice", "bob"} and c.outbox == {}
    assert errors(c.join("r", "alice", S, 0.0)) == []  # already here: a rejoin takes no new place
    c.leave("r", "bob", S, 0.0)
    assert errors(c.join("r", "carol", S, 0.0)) == []


def test_joins_waiting_for_their_commit_count_against_max_clients() -> None:
    c = follower()
    c.limits = replace(c.limits, max_clients=1)
    assert errors(c.join("r1", "alice", S, 0.0)) == []  # forwarded, not committed yet
    assert errors(c.join("r2", "bob", S, 0.0)) == ["too_many_clients"]


def test_join_again_with_the_same_session_is_recorded_as_rejoined() -> None:
    c = lone_leader()
    joined_alone(c)
    out = c.join("r", "alice", S, 1.0)
    assert [(e["kind"], e["text"]) for e in published(out)] == [("join", "rejoined")]
    assert replies(out) == [Reply("r", joined(2, "L"))]


def test_second_join_while_the_first_is_pending_waits_for_the_same_entry() -> None:
    c = follower()
    c.join("r1", "alice", S, 0.0)
    assert c.join("r2", "alice", S, 0.0) == []
    out = c.receive(Append("L", 1, 0, [join_entry(1)], 1), 0.0)
    assert replies(out) == [Reply("r1", joined(1, "F")),
                            Reply("r2", joined(1, "F"))]


def test_send_without_a_session_here_is_not_joined() -> None:
    c = lone_leader()
    assert errors(c.send("r", "alice", S, "m1", "hi", 0.0)) == ["not_joined"]
    joined_alone(c)
    assert errors(c.send("r", "alice", S2, "m1", "hi", 0.0)) == ["not_joined"]
    assert errors(c.send("r", "bob", S, "m1", "hi", 0.0)) == ["not_joined"]
    assert c.last == 1


@pytest.mark.parametrize("id", ["", "i" * 65, "a b", "a.b", "\u00e9", "id\n"])
def test_send_with_a_bad_id_is_bad_args(id: str) -> None:
    c = lone_leader()
    joined_alone(c)
    assert errors(c.send("r", "alice", S, id, "hi", 0.0)) == ["bad_args"]
    assert c.last == 1


@pytest.mark.parametrize("text", ["", " ", " \n\t", "\ud800", "a\udc00"])
def test_send_with_empty_or_unencodable_text_is_bad_args(text: str) -> None:
    c = lone_leader()
    joined_alone(c)
    assert errors(c.send("r", "alice", S, "m1", text, 0.0)) == ["bad_args"]
    assert c.last == 1


def test_message_size_limit_counts_utf8_bytes_and_is_exact() -> None:
    assert LIMITS.max_message == 8
    c = lone_leader()
    joined_alone(c)
    assert errors(c.send("r1", "alice", S, "m1", "x" * 8, 0.0)) == []
    assert errors(c.send("r2", "alice", S, "m2", "é" * 4, 0.0)) == []  # 4 characters, 8 bytes
    assert errors(c.send("r3", "alice", S, "m3", "x" * 9, 0.0)) == ["too_large"]
    assert errors(c.send("r4", "alice", S, "m4", "é" * 5, 0.0)) == ["too_large"]  # 5 characters, 10 bytes
    assert errors(c.send("r5", "alice", S, "m5", "\U0001f600" * 2 + "x", 0.0)) == ["too_large"]
    assert [e["text"] for e in c.store.read(1, 10)] == ["x" * 8, "é" * 4]


def test_too_large_is_checked_after_the_session() -> None:
    c = lone_leader()
    assert errors(c.send("r", "alice", S, "m1", "x" * 9, 0.0)) == ["not_joined"]


def test_rate_limited_after_the_burst_and_ok_again_after_refill() -> None:
    c = lone_leader()
    joined_alone(c)
    for i in range(LIMITS.burst):
        assert errors(c.send(f"r{i}", "alice", S, f"m{i}", "hi", 1.0)) == []
    assert errors(c.send("over", "alice", S, "over", "hi", 1.0)) == ["rate_limited"]
    refill = 1 / LIMITS.rate  # one token
    assert errors(c.send("early", "alice", S, "early", "hi", 1.0 + refill - EPS)) == ["rate_limited"]
    assert errors(c.send("later", "alice", S, "later", "hi", 1.0 + refill)) == []
    assert errors(c.send("then", "alice", S, "then", "hi", 1.0 + refill)) == ["rate_limited"]
    assert c.last == 1 + LIMITS.burst + 1


def test_tokens_refill_up_to_the_burst_only() -> None:
    c = lone_leader()
    joined_alone(c)
    sent = [errors(c.send(f"r{i}", "alice", S, f"m{i}", "hi", 100.0)) for i in range(LIMITS.burst + 1)]
    assert sent == [[]] * LIMITS.burst + [["rate_limited"]]


def test_send_with_an_id_already_committed_replies_its_seq_and_sequences_nothing() -> None:
    c = lone_leader()
    joined_alone(c)
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    out = c.send("r2", "alice", S, "m1", "hi again", 2.0)
    assert out == [Reply("r2", {"seq": 2})]
    assert c.last == 2 and c.counters.entries_sequenced == 2


def test_duplicate_send_does_not_spend_a_token() -> None:
    c = lone_leader()
    joined_alone(c)
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    for i in range(10):
        assert c.send(f"d{i}", "alice", S, "m1", "hi", 1.0) == [Reply(f"d{i}", {"seq": 2})]
    assert errors(c.send("r2", "alice", S, "m2", "hi", 1.0)) == []


def test_send_retried_while_pending_waits_for_the_same_entry() -> None:
    c = follower_with_alice()
    c.send("r1", "alice", S, "m1", "hi", 1.0)
    assert c.send("r2", "alice", S, "m1", "hi", 1.0) == []
    out = c.receive(Append("L", 1, 1, [entry(2, at=1.0)], 2), 1.0)
    assert replies(out) == [Reply("r1", {"seq": 2}), Reply("r2", {"seq": 2})]


def test_heartbeat_answers_the_last_commit_and_keeps_the_session() -> None:
    c = lone_leader()
    joined_alone(c)
    assert c.heartbeat("h", "alice", S, 7.0) == [Reply("h", {"last_seq": 1})]
    assert c.next_deadline() == 7.0 + LIMITS.client_timeout
    assert c.tick(8.0) == []
    assert errors(c.heartbeat("h", "alice", S2, 7.0)) == ["not_joined"]
    assert errors(c.heartbeat("h", "bob", S, 7.0)) == ["not_joined"]


def test_leave_records_a_leave_and_ends_the_session() -> None:
    c = lone_leader()
    joined_alone(c)
    out = c.leave("r", "alice", S, 1.0)
    assert replies(out) == [Reply("r", {"seq": 2})]
    assert [(e["kind"], e["user"], e["server"]) for e in published(out, "chat.presence")] == [("leave", "alice", "L")]
    assert c.who() == []
    assert errors(c.leave("r", "alice", S, 1.0)) == ["not_joined"]
    assert errors(c.send("r", "alice", S, "m1", "hi", 1.0)) == ["not_joined"]
    assert c.next_deadline() is None


def test_join_on_another_server_ends_the_session_here() -> None:
    c = follower_with_alice()
    c.receive(Append("L", 1, 1, [join_entry(2, n=1, server="G", id="join-9-1", text="rejoined")], 2), 1.0)
    assert c.who() == [{"user": "alice", "server": "G", "since": EPOCH}]
    assert errors(c.heartbeat("h", "alice", S, 1.0)) == ["not_joined"]


# --------------------------------------------------------------- no leader


def test_request_without_a_leader_times_out_unavailable() -> None:
    c = make("F")
    assert c.join("r", "alice", S, 0.0) == []
    assert c.next_deadline() == LIMITS.request_timeout
    assert c.tick(LIMITS.request_timeout - EPS) == []
    out = c.tick(LIMITS.request_timeout)
    assert errors(out) == ["unavailable"] and len(out) == 1
    assert c.next_deadline() is None


def test_request_times_out_when_the_leader_does_not_commit_it_in_time() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    history = advance(c, 1.0, 5.0)
    assert [(t, a.error[0]) for t, a in history if isinstance(a, Reply)] == [(5.0, "unavailable")]
    assert ("alice", "m1") in c.outbox  # still forwarded: a retry with the same id waits for it


def test_only_requests_still_waiting_set_the_next_deadline_and_each_times_out_once() -> None:
    c = make("F")  # no leader yet: nothing else waits on time
    c.join("r1", "alice", S, 0.0)
    c.join("r2", "bob", BOB, 1.0)
    assert c.next_deadline() == LIMITS.request_timeout
    refused = {"user": "alice", "id": "join-7-1", "code": "name_taken", "message": "taken"}
    assert replies(c.receive(Result("L", 0, [refused]), 2.0)) == [Reply("r1", error=("name_taken", "taken"))]
    assert c.next_deadline() == 1.0 + LIMITS.request_timeout  # r1 is answered: only r2 waits
    history = advance(c, 2.0, 10.0)
    assert [(t, a.request) for t, a in history if isinstance(a, Reply)] == [(1.0 + LIMITS.request_timeout, "r2")]
    assert c.next_deadline() is None and c.waiting == {}


def test_proposal_made_without_a_leader_goes_to_the_first_leader() -> None:
    c = make("F")
    c.join("r", "alice", S, 0.0)
    assert c.set_view("L", 1, frozenset({"L"}), 1.0) == []
    assert c.next_deadline() == 1.0
    assert c.tick(1.0) == [Transmit("L", Forward("F", 1, [proposal("join", text="", id="join-7-1")]))]


def test_forward_is_resent_every_resend_interval_until_committed() -> None:
    c = follower_with_alice()
    p = proposal()
    out = c.send("r", "alice", S, "m1", "hi", 1.0)
    assert out == [Transmit("L", Forward("F", 1, [p]))]
    history = advance(c, 1.0, 2.0)
    forwards = [t for t, a in history if a == Transmit("L", Forward("F", 1, [p]))]
    assert forwards[-4:] == [1.25, 1.5, 1.75, 2.0]
    assert set(forwards) <= {1.0, 1.25, 1.5, 1.75, 2.0}
    c.receive(Append("L", 1, 1, [entry(2, at=1.0)], 2), 2.0)
    assert c.outbox == {}
    assert transmits([a for _, a in advance(c, 2.0, 4.0)]) == []


def test_first_resend_of_a_forward_waits_one_resend_interval() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    assert c.next_deadline() == 1.25
    history = advance(c, 1.0, 1.5)
    assert [t for t, a in history if isinstance(a, Transmit)] == [1.25, 1.5]
    c = follower_with_alice()
    out = c.tick(LIMITS.client_timeout)  # alice times out: her timeout is forwarded once
    assert len(transmits(out, Forward)) == 1


def test_outbox_is_forwarded_to_a_new_leader_at_once() -> None:
    c = follower_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    advance(c, 1.0, 1.25)
    assert c.set_view("M", 2, frozenset({"M"}), 1.375) == []
    assert c.next_deadline() == 1.375
    assert c.tick(1.375) == [Transmit("M", Forward("F", 2, [proposal()]))]
    assert c.next_deadline() == 1.375 + LIMITS.resend_interval


def test_forwards_are_batched_by_max_batch() -> None:
    c = make("F", limits=replace(LIMITS, rate=1e6, burst=10**6))
    c.set_view("L", 1, frozenset({"L"}), 0.0)
    c.join("rj", "alice", S, 0.0)
    c.receive(Append("L", 1, 0, [join_entry(1)], 1), 0.0)
    for i in range(linkwire.MAX_BATCH + 1):
        c.send(f"r{i}", "alice", S, f"m{i}", "hi", 0.0)
    history = advance(c, 0.0, 0.25)
    resent = [a for t, a in history if t == 0.25]
    assert [len(m.proposals) for _, m in transmits(resent, Forward)] == [linkwire.MAX_BATCH, 1]


# ------------------------------------------------------------ client timeout


def test_silent_client_is_timed_out_with_a_timeout_entry() -> None:
    c = lone_leader()
    joined_alone(c, at=0.5)
    assert c.next_deadline() == 0.5 + LIMITS.client_timeout
    assert c.tick(8.5 - EPS) == []
    out = c.tick(8.5)
    assert out[0] == Log("info", "chat: alice timed out")
    (event,) = published(out, "chat.presence")
    assert (event["kind"], event["user"], event["server"], event["seq"]) == ("timeout", "alice", "L", 2)
    assert event["id"].startswith("timeout-7-")
    assert c.who() == [] and c.sessions == {}
    assert errors(c.heartbeat("h", "alice", S, 8.5)) == ["not_joined"]


def test_follower_forwards_the_timeout_of_its_client() -> None:
    c = follower_with_alice()
    out = c.tick(LIMITS.client_timeout)
    forward = Transmit("L", Forward("F", 1, [proposal("timeout", text="", id="timeout-7-2")]))
    assert out[:2] == [Log("info", "chat: alice timed out"), forward]
    assert set(out[2:]) <= {forward}  # see test_first_resend_of_a_forward_waits_one_resend_interval
    assert c.sessions == {} and ("alice", "timeout-7-2") in c.outbox


def test_start_gives_users_present_here_before_a_restart_a_grace_period() -> None:
    store = MemoryStore(1000)
    store.append([join_entry(1), join_entry(2, user="bob", session=BOB, server="X", id="j-bob")])
    c = make("F", store)
    c.start(10.0)
    c.set_view("L", 1, frozenset({"L"}), 10.0)
    assert c.heartbeat("h", "alice", S, 12.0) == [Reply("h", {"last_seq": 2})]
    assert errors(c.heartbeat("h", "bob", BOB, 12.0)) == ["not_joined"]
    assert c.next_deadline() == 12.0 + LIMITS.client_timeout


def test_start_times_out_users_that_do_not_come_back() -> None:
    store = MemoryStore(1000)
    store.append([join_entry(1, server="L")])
    c = make("L", store)
    c.start(10.0)
    c.set_view("L", 1, frozenset(), 10.0)
    assert c.next_deadline() == 18.0
    out = c.tick(18.0)
    assert [(e["kind"], e["user"]) for e in published(out)] == [("timeout", "alice")]


def test_restarted_core_recovers_commit_and_presence_from_the_store() -> None:
    store = MemoryStore(1000)
    store.append([join_entry(1), entry(2, term=3)])
    c = make("F", store)
    assert (c.commit, c.last, c.last_term) == (2, 2, 3)
    assert c.who() == [{"user": "alice", "server": "F", "since": EPOCH}]
    assert c.sessions == {}  # until start()


# ----------------------------------------------------------------- orphans


def leader_with_alice_on_a() -> Chat:
    c = leader_with_peer("A")
    c.receive(Forward("A", 1, [proposal("join", text="", id="j1", server="A")]), 0.0)
    c.receive(Ack("A", 1, 1, 0, 0), 0.0)
    c.receive(Ack("A", 1, 1, 1, 0), 0.0)
    assert c.who() == [{"user": "alice", "server": "A", "since": EPOCH}]
    return c


def test_users_of_a_daemon_that_left_time_out_after_client_timeout() -> None:
    c = leader_with_alice_on_a()
    c.set_view("L", 1, frozenset(), 5.0)
    c.tick(5.0)
    assert c.next_deadline() == 5.0 + LIMITS.client_timeout
    assert c.tick(13.0 - EPS) == []
    out = c.tick(13.0)
    assert [(e["kind"], e["user"], e["server"]) for e in published(out)] == [("timeout", "alice", "A")]
    assert c.who() == [] and c.next_deadline() is None


def test_orphan_that_rejoins_elsewhere_is_not_timed_out() -> None:
    c = leader_with_alice_on_a()
    c.set_view("L", 1, frozenset(), 5.0)
    c.tick(5.0)
    joined_alone(c, at=6.0)  # the client failed over to L with its session
    out = c.tick(13.0)
    assert published(out) == [] and c.who()[0]["server"] == "L"


def test_peer_leaving_schedules_the_timeout_of_its_users() -> None:
    c = leader_with_alice_on_a()
    c.set_view("L", 1, frozenset(), 5.0)
    assert c.next_deadline() is not None
    history = advance(c, 5.0, 13.0)
    assert [(e["kind"], e["user"]) for _, a in history if isinstance(a, Publish) for e in [a.event]] == [
        ("timeout", "alice")]


# ----------------------------------------------------------------- queries


def test_history_since_and_who() -> None:
    c = lone_leader()
    joined_alone(c)
    joined_alone(c, "bob", BOB, at=0.5)
    for i in range(3):
        c.send(f"r{i}", "alice", S, f"m{i}", f"t{i}", 1.0)
    assert c.history(2) == {"entries": [public(e) for e in c.store.read(3, 2)], "last_seq": 5}
    assert [e["text"] for e in c.history(2)["entries"]] == ["t1", "t2"]
    assert [e["seq"] for e in c.history(100)["entries"]] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in c.since(2, 2)["entries"]] == [3, 4]
    assert c.since(5, 10) == {"entries": [], "last_seq": 5, "first_seq": 1}
    assert all(set(e) == set(PUBLIC_KEYS) for e in c.since(0, 10)["entries"])
    assert c.who() == [{"user": "alice", "server": "L", "since": EPOCH},
                       {"user": "bob", "server": "L", "since": EPOCH + 0.5}]


def test_history_and_since_replies_stop_at_max_reply_bytes_and_since_pages_on() -> None:
    c = lone_leader()
    c.limits = replace(c.limits, max_message=65536, rate=1e6, burst=10**6)
    joined_alone(c)
    big = "x" * 60_000
    for i in range(10):
        c.send(f"r{i}", "alice", S, f"m{i}", big, 1.0)
    per_reply = chat_module.MAX_REPLY_BYTES // (60_000 + chat_module.ENTRY_OVERHEAD)
    first = c.since(1, 1000)["entries"]
    assert len(first) == per_reply and [e["seq"] for e in first] == list(range(2, 2 + per_reply))
    rest = c.since(first[-1]["seq"], 1000)["entries"]
    assert rest[0]["seq"] == first[-1]["seq"] + 1
    newest = c.history(1000)["entries"]
    assert len(newest) == per_reply and newest[-1]["seq"] == 11  # the newest ones, oldest first
    c.send("r", "alice", S, "huge", "y" * 65536, 2.0)
    assert [e["id"] for e in c.since(11, 10)["entries"]] == ["huge"]  # one entry always fits


def test_queries_show_only_committed_entries() -> None:
    c = leader_with_alice()
    c.send("r", "alice", S, "m1", "hi", 1.0)
    assert c.history(10)["last_seq"] == 1 and len(c.history(10)["entries"]) == 1
    assert c.since(1, 10)["entries"] == []


# ------------------------------------------------------------- next_deadline


def test_next_deadline_is_none_when_idle() -> None:
    assert make("F").next_deadline() is None
    assert follower().next_deadline() is None
    c = lone_leader()
    assert c.next_deadline() is None
    joined_alone(c)
    c.leave("r", "alice", S, 1.0)
    assert c.next_deadline() is None


def test_next_deadline_is_the_earliest_pending_deadline() -> None:
    c = follower_with_alice()  # session: 0 + 8
    c.heartbeat("h", "alice", S, 3.0)  # session: 3 + 8 = 11
    assert c.next_deadline() == 11.0
    c.join("rb", "bob", BOB, 6.5)  # waiter 10.5, and a forward resend
    advance(c, 6.5, 6.5)
    assert c.next_deadline() == 6.75  # the resend of the forward
    c.receive(Result("L", 1, [{"user": "bob", "id": "join-7-2", "seq": 5}]), 6.5)
    assert c.next_deadline() == 10.5  # the waiter only: the outbox is empty
    c.receive(Append("L", 1, 1, [join_entry(2, user="bob", session=BOB, id="x")], 0), 6.5)
    assert c.next_deadline() == 10.5


def test_next_deadline_while_gathering_is_the_gather_resend() -> None:
    c = make("L")
    c.set_view("L", 1, frozenset({"F"}), 2.0)
    assert c.next_deadline() == 2.25


# ------------------------------------------------------------ the link codec


def all_link_messages(actions: list[Action]) -> list[Any]:
    return [a.message for a in actions if isinstance(a, Transmit)]


def test_everything_the_core_transmits_survives_the_codec() -> None:
    c = leader_with_peer()
    out = c.join("r", "alice", S, 0.0) + c.receive(Ack("F", 1, 1, 0, 0), 0.0)
    out += c.send("r2", "alice", S, "m1", "é\x00\"", 0.0) + c.receive(Forward("F", 1, [proposal()]), 0.0)
    for message in all_link_messages(out):
        assert linkwire.decode(linkwire.encode(message)) == message


def test_catch_up_append_fits_in_one_link_message() -> None:
    store = MemoryStore(10_000)
    text = "é" * 2048  # 4096 bytes of UTF-8: exactly the default max_message
    store.append([entry(i, id=f"m{i}", text=text) for i in range(1, linkwire.MAX_BATCH + 1)])
    c = make("L", store, ChatLimits())
    c.set_view("L", 2, frozenset({"F"}), 0.0)
    out = c.receive(Status("F", 2, 0, 0, 0), 0.0)
    appends = [m for _, m in transmits(out, Append)]
    assert sum(len(m.entries) for m in appends) == linkwire.MAX_BATCH
    for message in appends:
        assert len(linkwire.encode(message)) <= MAX_LINK_MESSAGE


# ------------------------------------------------- view changes: held proposals


def test_refusal_of_a_proposal_queued_during_the_view_change_goes_to_its_proposer() -> None:
    c = make("L")
    c.set_view("L", 1, frozenset({"F"}), 0.0)
    assert c.receive(Forward("F", 1, [proposal()]), 0.0) == []  # alice never joined
    out = c.receive(Status("F", 1, 0, 0, 0), 0.0)
    results = transmits(out, Result)
    assert [(to, [r.get("code") for r in m.results]) for to, m in results] == [("F", ["not_joined"])]


def test_leader_stepping_down_does_not_adopt_other_daemons_proposals() -> None:
    c = make("L")
    c.set_view("L", 1, frozenset({"F", "M"}), 0.0)
    c.receive(Forward("F", 1, [proposal()]), 0.0)
    c.set_view("M", 2, frozenset({"F", "M"}), 0.5)
    assert all_link_messages(c.tick(0.5)) == []
    assert c.outbox == {} and c.next_deadline() is None


def test_stale_timeout_from_a_previous_server_does_not_remove_a_rejoined_user() -> None:
    c = leader_with_peer("A")
    c.receive(Forward("A", 1, [proposal("join", text="", id="j1", server="A")]), 0.0)
    c.receive(Ack("A", 1, 1, 0, 0), 0.0)
    c.join("rj", "alice", S, 1.0)  # the client failed over to L with the same session
    out = c.receive(Ack("A", 1, 2, 1, 0), 1.0)
    assert replies(out) == [Reply("rj", joined(2, "L"))]
    assert c.who() == [{"user": "alice", "server": "L", "since": EPOCH + 1.0}]
    stale = proposal("timeout", text="", id="timeout-9-1", server="A")
    c.receive(Forward("A", 1, [stale]), 1.5)
    c.receive(Ack("A", 1, 3, 2, 0), 1.5)
    assert c.who() == [{"user": "alice", "server": "L", "since": EPOCH + 1.0}]


def test_quorum_is_a_majority_of_cluster_size_and_none_without_it() -> None:
    assert [replace(LIMITS, cluster_size=n).quorum for n in (0, 1, 2, 3, 4, 5)] == [0, 1, 2, 2, 3, 3]


def test_a_view_larger_than_cluster_size_is_warned_about_once() -> None:
    c = make("L", limits=replace(LIMITS, cluster_size=3))
    out = c.set_view("L", 1, frozenset({"a", "b"}), 0.0)
    assert not [a for a in out if isinstance(a, Log) and "cluster_size" in a.text]
    out = c.set_view("L", 1, frozenset({"a", "b", "c"}), 0.0)
    assert [a.level for a in out if isinstance(a, Log) and "more than [chat] cluster_size = 3" in a.text] == ["warning"]
    out = c.set_view("L", 1, frozenset({"a", "b", "d"}), 0.0)
    assert not [a for a in out if isinstance(a, Log) and "cluster_size" in a.text]


def test_with_a_quorum_of_3_a_leader_with_one_follower_commits_nothing() -> None:
    c = make("L", limits=replace(LIMITS, cluster_size=5))
    c.start(0.0)
    c.set_view("L", 1, frozenset({"F"}), 0.0)
    c.receive(Status("F", 1, 0, 0, 0), 0.0)
    assert c.role == GATHERING, "one peer and the leader are 2 of 5: no view change"
    assert errors(c.join("r", "alice", S, 0.0)) == []
    assert c.commit == 0 and c.last == 0
