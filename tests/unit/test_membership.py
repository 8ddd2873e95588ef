"""Membership: join, suspect, alive, dead, leave, restarts and stale packets, with a fake clock.

Single `Node`s are driven by hand with crafted `dsd.wire` messages; times are
plain floats chosen to be exact in binary, so deadlines compare with ==.
"""

from __future__ import annotations

import json

import pytest

from dsd.core.actions import Action, Log, Publish, Send
from dsd.core.membership import ALIVE, SUSPECT, Membership, Peer
from dsd.core.node import DISCOVERING, LEADER, Node
from dsd.core.datagrams import Answer, Coordinator, Election, Heartbeat, Leave, Message, Probe
from tests.unit.drivers import T, Driver, addr, hb, published, sent


def topics(actions: list[Action]) -> list[str]:
    return [a.topic for a in published(actions) if a.topic.startswith("view.")]


# ------------------------------------------------------------------ start-up


def test_start_sends_a_probe_and_nothing_else() -> None:
    d = Driver("m", 100, incarnation=10)
    assert d.started == [Send(Probe("m", 10, 100))]
    assert d.node.role == DISCOVERING
    assert d.node.leader is None and d.node.term == 0
    assert len(d.node.peers) == 0
    assert d.node.next_deadline() == 0.0 + T.discovery_timeout


def test_nothing_happens_before_start() -> None:
    node = Node("m", 100, 1, T)
    assert node.next_deadline() is None
    assert node.receive(hb("p", 50), addr("p"), 1.0) == []
    assert node.tick(1.0) == []
    assert node.request_election(1.0) == []
    assert node.leave(1.0) == []
    assert len(node.peers) == 0


def test_probe_is_answered_at_once_with_a_heartbeat() -> None:
    d = Driver("m", 100, incarnation=10)
    out = d.receive(Probe("p", 3, 50), 0.01)
    expected = Heartbeat("m", 10, 100, 0, None, DISCOVERING, "tcp://m.lan:5555", 0)
    assert sent(out) == [expected]
    # Once leader, the answer carries the term and the leader.
    d.advance(0.25)
    assert d.node.role == LEADER
    out = d.receive(Probe("q", 4, 40), 0.3)
    assert sent(out) == [Heartbeat("m", 10, 100, 1, "m", LEADER, "tcp://m.lan:5555", 0)]


def test_heartbeats_go_out_every_interval_with_current_state() -> None:
    d = Driver("m", 100, incarnation=10)
    d.advance(1.0)
    beats = [(t, a.message) for t, a in d.history if isinstance(a, Send) and isinstance(a.message, Heartbeat)]
    assert [t for t, _ in beats] == [0.25, 0.5, 0.75, 1.0]
    assert all((m.name, m.incarnation, m.priority) == ("m", 10, 100) for _, m in beats)
    assert (beats[-1][1].term, beats[-1][1].leader, beats[-1][1].state) == (1, "m", LEADER)
    assert d.node.next_deadline() == 1.25


# ---------------------------------------------------------------------- join


def test_new_peer_joins_with_address_and_priority() -> None:
    d = Driver()
    out = d.receive(hb("p", 50, inc=3), 0.0625, address="10.0.0.7:7946")
    assert published(out) == [Publish("view.join", {
        "name": "p", "address": "10.0.0.7:7946", "priority": 50, "incarnation": 3, "restarted": False,
    })]
    assert published(out)[0].event == {
        "name": "p", "address": "10.0.0.7:7946", "priority": 50, "incarnation": 3, "restarted": False,
    }
    peer = d.peer("p")
    assert peer is not None and peer.state == ALIVE and peer.last_seen == 0.0625
    # A second sign of life is not a second join.
    assert topics(d.receive(hb("p", 50, inc=3), 0.125, address="10.0.0.7:7946")) == []


