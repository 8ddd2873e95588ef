"""The bully election with terms, discovery, pauses and shutdown of one `Node`, on a fake clock.

Each test drives single Nodes by hand with crafted `dsd.wire` messages; times are
plain floats chosen to be exact in binary, so deadlines compare with ==. The few
tests at the end that genuinely need a cluster use `tests.simnet.SimCluster`.
"""

from __future__ import annotations

import pytest

from dsd.core.actions import Action, Log, Publish, Send, Stop
from dsd.core.node import CANDIDATE, DISCOVERING, FOLLOWER, LEADER, Node
from dsd.core.timing import Timing
from dsd.core.datagrams import Answer, Coordinator, Discover, Election, Heartbeat, Leave, Message, Offer, Probe
from tests.simnet import SimCluster
from tests.unit.drivers import T, Driver, addr, hb, leader_events, published, sent

EPS = 2**-20


def logs(actions: list[Action], level: str | None = None) -> list[str]:
    return [a.text for a in actions if isinstance(a, Log) and (level is None or a.level == level)]


def lone_leader(name: str = "m", priority: int = 100, **kwargs) -> Driver:
    """A node that found nobody and leads term 1 from t=0.25."""
    d = Driver(name, priority, **kwargs)
    d.advance(0.25)
    assert d.state() == (LEADER, name, 1)
    return d


def follower_of(name: str = "b", priority: int = 100, leader: str = "a", leader_priority: int = 200,
                term: int = 1, others: tuple[Message, ...] = (), preempt: bool = True) -> Driver:
    """`name` follows `leader` in `term` after discovery; every peer was last heard at 0.0625."""
    d = Driver(name, priority, preempt=preempt)
    d.receive(hb(leader, leader_priority, term=term, leader=leader), 0.0625)
    for message in others:
        d.receive(message, 0.0625)
    d.advance(0.25)
    assert d.state() == (FOLLOWER, leader, term)
    return d


# ------------------------------------------------------------------ discovery


def test_nobody_answers_leader_of_term_1_after_discovery_timeout() -> None:
    d = Driver("m", 100, incarnation=10)
    assert sent(d.started) == [Probe("m", 10, 100)]
    assert d.node.next_deadline() == T.discovery_timeout
    assert d.tick(T.discovery_timeout - EPS) == []
    assert d.node.role == DISCOVERING
    out = d.tick(T.discovery_timeout)
    assert d.state() == (LEADER, "m", 1)
    assert sent(out, Coordinator) == [Coordinator("m", 10, 100, 1)]
    assert leader_events(out) == [{"leader": "m", "term": 1, "previous": None}]
    c = d.node.counters
    assert (c.elections_started, c.elections_won, c.leader_changes) == (1, 1, 1)


def test_probe_backoff_doubles_up_to_the_cap_while_nobody_answers() -> None:
    d = Driver("m", 100)
    d.advance(12.0)
    times = [t for t, a in d.history if isinstance(a, Send) and isinstance(a.message, Probe)]
    assert T.max_probe_interval == 8 * T.discovery_timeout == 2.0
    assert times == [0.0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75, 11.75]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) == T.max_probe_interval


@pytest.mark.parametrize("answer_at", [0.125, 0.375, 1.0])
def test_probing_stops_once_someone_answered(answer_at: float) -> None:
    d = Driver("m", 100)
    probes = [t for t in (0.25, 0.75) if t < answer_at]
    out = d.advance(answer_at)
    assert len(sent(out, Probe)) == len(probes)
    d.receive(hb("p", 50), answer_at)
    out = d.run(6.0, [hb("p", 50, term=1, leader="m")], offset=answer_at)
    assert sent(out, Probe) == []


@pytest.mark.parametrize("preempt", [True, False])
def test_discovering_node_follows_a_higher_leader(preempt: bool) -> None:
    d = Driver("m", 100, preempt=preempt)
    out = d.receive(hb("h", 200, term=4, leader="h"), 0.0625)
    assert leader_events(out) == [{"leader": "h", "term": 4, "previous": None}]
    assert d.state() == (DISCOVERING, "h", 4)
    out = d.run(3.0, [hb("h", 200, term=4, leader="h")])
    assert d.state() == (FOLLOWER, "h", 4)
    assert sent(out, Coordinator) == [] and sent(out, Election) == []


def test_discovering_node_follows_a_lower_leader_without_preempt() -> None:
    d = Driver("m", 200, preempt=False)
    d.receive(hb("l", 100, term=4, leader="l"), 0.0625)
    assert d.state() == (DISCOVERING, "l", 4)
    out = d.run(3.0, [hb("l", 100, term=4, leader="l")])
    assert d.state() == (FOLLOWER, "l", 4)
    assert sent(out, Coordinator) == [] and sent(out, Election) == []
    assert d.node.counters.elections_started == 0