@pytest.mark.parametrize("message", [
    Probe("p", 3, 50),
    Heartbeat("p", 3, 50, 0, None, "discovering", "", 0),
    Election("p", 3, 50, 0),
    Answer("p", 3, 50, 0, "someone"),
    Coordinator("p", 3, 50, 1),
], ids=lambda m: type(m).__name__)
def test_any_message_is_a_sign_of_life(message: Message) -> None:
    d = Driver()
    out = d.receive(message, 0.0625)
    assert topics(out) == ["view.join"]
    assert d.peer("p").last_seen == 0.0625
    d.receive(hb("p", 50, inc=3), 0.125)
    out = d.receive(message, 0.375)
    assert d.peer("p").last_seen == 0.375
    assert topics(out) == []


def test_heartbeat_updates_what_we_know_of_the_peer() -> None:
    d = Driver()
    d.receive(Probe("p", 3, 50), 0.0625, address="10.0.0.7:1")
    assert d.peer("p").role == "discovering" and d.peer("p").term == 0
    d.receive(hb("p", 50, inc=3, term=4, leader="q", state="candidate", endpoint="tcp://p:1"), 0.125,
              address="10.0.0.8:2")
    peer = d.peer("p")
    assert (peer.term, peer.leader, peer.role, peer.endpoint, peer.address) == (
        4, "q", "candidate", "tcp://p:1", "10.0.0.8:2")


# ------------------------------------------------------- suspect, alive, dead


def test_silence_makes_a_peer_suspect_then_dead_at_exact_deadlines() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.125)
    suspect_at = 0.125 + T.suspect_timeout
    dead_at = 0.125 + T.failure_timeout
    assert suspect_at == 0.625 and dead_at == 1.125

    out = d.advance(suspect_at - 0.0625)
    assert topics(out) == []
    assert d.node.next_deadline() == suspect_at
    assert topics(d.tick(suspect_at - 2**-20)) == []
    out = d.tick(suspect_at)
    assert published(out, "view.suspect") == [Publish("view.suspect", {"name": "p"})]
    assert d.peer("p").state == SUSPECT

    out = d.advance(dead_at - 0.0625)
    assert topics(out) == []
    assert d.node.next_deadline() == dead_at
    assert topics(d.tick(dead_at - 2**-20)) == []
    out = d.tick(dead_at)
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "p", "silence": T.failure_timeout})]
    assert d.peer("p") is None
    assert d.node.peers.next_deadline(T) is None


def test_each_peer_has_its_own_deadline() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.125)
    d.advance(0.25)
    d.receive(hb("q", 60), 0.375)
    assert d.node.peers.next_deadline(T) == 0.625
    out = d.advance(0.625)
    assert topics(out) == ["view.suspect"] and published(out)[-1].event == {"name": "p"}
    assert d.node.peers.next_deadline(T) == 0.875
    out = d.advance(0.875)
    assert published(out, "view.suspect") == [Publish("view.suspect", {"name": "q"})]
    out = d.advance(1.125)
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "p", "silence": T.failure_timeout})]
    out = d.advance(1.375)
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "q", "silence": T.failure_timeout})]
    assert len(d.node.peers) == 0


def test_suspect_peer_heard_again_is_alive() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.125)
    d.advance(0.625)
    assert d.peer("p").state == SUSPECT
    out = d.receive(hb("p", 50), 0.75)
    assert published(out) == [Publish("view.alive", {"name": "p"})]
    assert d.peer("p").state == ALIVE
    # The clock restarts from the new sign of life: no dead at the old deadline.
    assert d.node.peers.next_deadline(T) == 0.75 + T.suspect_timeout
    out = d.advance(1.125)
    assert "view.dead" not in topics(out)
    assert topics(d.advance(1.25)) == ["view.suspect"]
    assert topics(d.advance(1.75)) == ["view.dead"]