def test_discovering_node_that_outranks_the_leader_takes_over_at_discovery_end() -> None:
    d = Driver("m", 200, incarnation=10)
    out = d.receive(hb("l", 100, term=4, leader="l"), 0.0625)
    assert sent(out, Coordinator) == []
    assert d.state() == (DISCOVERING, "l", 4)
    assert sent(d.tick(T.discovery_timeout - EPS), Coordinator) == []
    out = d.tick(T.discovery_timeout)
    assert d.state() == (LEADER, "m", 5)
    assert sent(out, Coordinator) == [Coordinator("m", 10, 200, 5)]
    assert leader_events(out) == [{"leader": "m", "term": 5, "previous": "l"}]
    assert any("preempting" in text for text in logs(out))


def test_discovery_with_a_higher_peer_and_no_leader_makes_a_candidate() -> None:
    d = Driver("m", 100)
    d.receive(hb("h", 200, state="discovering"), 0.0625)
    out = d.advance(0.25)
    assert d.state() == (CANDIDATE, None, 0)
    assert sent(out, Election) == [] and sent(out, Coordinator) == []
    assert d.node.next_deadline() == 0.25 + T.election_timeout  # the ELECTION (and a heartbeat)
    out = d.advance(0.5)
    assert sent(out, Election) == [Election("m", 10, 100, 0)]


# --------------------------------------------------------------------- claims


def test_claim_with_a_higher_term_is_accepted() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 150),))
    out = d.receive(Coordinator("c", 1, 150, 2), 0.3)
    assert d.state() == (FOLLOWER, "c", 2)
    assert leader_events(out) == [{"leader": "c", "term": 2, "previous": "a"}]
    out = d.receive(hb("a", 200, term=3, leader="a"), 0.35)
    assert d.state() == (FOLLOWER, "a", 3)
    assert d.node.counters.leader_changes == 3
    assert sent(out) == []


@pytest.mark.parametrize("claim", [Coordinator("z", 1, 300, 2), hb("z", 300, term=2, leader="z"),
                                   Coordinator("c", 1, 50, 0)], ids=["coordinator", "heartbeat", "term0"])
def test_follower_refuses_a_claim_with_a_lower_term(claim: Message) -> None:
    d = follower_of("b", 100, "a", 200, term=3)
    out = d.receive(claim, 0.3)
    assert d.state() == (FOLLOWER, "a", 3)
    assert leader_events(out) == [] and sent(out) == []


@pytest.mark.parametrize("claim", [
    Coordinator("l", 1, 50, 0),
    hb("l", 50, term=0, leader="l"),
    Coordinator("l", 1, 50, 1),          # equal term, lower rank
    hb("l", 50, term=1, leader="l"),
    Coordinator("z", 1, 300, 0),         # higher rank, but a stale term
], ids=["lower-term", "lower-term-heartbeat", "equal-term", "equal-term-heartbeat", "higher-rank-lower-term"])
def test_leader_answers_a_stale_claim_with_a_coordinator(claim: Message) -> None:
    d = lone_leader("m", 100, incarnation=10)
    out = d.receive(claim, 0.3)
    assert sent(out, Coordinator) == [Coordinator("m", 10, 100, 1)]
    assert d.state() == (LEADER, "m", 1)
    assert leader_events(out) == []


def test_equal_term_higher_rank_wins() -> None:
    d = follower_of("b", 100, "a", 150, term=2)
    out = d.receive(Coordinator("c", 1, 120, 2), 0.3)  # lower than our leader: refused
    assert d.state() == (FOLLOWER, "a", 2) and leader_events(out) == []
    out = d.receive(Coordinator("z", 1, 200, 2), 0.3125)
    assert d.state() == (FOLLOWER, "z", 2)
    assert leader_events(out) == [{"leader": "z", "term": 2, "previous": "a"}]
    out = d.receive(hb("a", 150, term=2, leader="a"), 0.375)  # the loser keeps claiming: refused
    assert d.state() == (FOLLOWER, "z", 2) and leader_events(out) == []


def test_equal_term_equal_priority_is_won_by_the_higher_name() -> None:
    d = follower_of("b", 100, "a", 150, term=2)
    d.receive(Coordinator("c", 1, 150, 2), 0.3)
    assert d.state() == (FOLLOWER, "c", 2)
    d.receive(Coordinator("a", 1, 150, 2), 0.3125)
    assert d.state() == (FOLLOWER, "c", 2)


def test_terms_never_go_backwards() -> None:
    d = Driver("m", 10, preempt=False)
    claims = [("a", 100, 3), ("b", 200, 1), ("c", 50, 5), ("z", 300, 4), ("a", 100, 5), ("c", 50, 5),
              ("z", 300, 2), ("c", 50, 6)]
    terms, leaders = [], []
    for i, (name, priority, term) in enumerate(claims):
        d.advance(0.0625 * i)
        d.receive(Coordinator(name, 1, priority, term), 0.0625 * i)
        terms.append(d.node.term)
        leaders.append(d.node.leader)
    assert terms == [3, 3, 5, 5, 5, 5, 5, 6]
    assert leaders == ["a", "a", "c", "c", "a", "a", "a", "c"]
    assert d.node.role == FOLLOWER


@pytest.mark.parametrize("claim", [Coordinator("z", 1, 200, 2), hb("z", 200, term=2, leader="z"),
                                   Coordinator("z", 1, 200, 1), hb("z", 200, term=1, leader="z")],
                         ids=["higher-term", "higher-term-heartbeat", "equal-term", "equal-term-heartbeat"])