def test_regular_heartbeats_keep_a_peer_alive() -> None:
    d = Driver("m", 100)
    out = d.run(5.0, [hb("p", 50)])
    assert topics(out) == ["view.join"]
    assert d.peer("p").state == ALIVE


def test_dead_peer_heard_again_joins_afresh() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    d.advance(1.125)
    assert d.peer("p") is None
    out = d.receive(hb("p", 50, inc=3), 1.25)
    assert published(out, "view.join")[0].event["restarted"] is False
    assert d.peer("p").state == ALIVE


def test_an_older_incarnation_of_a_dead_peer_does_not_come_back() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    d.advance(1.125)
    assert d.peer("p") is None
    assert d.receive(hb("p", 50, inc=2), 1.25) == []
    assert d.peer("p") is None and d.node.counters.messages_refused == 1


# ---------------------------------------------------------------------- leave


def test_leave_removes_the_peer_at_once() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    out = d.receive(Leave("p", 3, 50), 0.25)
    assert published(out) == [Publish("view.leave", {"name": "p"})]
    assert d.peer("p") is None and len(d.node.peers) == 0


def test_late_datagrams_of_a_left_incarnation_do_not_resurrect_it() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    d.advance(0.25)
    d.receive(Leave("p", 3, 50), 0.25)
    refused = d.node.counters.messages_refused
    for i, late in enumerate([hb("p", 50, inc=3), Probe("p", 3, 50), Leave("p", 3, 50),
                              Election("p", 3, 50, 0), Coordinator("p", 3, 50, 9), hb("p", 50, inc=2)]):
        out = d.receive(late, 0.3 + i / 64)
        assert out == [], late
        assert d.peer("p") is None
    assert d.node.counters.messages_refused == refused + 6
    assert d.node.term == 1 and d.node.leader == "m"  # the late COORDINATOR changed nothing


def test_a_new_incarnation_after_leave_joins_again() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    d.receive(Leave("p", 3, 50), 0.25)
    out = d.receive(hb("p", 50, inc=4), 0.375)
    assert published(out, "view.join") == [Publish("view.join", {
        "name": "p", "address": addr("p"), "priority": 50, "incarnation": 4, "restarted": False,
    })]
    assert d.peer("p").incarnation == 4
    # ...and that incarnation can leave again.
    assert topics(d.receive(Leave("p", 4, 50), 0.5)) == ["view.leave"]


def test_leave_from_an_unknown_incarnation_leaves_no_peer_behind() -> None:
    d = Driver("m", 100)
    d.receive(Leave("p", 3, 50), 0.125)
    assert d.peer("p") is None
    assert d.node.receive(hb("p", 50, inc=3), addr("p"), 0.25) == []


# ------------------------------------------------------ restarts and staleness


def test_restarted_peer_rejoins_with_restarted_flag() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3, term=1, leader="m", state="follower", endpoint="tcp://old"), 0.125)
    # Heard again once the old incarnation has been quiet for suspect_timeout: a restart.
    out = d.receive(Probe("p", 4, 55), 0.625, address="10.0.0.9:1")
    assert published(out, "view.join") == [Publish("view.join", {
        "name": "p", "address": "10.0.0.9:1", "priority": 55, "incarnation": 4, "restarted": True,
    })]
    peer = d.peer("p")
    assert (peer.incarnation, peer.priority, peer.term, peer.leader, peer.role, peer.endpoint) == (
        4, 55, 0, None, "discovering", "")
    assert d.node.counters.messages_refused == 0


def test_stale_incarnation_is_refused_and_counted() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50, inc=3), 0.125)
    d.advance(0.625)
    d.receive(hb("p", 50, inc=4), 0.625)
    out = d.receive(hb("p", 50, inc=3, term=7, leader="p"), 0.75)
    assert out == []
    assert d.node.counters.messages_refused == 1
    assert d.peer("p").incarnation == 4
    assert d.node.term == 1  # the stale claim of term 7 was not even looked at
    # A stale packet is no sign of life: the peer still dies 1.0 s after its real last word.
    assert d.peer("p").last_seen == 0.625
    out = d.run(1.625, [hb("p", 50, inc=3)], offset=0.0625)
    assert topics(out).count("view.dead") == 1
    assert d.node.counters.messages_refused > 1


def test_own_looped_back_datagrams_are_ignored() -> None:
    d = Driver("m", 100, incarnation=10)
    d.advance(0.25)
    before = (d.node.term, d.node.leader, d.node.role, d.node.counters.messages_refused)
    for i, own in enumerate([Probe("m", 10, 100), hb("m", 100, inc=10, term=1, leader="m"), Election("m", 10, 100, 1),
                             Coordinator("m", 10, 100, 1), Answer("m", 10, 100, 1, "x"), Leave("m", 10, 100)]):
        assert d.receive(own, 0.3 + i / 64) == [], own
    assert len(d.node.peers) == 0
    assert (d.node.term, d.node.leader, d.node.role, d.node.counters.messages_refused) == before


def test_same_name_with_another_incarnation_is_refused() -> None:
    d = Driver("m", 100, incarnation=10)
    out = d.receive(hb("m", 100, inc=11, term=5, leader="m"), 0.125)  # a newer daemon named m
    assert [a for a in out if isinstance(a, Log) and a.level == "warning" and "'m'" in a.text]
    assert sent(out) == [] and published(out) == []
    assert d.node.counters.messages_refused == 1
    assert d.receive(hb("m", 100, inc=11, term=5, leader="m"), 0.1875) == [], "said once, not per datagram"
    assert d.node.counters.messages_refused == 2
    assert len(d.node.peers) == 0 and d.node.term == 0


# ----------------------------------------------------------------------- view


def test_view_document() -> None:
    d = Driver("m", 100, incarnation=10)
    d.receive(hb("a", 200, inc=1, state="discovering"), 0.0625, address="10.0.0.1:7946")
    d.receive(hb("z", 100, inc=2), 0.0625, address="10.0.0.26:7946")
    d.receive(hb("b", 100, inc=3), 0.125, address="10.0.0.2:7946")
    d.receive(hb("low", 5, inc=4, endpoint="tcp://low:1"), 0.125, address="10.0.0.99:7946")
    d.run(0.5, [hb("a", 200, inc=1, state="discovering"), hb("z", 100, inc=2), hb("low", 5, inc=4)], offset=0.0)
    d.advance(0.625)  # "b" was last heard at 0.125: suspect now
    view = d.node.view(0.75)
    json.dumps(view)  # plain JSON
    assert set(view) == {"self", "term", "leader", "servers"}
    assert view["self"] == "m"
    assert (view["term"], view["leader"]) == (d.node.term, d.node.leader)
    servers = view["servers"]
    assert [s["name"] for s in servers] == ["a", "z", "m", "b", "low"]  # by (priority, name), highest first
    keys = {"name", "address", "priority", "state", "leader", "term", "last_seen", "role"}
    assert all(set(s) == keys for s in servers)
    me = servers[2]
    assert me == {"name": "m", "address": addr("m"), "priority": 100, "state": "alive",
                  "leader": d.node.leader, "term": d.node.term, "last_seen": 0.0, "role": d.node.role}
    by_name = {s["name"]: s for s in servers}
    assert by_name["b"]["state"] == "suspect" and by_name["b"]["last_seen"] == 0.625
    assert by_name["a"]["state"] == "alive" and by_name["a"]["role"] == "discovering"
    assert by_name["a"]["last_seen"] == 0.25 and by_name["a"]["address"] == addr("a")  # the latest source address
    assert by_name["low"]["priority"] == 5