def test_leader_steps_down_on_a_better_claim(claim: Message) -> None:
    d = lone_leader("m", 100)
    out = d.receive(claim, 0.3)
    assert d.state() == (FOLLOWER, "z", claim.term)
    assert any("stepping down" in text for text in logs(out, "info"))
    assert leader_events(out) == [{"leader": "z", "term": claim.term, "previous": "m"}]
    assert sent(out, Coordinator) == []


def test_leader_bullied_by_a_lower_node_with_a_higher_term_takes_over_again() -> None:
    d = lone_leader("m", 100, incarnation=10)
    out = d.receive(Coordinator("l", 1, 50, 4), 0.3)
    assert any("stepping down" in text for text in logs(out))
    assert leader_events(out) == [
        {"leader": "l", "term": 4, "previous": "m"},
        {"leader": "m", "term": 5, "previous": "l"},
    ]
    assert sent(out, Coordinator) == [Coordinator("m", 10, 100, 5)]
    assert d.state() == (LEADER, "m", 5)


def test_leader_bullied_by_a_lower_node_without_preempt_follows_it() -> None:
    d = lone_leader("m", 100, preempt=False)
    out = d.receive(Coordinator("l", 1, 50, 4), 0.3)
    assert d.state() == (FOLLOWER, "l", 4)
    assert sent(out, Coordinator) == []


@pytest.mark.parametrize("names", ["z", None])
def test_follower_stops_following_a_leader_that_no_longer_claims(names: str | None) -> None:
    d = follower_of("b", 100, "a", 200, term=2)
    out = d.receive(hb("a", 200, term=2, leader=names), 0.3)
    assert leader_events(out) == [{"leader": None, "term": 2, "previous": "a"}]
    assert d.state() == (CANDIDATE, None, 2)  # "a" is alive and higher: wait for it to act


def test_follower_stops_following_and_declares_when_it_is_the_highest() -> None:
    d = follower_of("b", 100, "a", 50, term=2, preempt=False)
    out = d.receive(hb("a", 50, term=3, leader=None), 0.3)
    assert d.state() == (LEADER, "b", 4)
    assert leader_events(out) == [{"leader": None, "term": 2, "previous": "a"},
                                  {"leader": "b", "term": 4, "previous": None}]


def test_follower_ignores_a_reordered_older_heartbeat_of_its_leader() -> None:
    d = follower_of("b", 100, "a", 200, term=2)
    out = d.receive(hb("a", 200, term=1, leader=None), 0.3)
    assert d.state() == (FOLLOWER, "a", 2) and out == []


# ---------------------------------------------------------------- leader loss


def test_dead_leader_highest_remaining_declares_at_once() -> None:
    c = hb("c", 50, term=7, leader="a")  # c has seen term 7: the new term must top it
    d = follower_of("b", 100, "a", 200, term=3, others=(c,))
    dead_at = 0.0625 + T.failure_timeout
    out = d.run(dead_at - EPS, [c])
    assert d.state() == (FOLLOWER, "a", 3)
    assert sent(out, Coordinator) == [] and sent(out, Election) == []
    out = d.advance(dead_at)
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "a", "silence": T.failure_timeout})]
    assert leader_events(out) == [{"leader": None, "term": 3, "previous": "a"},
                                  {"leader": "b", "term": 8, "previous": None}]
    assert sent(out, Coordinator) == [Coordinator("b", 10, 100, 8)]
    assert sent(out, Election) == []
    assert d.state() == (LEADER, "b", 8)
    assert d.node.counters.leader_changes == 2  # "a", then "b": having no leader is not a change
    out = d.run(3.0, [hb("c", 50, term=8, leader="b")])
    assert sent(out, Coordinator) == [] and sent(out, Election) == []


@pytest.mark.parametrize("name, other, declares", [("b", "a", True), ("a", "b", False)])
def test_dead_leader_equal_priorities_are_ranked_by_name(name: str, other: str, declares: bool) -> None:
    d = follower_of(name, 100, "z", 200, term=1, others=(hb(other, 100, term=1, leader="z"),))
    out = d.run(0.0625 + T.failure_timeout, [hb(other, 100, term=1, leader="z")])
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "z", "silence": T.failure_timeout})]
    if declares:
        assert d.state() == (LEADER, name, 2)
        assert len(sent(out, Coordinator)) == 1
    else:
        assert d.state() == (CANDIDATE, None, 1)
        assert sent(out, Coordinator) == []


def lower_candidate() -> tuple[Driver, Heartbeat, float]:
    """c (50) followed a (200) in term 3 with b (100) alive; a just died."""
    b = hb("b", 100, term=3, leader="a")
    d = follower_of("c", 50, "a", 200, term=3, others=(b,))
    dead_at = 0.0625 + T.failure_timeout
    d.run(dead_at - EPS, [b])
    out = d.advance(dead_at)
    assert published(out, "view.dead") == [Publish("view.dead", {"name": "a", "silence": T.failure_timeout})]
    assert leader_events(out) == [{"leader": None, "term": 3, "previous": "a"}]
    assert d.state() == (CANDIDATE, None, 3)
    assert sent(out, Election) == [] and sent(out, Coordinator) == []
    return d, b, dead_at