def test_view_of_a_lone_node() -> None:
    d = Driver("m", 100)
    view = d.node.view(0.0)
    assert view == {"self": "m", "term": 0, "leader": None, "servers": [{
        "name": "m", "address": addr("m"), "priority": 100, "state": "alive", "leader": None,
        "term": 0, "last_seen": 0.0, "role": "discovering",
    }]}


def test_view_last_seen_is_rounded_and_never_negative() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.1)
    entry = next(s for s in d.node.view(0.1 + 1 / 3)["servers"] if s["name"] == "p")
    assert entry["last_seen"] == 0.333
    entry = next(s for s in d.node.view(0.0)["servers"] if s["name"] == "p")
    assert entry["last_seen"] == 0.0


# ----------------------------------------------------------- Membership alone


def _observe(m: Membership, message: Message, now: float) -> tuple[Peer | None, bool, list[Action]]:
    out: list[Action] = []
    peer, restarted = m.observe(message, addr(message.name), now, out)
    return peer, restarted, out


def test_membership_observe_expire_and_deadlines() -> None:
    m = Membership()
    assert m.next_deadline(T) is None and m.highest() is None and len(m) == 0
    peer, restarted, out = _observe(m, hb("p", 50), 1.0)
    assert peer is not None and not restarted and topics(out) == ["view.join"]
    assert peer.next_deadline(T) == 1.5 and m.next_deadline(T) == 1.5
    out = []
    assert m.expire(1.4375, T, out) == [] and out == []
    assert m.expire(1.5, T, out) == [] and topics(out) == ["view.suspect"]
    assert peer.next_deadline(T) == 2.0
    out = []
    assert m.expire(1.9375, T, out) == [] and out == []
    dead = m.expire(2.0, T, out)
    assert [p.name for p in dead] == ["p"] and topics(out) == ["view.dead"]
    assert len(m) == 0


def test_membership_expire_straight_to_dead_skips_suspect() -> None:
    m = Membership()
    _observe(m, hb("p", 50), 1.0)
    out: list[Action] = []
    assert [p.name for p in m.expire(5.0, T, out)] == ["p"]
    assert topics(out) == ["view.dead"]


def test_membership_highest_is_by_priority_then_name_and_includes_suspects() -> None:
    m = Membership()
    _observe(m, hb("a", 100), 0.0)
    _observe(m, hb("b", 100), 0.25)
    _observe(m, hb("c", 50), 0.25)
    assert m.highest().name == "b"
    m.expire(0.5, T, [])
    assert m.get("b").state == ALIVE and m.get("a").state == SUSPECT
    _observe(m, hb("z", 99), 0.5)
    assert m.highest().name == "b"
    _observe(m, hb("a", 101, inc=2), 0.5)
    assert m.highest().name == "a"
    assert m.get(None) is None and m.get("nobody") is None
    assert sorted(p.name for p in m) == ["a", "b", "c", "z"]


def test_membership_forgive_restarts_every_clock() -> None:
    m = Membership()
    _observe(m, hb("p", 50), 0.0)
    _observe(m, hb("q", 60), 0.5)
    m.forgive(10.0)
    assert {p.last_seen for p in m} == {10.0}
    out: list[Action] = []
    assert m.expire(10.4375, T, out) == [] and out == []


def test_membership_refuses_stale_and_left() -> None:
    m = Membership()
    _observe(m, hb("p", 50, inc=5), 0.0)
    assert _observe(m, hb("p", 50, inc=4), 0.25)[:2] == (None, False)
    peer, restarted, out = _observe(m, hb("p", 50, inc=6), 0.25)
    assert restarted and out[0].event["restarted"] is True
    out = []
    m.remove_left(peer, out)
    assert topics(out) == ["view.leave"]
    assert _observe(m, hb("p", 50, inc=6), 0.5)[:2] == (None, False)
    assert _observe(m, hb("p", 50, inc=1), 0.5)[:2] == (None, False)
    peer, restarted, out = _observe(m, hb("p", 50, inc=7), 0.5)
    assert peer is not None and not restarted