def test_lower_node_sends_election_only_after_election_timeout_then_declares() -> None:
    d, b, dead_at = lower_candidate()
    ask_at = dead_at + T.election_timeout
    out = d.run(ask_at - EPS, [b])
    assert sent(out, Election) == []
    out = d.advance(ask_at)
    assert sent(out, Election) == [Election("c", 10, 50, 3)]
    assert d.state() == (CANDIDATE, None, 3)
    out = d.run(ask_at + T.election_timeout - EPS, [b])
    assert sent(out, Coordinator) == []
    out = d.advance(ask_at + T.election_timeout)
    assert sent(out, Coordinator) == [Coordinator("c", 10, 50, 4)]
    assert d.state() == (LEADER, "c", 4)
    assert any("no ANSWER" in text for text in logs(out))


def test_candidate_waits_for_the_coordinator_after_an_answer_then_asks_again() -> None:
    d, b, dead_at = lower_candidate()
    ask_at = dead_at + T.election_timeout
    d.advance(ask_at)
    answered_at = ask_at + 0.0625
    d.advance(answered_at)
    d.receive(Answer("b", 1, 100, 3, "c"), answered_at)
    again_at = answered_at + T.coordinator_timeout
    out = d.run(again_at - EPS, [b])
    assert sent(out, Election) == [] and sent(out, Coordinator) == []
    assert d.state() == (CANDIDATE, None, 3)
    out = d.advance(again_at)
    assert sent(out, Election) == [Election("c", 10, 50, 3)]
    # The higher node finally declares: the candidate follows it and stops asking.
    out = d.receive(Coordinator("b", 1, 100, 4), again_at + 0.0625)
    assert d.state() == (FOLLOWER, "b", 4)
    out = d.run(again_at + 5.0, [hb("b", 100, term=4, leader="b")])
    assert sent(out, Election) == [] and sent(out, Coordinator) == []


def test_candidate_ignores_an_answer_meant_for_another_node() -> None:
    d, b, dead_at = lower_candidate()
    ask_at = dead_at + T.election_timeout
    d.advance(ask_at)
    d.receive(Answer("b", 1, 100, 3, "x"), ask_at + 0.0625)
    out = d.advance(ask_at + T.election_timeout)
    assert d.state() == (LEADER, "c", 4)
    assert sent(out, Coordinator) == [Coordinator("c", 10, 50, 4)]


def test_candidate_follows_a_higher_node_that_declares_before_it_asks() -> None:
    d, b, dead_at = lower_candidate()
    d.receive(Coordinator("b", 1, 100, 4), dead_at + 0.0625)
    assert d.state() == (FOLLOWER, "b", 4)
    out = d.run(dead_at + 3.0, [hb("b", 100, term=4, leader="b")])
    assert sent(out, Election) == [] and sent(out, Coordinator) == []


def test_candidate_declares_at_once_when_the_higher_node_leaves() -> None:
    d, b, dead_at = lower_candidate()
    out = d.receive(Leave("b", 1, 100), dead_at + 0.0625)
    assert d.state() == (LEADER, "c", 4)
    assert sent(out, Coordinator) == [Coordinator("c", 10, 50, 4)]


def test_leaving_leader_highest_remaining_takes_over_at_once() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 50, term=1, leader="a"),))
    out = d.receive(Leave("a", 1, 200), 0.3)
    assert published(out, "view.leave") == [Publish("view.leave", {"name": "a"})]
    assert leader_events(out) == [{"leader": None, "term": 1, "previous": "a"},
                                  {"leader": "b", "term": 2, "previous": None}]
    assert sent(out, Coordinator) == [Coordinator("b", 10, 100, 2)]
    # Late datagrams of the leader that left change nothing.
    assert d.receive(hb("a", 200, term=1, leader="a"), 0.35) == []
    assert d.receive(Coordinator("a", 1, 200, 9), 0.375) == []
    assert d.state() == (LEADER, "b", 2)


def test_leaving_leader_lower_node_becomes_candidate() -> None:
    d = follower_of("c", 50, "a", 200, term=1, others=(hb("b", 100, term=1, leader="a"),))
    out = d.receive(Leave("a", 1, 200), 0.3)
    assert d.state() == (CANDIDATE, None, 1)
    assert sent(out, Election) == [] and sent(out, Coordinator) == []


def test_restarted_leader_is_no_longer_followed() -> None:
    d = follower_of("b", 100, "a", 200, term=1)
    out = d.receive(hb("a", 200, inc=2, state="discovering"), 0.5625)  # the old one quiet since 0.0625
    joins = published(out, "view.join")
    assert [j.event["restarted"] for j in joins] == [True] and joins[0].event["incarnation"] == 2
    assert leader_events(out) == [{"leader": None, "term": 1, "previous": "a"}]
    assert d.state() == (CANDIDATE, None, 1)  # "a" is back and higher: wait for it


def test_restarted_leader_coming_back_as_leader_is_followed_again() -> None:
    d = follower_of("b", 100, "a", 200, term=1)
    out = d.receive(hb("a", 200, inc=2, term=2, leader="a"), 0.5625)
    assert leader_events(out) == [{"leader": None, "term": 1, "previous": "a"},
                                  {"leader": "a", "term": 2, "previous": None}]
    assert d.state() == (FOLLOWER, "a", 2)


def test_restarted_follower_does_not_disturb_the_leader() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 50, term=1, leader="a"),))
    out = d.receive(hb("c", 50, inc=2, state="discovering"), 0.5625)
    assert published(out, "view.join")[0].event["restarted"] is True
    assert leader_events(out) == [] and sent(out) == []
    assert d.state() == (FOLLOWER, "a", 1)


# ------------------------------------------------------------------ ELECTION


def test_election_received_by_the_leader_is_answered_with_a_coordinator() -> None:
    d = lone_leader("m", 100, incarnation=10)
    out = d.receive(Election("l", 1, 50, 0), 0.3)
    assert sent(out) == [Coordinator("m", 10, 100, 1)]
    assert d.state() == (LEADER, "m", 1)


def test_election_with_a_newer_term_makes_the_leader_declare_above_it() -> None:
    d = lone_leader("m", 100, incarnation=10)
    out = d.receive(Election("l", 1, 50, 1), 0.3)  # same term: just say who leads
    assert sent(out) == [Coordinator("m", 10, 100, 1)]
    out = d.receive(Election("l", 1, 50, 5), 0.3125)
    assert sent(out) == [Coordinator("m", 10, 100, 6)]
    assert any("re-declaring" in text for text in logs(out))
    assert d.state() == (LEADER, "m", 6)


def test_election_terms_count_as_seen() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 50, term=1, leader="a"),))
    d.receive(Election("c", 1, 50, 6), 0.3)
    out = d.receive(Leave("a", 1, 200), 0.3125)
    assert sent(out, Coordinator) == [Coordinator("b", 10, 100, 7)]


def test_election_from_a_higher_node_is_none_of_a_leaders_business() -> None:
    d = lone_leader("m", 100, preempt=False)
    out = d.receive(Election("h", 1, 200, 0), 0.3)
    assert sent(out) == []
    assert d.state() == (LEADER, "m", 1)


def test_election_received_by_the_highest_non_leader_makes_it_declare() -> None:
    d = follower_of("m", 200, "l", 100, term=4, preempt=False)
    started = d.node.counters.elections_started
    out = d.receive(Election("x", 1, 50, 4), 0.3)
    assert sent(out) == [Coordinator("m", 10, 200, 5)]
    assert d.state() == (LEADER, "m", 5)
    assert d.node.counters.elections_started == started + 1


def test_election_received_by_a_higher_non_highest_node_is_answered() -> None:
    d = follower_of("b", 100, "a", 200, term=3)
    out = d.receive(Election("c", 1, 50, 3), 0.3)
    assert sent(out) == [Answer("b", 10, 100, 3, "c")]
    assert d.state() == (FOLLOWER, "a", 3)


def test_election_from_a_higher_node_is_ignored_by_a_follower() -> None:
    d = follower_of("b", 100, "a", 200, term=3, others=(hb("c", 150),))
    out = d.receive(Election("c", 1, 150, 3), 0.3)
    assert sent(out) == [] and d.state() == (FOLLOWER, "a", 3)


@pytest.mark.parametrize("priority", [200, 40])
def test_election_received_by_a_discovering_node_is_answered(priority: int) -> None:
    d = Driver("m", priority, incarnation=10)
    out = d.receive(Election("l", 1, 30, 0), 0.125)
    assert sent(out) == [Answer("m", 10, priority, 0, "l")]
    assert d.node.role == DISCOVERING


# --------------------------------------------------------- request_election


def test_request_election_on_the_highest_node_declares_a_new_term() -> None:
    d = lone_leader("m", 100, incarnation=10)
    d.receive(hb("l", 50, term=1, leader="m"), 0.3)
    out = d.request_election(0.375)
    assert sent(out) == [Coordinator("m", 10, 100, 2)]
    assert d.state() == (LEADER, "m", 2)
    assert d.node.counters.elections_started == 2


def test_request_election_on_the_highest_follower_takes_over() -> None:
    d = follower_of("m", 200, "l", 100, term=4, preempt=False)
    out = d.request_election(0.3)
    assert sent(out) == [Coordinator("m", 10, 200, 5)]
    assert d.state() == (LEADER, "m", 5)


def test_request_election_on_a_lower_node_asks_at_once_and_declares_if_unanswered() -> None:
    d = follower_of("b", 100, "a", 200, term=1)
    out = d.request_election(0.3)
    assert sent(out) == [Election("b", 10, 100, 1)]
    assert d.node.role == CANDIDATE
    assert d.node.counters.elections_started == 1
    assert sent(d.advance(0.3 + T.election_timeout - EPS), Coordinator) == []
    out = d.advance(0.3 + T.election_timeout)
    assert sent(out, Coordinator) == [Coordinator("b", 10, 100, 2)]
    assert d.state() == (LEADER, "b", 2)


def test_request_election_on_a_lower_node_follows_a_higher_term_coordinator() -> None:
    d = follower_of("c", 50, "a", 200, term=1, others=(hb("b", 100),))
    d.request_election(0.3)
    d.receive(Answer("b", 1, 100, 1, "c"), 0.3125)
    d.receive(Coordinator("b", 1, 100, 2), 0.375)
    assert d.state() == (FOLLOWER, "b", 2)
    out = d.run(3.0, [hb("b", 100, term=2, leader="b"), hb("a", 200, term=2, leader="b")])
    assert sent(out, Election) == [] and sent(out, Coordinator) == []


def test_request_election_on_a_follower_of_the_highest_leader_keeps_that_leader() -> None:
    d = follower_of("b", 100, "a", 200, term=1)
    d.request_election(0.3)
    # The leader answers the ELECTION with a COORDINATOR of its current term, as it must.
    assert d.node.role == CANDIDATE
    out = d.receive(Coordinator("a", 1, 200, 1), 0.3125)
    assert d.state() == (FOLLOWER, "a", 1)
    assert leader_events(out) == [] and sent(out) == []
    out = d.run(3.0, [hb("a", 200, term=1, leader="a")])
    assert sent(out, Coordinator) == [] and sent(out, Election) == []
    assert d.state() == (FOLLOWER, "a", 1)


def test_request_election_on_a_lowest_follower_ends_when_the_leader_answers() -> None:
    b = hb("b", 100, term=1, leader="a")
    d = follower_of("c", 50, "a", 200, term=1, others=(b,))
    d.request_election(0.3)
    d.receive(Answer("b", 1, 100, 1, "c"), 0.3125)
    d.receive(Coordinator("a", 1, 200, 1), 0.3125)
    out = d.run(5.0, [b, hb("a", 200, term=1, leader="a")])
    assert sent(out, Election) == []
    assert d.state() == (FOLLOWER, "a", 1)


# -------------------------------------------------------------- set_timing


def test_set_timing_moves_peer_deadlines_and_the_heartbeat_at_once() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.125)
    d.advance(0.25)
    assert d.node.next_deadline() == 0.5
    faster = Timing(heartbeat_interval=0.125, failure_timeout=0.75, discovery_timeout=0.25)
    d.node.set_timing(faster, 0.25)
    assert d.node.timing is faster
    assert d.node.next_deadline() == 0.375  # next heartbeat: now + the new interval
    assert d.node.peers.next_deadline(faster) == 0.125 + faster.suspect_timeout == 0.5
    assert sent(d.tick(0.375), Heartbeat)
    assert d.node.next_deadline() == 0.5
    out = d.tick(0.5)
    assert published(out, "view.suspect") == [Publish("view.suspect", {"name": "p"})]
    assert sent(out, Heartbeat)
    assert d.node.next_deadline() == 0.625
    out = d.advance(0.875 - EPS)
    assert published(out, "view.dead") == []
    assert d.node.next_deadline() == 0.875
    assert published(d.tick(0.875), "view.dead") == [Publish("view.dead", {"name": "p", "silence": faster.failure_timeout})]


def test_set_timing_never_postpones_the_next_heartbeat() -> None:
    d = Driver("m", 100)
    d.receive(hb("p", 50), 0.125)
    d.advance(0.25)
    slower = Timing(heartbeat_interval=1.0, failure_timeout=4.0, discovery_timeout=1.0)
    d.node.set_timing(slower, 0.3)
    assert d.node.next_deadline() == 0.5
    assert sent(d.tick(0.5), Heartbeat)
    assert d.node.next_deadline() == 1.5


# --------------------------------------------------------------------- pauses


def test_gap_of_exactly_failure_timeout_is_not_a_pause() -> None:
    d = lone_leader()
    d.advance(1.0)
    d.tick(1.0)
    d.tick(1.0 + T.failure_timeout)
    assert d.node.counters.pauses_detected == 0
    assert d.state() == (LEADER, "m", 1)


def test_paused_follower_keeps_its_peers_and_rediscovers() -> None:
    a = hb("a", 200, term=1, leader="a")
    d = follower_of("b", 100, "a", 200, term=1)
    d.run(1.0, [a])
    d.tick(1.0)
    resumed = 1.0 + T.failure_timeout + EPS
    out = d.tick(resumed)
    assert d.node.counters.pauses_detected == 1
    assert any("paused" in text for text in logs(out, "warning"))
    assert sent(out, Probe) == [Probe("b", 10, 100)]
    assert published(out, "view.dead") == [] and published(out, "view.suspect") == []
    assert d.node.peers.get("a") is not None and d.node.peers.get("a").last_seen == resumed
    assert d.state() == (DISCOVERING, "a", 1)
    d.run(resumed + T.discovery_timeout, [a], offset=resumed)
    assert d.state() == (FOLLOWER, "a", 1)


def test_paused_leader_steps_down_and_reprobes() -> None:
    d = lone_leader("m", 100, incarnation=10)
    chatter = [hb("l", 50, term=1, leader="m")]
    d.run(1.0, chatter)
    d.tick(1.0)
    resumed = 2.5
    out = d.receive(chatter[0], resumed)  # the pause is noticed on a datagram, which is still handled
    assert d.node.counters.pauses_detected == 1
    assert any("paused" in text for text in logs(out, "warning"))
    assert any("stepping down" in text for text in logs(out, "info"))
    assert leader_events(out) == [{"leader": None, "term": 1, "previous": "m"}]
    assert sent(out, Probe) == [Probe("m", 10, 100)]
    assert d.state() == (DISCOVERING, None, 1)
    assert d.node.peers.get("l").last_seen == resumed
    out = d.advance(resumed + T.discovery_timeout)
    assert d.state() == (LEADER, "m", 2)  # nobody else took over: lead again, in a new term


# ---------------------------------------------------------------------- leave


def test_leave_sends_leave_twice_and_ignores_everything_afterwards() -> None:
    d = lone_leader("m", 100, incarnation=10)
    out = d.node.leave(0.5)
    assert sent(out) == [Leave("m", 10, 100)] * 2  # one lost LEAVE must not cost a timeout
    assert any("handing over" in text for text in logs(out))
    assert d.node.leave(0.6) == []
    assert d.node.next_deadline() is None
    assert d.node.receive(Probe("p", 1, 50), addr("p"), 0.7) == []
    assert d.node.receive(Election("p", 1, 50, 0), addr("p"), 0.7) == []
    assert d.node.tick(5.0) == []
    assert d.node.request_election(5.0) == []
    assert len(d.node.peers) == 0


def test_follower_leave_sends_only_leave() -> None:
    d = follower_of("b", 100, "a", 200)
    assert d.node.leave(0.5) == [Send(Leave("b", 10, 100))] * 2


# ---------------------------------------------------------------- simulations


@pytest.mark.parametrize("seed", range(4))
def test_crashed_leader_is_replaced_with_one_coordinator_and_no_election(seed: int) -> None:
    cluster = SimCluster(seed=seed)
    for i, name in enumerate("abcde"):
        cluster.add(name, 100 + i)
    assert cluster.wait_for(cluster.agreed, within=2.0)
    cluster.run_for(0.5)
    term = cluster.nodes["e"].node.term
    before = dict(cluster.sent)
    cluster.crash("e")
    assert cluster.wait_for(cluster.agreed, within=2.0)
    cluster.run_for(1.0)
    assert cluster.agreed()
    assert cluster.nodes["d"].node.role == LEADER and cluster.nodes["d"].node.term == term + 1
    assert cluster.sent["coordinator"] - before.get("coordinator", 0) == 1
    assert cluster.sent["election"] - before.get("election", 0) == 0


@pytest.mark.parametrize("seed", range(4))
def test_stopping_leader_hands_over_at_once(seed: int) -> None:
    cluster = SimCluster(seed=seed)
    for i, name in enumerate("abcde"):
        cluster.add(name, 100 + i)
    assert cluster.wait_for(cluster.agreed, within=2.0)
    cluster.run_for(0.5)
    cluster.stop("e")
    # Two network hops (LEAVE, COORDINATOR), far below failure_timeout.
    assert cluster.wait_for(cluster.agreed, within=0.01, step=0.001)
    assert cluster.expected_leader() == "d"


# ------------------------------------------------- review follow-ups (leader events, discovery)


def test_a_new_term_with_the_same_leader_is_published() -> None:
    d = lone_leader()
    out = d.request_election(0.375)
    assert leader_events(out) == [{"leader": "m", "term": 2, "previous": "m"}]
    assert d.node.counters.leader_changes == 1  # the same leader: not a change of leader


def test_a_follower_publishes_its_leaders_new_term() -> None:
    d = follower_of("b", 100, "a", 200, term=1)
    out = d.receive(Coordinator("a", 1, 200, 2), 0.375)
    assert leader_events(out) == [{"leader": "a", "term": 2, "previous": "a"}]


def test_request_election_while_discovering_waits_for_discovery() -> None:
    d = Driver()
    out = d.request_election(0.125)
    assert sent(out) == [] and d.node.role == DISCOVERING
    assert d.node.counters.elections_started == 0
    d.advance(0.25)
    assert d.state() == (LEADER, "m", 1)


def test_the_first_heartbeat_of_a_lone_leader_names_it() -> None:
    d = Driver()
    out = d.advance(0.25)
    beats = sent(out, Heartbeat)
    assert beats and all(b.leader == "m" and b.state == LEADER for b in beats)


def test_a_coordinator_updates_the_senders_row_in_the_view_at_once() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 300, state="discovering"),))
    d.receive(Coordinator("c", 1, 300, 2), 0.375)
    row = next(s for s in d.node.view(0.375)["servers"] if s["name"] == "c")
    assert (row["role"], row["leader"], row["term"]) == (LEADER, "c", 2)


# ------------------------------------------------------------ client discovery


def test_discover_is_answered_with_the_tcp_endpoints_and_is_no_sign_of_life() -> None:
    d = Driver("m", 100)
    d.node.offer = ("tcp://10.0.0.1:5009", "tcp://10.0.0.1:5010")
    out = d.node.receive(Discover(77), "10.0.0.9:5008", 0.125)
    assert out == [Send(Offer("m", 77, "tcp://10.0.0.1:5009", "tcp://10.0.0.1:5010"))]
    assert len(d.node.peers) == 0 and d.node.counters.messages_refused == 0


def test_without_tcp_endpoints_discover_goes_unanswered_and_offers_are_ignored() -> None:
    d = Driver("m", 100)
    assert d.node.receive(Discover(77), "10.0.0.9:5008", 0.125) == []
    assert d.node.receive(Offer("x", 77, "tcp://a:1", "tcp://a:2"), "10.0.0.9:5008", 0.125) == []
    assert len(d.node.peers) == 0, "an OFFER must not make its sender a member"


# ------------------------------------------------------------ link keys


LINK_KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def test_the_heartbeat_announces_the_link_key_and_the_peer_keeps_it_beside_its_endpoint() -> None:
    node = Node("m", 100, 10, T, endpoint="tcp://m.lan:5555", link_key=LINK_KEY)
    beats = sent(node.start(0.0) + node.tick(0.25), Heartbeat)
    assert beats and all((b.endpoint, b.link_key) == ("tcp://m.lan:5555", LINK_KEY) for b in beats)
    other = Driver("o", 50)
    other.receive(beats[-1], 0.25)
    peer = other.node.peers.get("m")
    assert peer is not None and (peer.endpoint, peer.link_key) == ("tcp://m.lan:5555", LINK_KEY)
    other.receive(Heartbeat("m", 10, 100, 1, "m", LEADER, "tcp://m.lan:6666", 0, ""), 0.5)
    assert (peer.endpoint, peer.link_key) == ("tcp://m.lan:6666", ""), "a restarted link without a key"


def test_without_a_link_key_the_heartbeat_carries_an_empty_one() -> None:
    d = Driver()
    assert all(b.link_key == "" for b in sent(d.advance(0.25), Heartbeat))


# ------------------------------------------------------------------ duplicate names


def test_a_daemon_that_hears_an_older_holder_of_its_name_while_discovering_stops() -> None:
    d = Driver("a", 100, incarnation=20)
    out = d.receive(hb("a", 100, inc=10, term=3, leader="c"), 0.0625, address="10.0.0.1:5008")
    stops = [action for action in out if isinstance(action, Stop)]
    assert len(stops) == 1 and "the name 'a' is held by the running dsd at 10.0.0.1:5008" in stops[0].reason
    assert sent(out) == [] and published(out) == []
    # Nothing more under the holder's name: no LEAVE, no heartbeat, no answer.
    assert d.node.leave(0.125) == [] and d.advance(2.0) == [] and d.node.next_deadline() is None
    assert d.receive(Probe("b", 1, 50), 2.0) == []


def test_the_holder_answers_a_namesakes_probe_at_once_and_says_so_once() -> None:
    d = follower_of("a", 100, "c", 200)
    out = d.receive(Probe("a", 99, 100), 0.3125, address="10.0.0.9:5008")
    assert [m.incarnation for m in sent(out, Heartbeat)] == [d.node.incarnation]
    warnings = [a.text for a in out if isinstance(a, Log) and a.level == "warning"]
    assert len(warnings) == 1 and "10.0.0.9:5008 started with this daemon's name 'a'" in warnings[0]
    again = d.receive(Probe("a", 99, 100), 0.375)
    assert sent(again, Heartbeat) and not [a for a in again if isinstance(a, Log)]
    assert d.state() == (FOLLOWER, "c", 1) and not [a for a in out + again if isinstance(a, Stop)]


def test_a_newer_namesake_does_not_stop_a_discovering_holder() -> None:
    d = Driver("a", 100, incarnation=20)
    out = d.receive(Probe("a", 30, 100), 0.0625)  # two started at once: the older stays
    assert not [a for a in out if isinstance(a, Stop)] and sent(out, Heartbeat)
    d.advance(0.25)
    assert d.state() == (LEADER, "a", 1)


def test_peers_ignore_a_namesake_while_the_holder_speaks() -> None:
    d = follower_of("b", 100, "a", 200, term=1, others=(hb("c", 50, term=1, leader="a"),))
    # The newcomer "c" probes, answers and claims leadership in a higher term: all of it ignored.
    out = []
    for at, message in ((0.3125, Probe("c", 9, 300)), (0.375, hb("c", 300, inc=9, state="discovering")),
                        (0.4375, Coordinator("c", 9, 300, 5)), (0.5, Leave("c", 9, 300))):
        out += d.receive(hb("c", 50, term=1, leader="a"), at)  # the holder keeps speaking
        out += d.receive(message, at, address="10.0.0.9:5008")
    assert published(out) == [] and sent(out) == []
    warnings = [a.text for a in out if isinstance(a, Log) and a.level == "warning"]
    assert warnings == ["ignoring a second daemon named 'c' at 10.0.0.9:5008: the one at c.lan:7946 "
                        "has the name and is alive"]
    assert d.state() == (FOLLOWER, "a", 1)
    peer = d.peer("c")
    assert peer is not None and (peer.incarnation, peer.address, peer.priority) == (1, addr("c"), 50)
