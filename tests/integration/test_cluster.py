"""Real dsd processes on private hosts: membership, failure detection and the bully election.

Every scenario of issue 2's integration list: agreement, kill -9 of the leader, a
paused (SIGSTOP) leader, a clean handover (SIGTERM), a host cut off and reconnected,
a higher-priority node joining with and without preempt, restarted nodes, and the
feed events seen along the way. Waits are on conditions with deadlines; the only
durations are how long "nothing bad happens" is sampled for.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster import FAST, Cluster, wait_until

FAILURE_TIMEOUT = FAST["failure_timeout"]
# How long a settled cluster is watched for a second leader or a spurious election.
QUIET_PERIOD = 4 * FAILURE_TIMEOUT


def start(cluster: Cluster, priorities: dict[str, int], **settings: dict) -> None:
    """One daemon per host, in the order given."""
    for name, priority in priorities.items():
        cluster.add(name, priority=priority, **settings)


def start_highest_first(cluster: Cluster, priorities: dict[str, int], **settings: dict) -> None:
    """Start the highest-ranked daemon alone, then the others once it leads.

    Without preempt the first daemon to declare keeps the leadership, and which one
    that is would depend on how fast each process starts; this makes it the highest.
    """
    ranked = sorted(priorities, key=lambda name: (priorities[name], name), reverse=True)
    cluster.add(ranked[0], priority=priorities[ranked[0]], host=list(priorities).index(ranked[0]) + 1, **settings)
    cluster.wait_agreed(ranked[0], among=ranked[:1])
    for name in ranked[1:]:
        cluster.add(name, priority=priorities[name], host=list(priorities).index(name) + 1, **settings)


def assert_quiet(cluster: Cluster, term: int, leader: str, period: float = QUIET_PERIOD) -> None:
    """For `period` seconds: only `leader` calls itself leader, and every daemon agrees on (term, leader).

    A daemon that is slow to answer one sample (a loaded machine) is left out of that
    sample; one that answers must be right.
    """
    deadline = time.monotonic() + period
    complete = 0
    while time.monotonic() < deadline:
        roles = cluster.roles()
        assert [name for name, role in roles.items() if role == "leader" and name != leader] == [], \
            f"roles {roles}\n{cluster.describe()}"
        assert roles[leader] in ("leader", None), f"roles {roles}\n{cluster.describe()}"
        beliefs = cluster.leaders()
        assert set(beliefs.values()) <= {(term, leader)}, f"beliefs {beliefs}\n{cluster.describe()}"
        complete += None not in roles.values() and len(beliefs) == len(roles)
    assert complete >= 5, "too few complete samples to mean anything"


def test_five_hosts_agree_on_the_view_and_the_highest_ranked_leader(make_cluster):
    cluster = make_cluster(5)
    # Rank is (priority, name): e and c tie on priority and e wins on the name; start order is irrelevant.
    priorities = {"a": 100, "b": 100, "c": 150, "d": 120, "e": 150}
    start(cluster, priorities)
    term, leader = cluster.wait_agreed("e")
    assert term >= 1
    hosts = {d.name: d.host for d in cluster.daemons.values()}

    def whole_views() -> bool:
        for daemon in cluster.daemons.values():
            view = daemon.request("view")
            assert view["self"] == daemon.name
            servers = view["servers"]
            ranks = [(s["priority"], s["name"]) for s in servers]
            assert ranks == sorted(ranks, reverse=True), "servers are listed by rank"
            assert {s["name"]: s["priority"] for s in servers} == priorities
            if cluster.net is not None:
                for s in servers:
                    assert s["address"] == f"{cluster.net.address(hosts[s['name']])}:5008", s
            # What each peer last reported must have caught up with the agreement too.
            if any((s["term"], s["leader"], s["state"]) != (term, "e", "alive") for s in servers):
                return False
        return True

    wait_until(whole_views, 5, what="every view listing every server with the agreed leader")


def test_kill_9_of_the_leader_survivors_agree_on_the_next_with_a_higher_term(make_cluster):
    cluster = make_cluster(4)
    start(cluster, {"a": 101, "b": 102, "c": 103, "d": 104})
    term, _ = cluster.wait_agreed("d")
    cluster.daemons["d"].kill()
    new_term, _ = cluster.wait_agreed("c")
    assert new_term > term


def test_feed_shows_join_suspect_dead_and_leader_during_a_kill_9_sequence(make_cluster):
    cluster = make_cluster(4)
    start(cluster, {"a": 101, "b": 102, "c": 103})
    term, _ = cluster.wait_agreed("c")
    with cluster.daemons["a"].feed() as feed:
        feed.sync(lambda: cluster.mark(1))

        cluster.add("d", priority=50)
        join = feed.wait_for("view.join", name="d")
        assert join["priority"] == 50 and join["restarted"] is False
        assert join["address"].startswith(cluster.net.address(4) if cluster.net else "127.0.0.1")
        cluster.wait_agreed("c")

        first = len(feed.events)
        cluster.daemons["c"].kill()
        suspect = feed.wait_for("view.suspect", name="c", start=first)
        dead = feed.wait_for("view.dead", name="c", start=first)
        elected = feed.wait_for("leader", leader="b", start=first)
        # a may hear b's COORDINATOR a moment before its own deadline declares c dead.
        assert feed.index(suspect) < feed.index(dead) and feed.index(suspect) < feed.index(elected)
        assert elected["term"] > term
        assert all(e["node"] == "a" for e in feed.events)
        new_term, _ = cluster.wait_agreed("b")
        assert new_term == elected["term"]

        second = len(feed.events)
        cluster.daemons["d"].kill()
        suspect = feed.wait_for("view.suspect", name="d", start=second)
        dead = feed.wait_for("view.dead", name="d", start=second)
        assert feed.index(suspect) < feed.index(dead)
        assert cluster.wait_agreed("b") == (new_term, "b"), "losing a follower must not cause an election"

        events = feed.drain()[first:]
        victims = ("c", "d")
        about = [(e["topic"], e["name"]) for e in events if e["topic"].startswith("view.") and e["name"] in victims]
        assert about == [("view.suspect", "c"), ("view.dead", "c"), ("view.suspect", "d"), ("view.dead", "d")]
        # Nobody else left the view (a heartbeat late under load may make a peer suspect for a moment).
        changes = ("view.dead", "view.leave", "view.join")
        assert not [e for e in events if e["topic"] in changes and e["name"] not in victims], events
        assert [e for e in events if e["topic"] == "leader" and e["leader"] is not None] == [elected]


@pytest.mark.parametrize("preempt", [True, False], ids=["preempt", "no-preempt"])
def test_paused_leader_steps_down_and_never_leads_beside_another(make_cluster, preempt):
    cluster = make_cluster(3)
    start_highest_first(cluster, {"a": 101, "b": 102, "c": 103}, election={"preempt": preempt})
    old_term, _ = cluster.wait_agreed("c")
    old_leader = cluster.daemons["c"]
    with old_leader.feed() as feed:
        feed.sync(lambda: cluster.mark(3))
        first = len(feed.events)
        old_leader.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # The others declare c dead and elect b; c stays stopped for twice failure_timeout
            # (the length of the fault, not a synchronisation), the others keeping b meanwhile.
            survivors_term, _ = cluster.wait_agreed("b", among=["a", "b"])
            while time.monotonic() - stopped < 2 * FAILURE_TIMEOUT:
                assert set(cluster.leaders(among=["a", "b"]).values()) <= {(survivors_term, "b")}
        finally:
            old_leader.signal(signal.SIGCONT)
        assert survivors_term > old_term

        # On waking, c must first give up its old leadership, whatever happens next.
        stepped_down = feed.wait_for("leader", start=first)
        assert stepped_down["previous"] == "c" and stepped_down["leader"] != "c", stepped_down

        term, leader = cluster.wait_agreed("c" if preempt else "b")
        assert term >= survivors_term > old_term
        if preempt:
            assert term > survivors_term, "taking over again needs a new term"
        else:
            assert term == survivors_term, "without preempt c must simply follow b"
        assert old_leader.request("stats")["pauses_detected"] >= 1
        assert_quiet(cluster, term, leader)


def test_sigterm_of_the_leader_hands_over_faster_than_failure_detection(make_cluster):
    cluster = make_cluster(3)
    start(cluster, {"a": 101, "b": 102, "c": 103})
    old_term, _ = cluster.wait_agreed("c")
    feeds = [cluster.daemons[name].feed() for name in ("a", "b")]
    try:
        for feed in feeds:
            feed.sync(lambda: cluster.mark(1))
        first = [len(feed.events) for feed in feeds]
        signalled = time.time()
        cluster.daemons["c"].signal(signal.SIGTERM)
        assert cluster.daemons["c"].process.wait(timeout=10) == 0, cluster.daemons["c"].logs()
        for feed, start_at in zip(feeds, first):
            leave = feed.wait_for("view.leave", name="c", start=start_at)
            elected = feed.wait_for("leader", leader="b", start=start_at)
            assert feed.index(leave) < feed.index(elected)
            assert elected["term"] > old_term
            # A LEAVE makes peers elect at once; without it they would wait for failure_timeout.
            handover = elected["time"] - signalled
            assert handover < FAILURE_TIMEOUT, f"handover took {handover:.3f}s on {elected['node']}"
            events = feed.drain()[start_at:]
            assert not [e for e in events if e["topic"] in ("view.suspect", "view.dead") and e["name"] == "c"], events
        term, _ = cluster.wait_agreed("b")
        assert term > old_term
    finally:
        for feed in feeds:
            feed.close()


@pytest.mark.parametrize("victim", ["d", "a"], ids=["leader-cut-off", "follower-cut-off"])
def test_host_cut_off_leads_itself_and_all_agree_on_the_highest_after_reconnecting(make_cluster, victim):
    cluster = make_cluster(4, partitions=True)
    start(cluster, {"a": 101, "b": 102, "c": 103, "d": 104})
    term, _ = cluster.wait_agreed("d")
    rest = [name for name in "abcd" if name != victim]
    host = cluster.daemons[victim].host
    cluster.net.cut(host)
    try:
        alone_term, _ = cluster.wait_agreed(victim, among=[victim])
        rest_term, _ = cluster.wait_agreed(max(rest), among=rest)
    finally:
        cluster.net.reconnect(host)
    if victim == "d":
        assert rest_term > term and alone_term == term
    else:
        assert alone_term > term and rest_term == term
    final_term, _ = cluster.wait_agreed("d")
    assert final_term > max(alone_term, rest_term), "terms never go backwards, and d must win over both"
    assert_quiet(cluster, final_term, "d", period=2 * FAILURE_TIMEOUT)


def test_higher_priority_node_joining_takes_over_with_preempt(make_cluster):
    cluster = make_cluster(3)
    start(cluster, {"a": 101, "b": 102})
    term, _ = cluster.wait_agreed("b")
    cluster.add("c", priority=103)
    new_term, _ = cluster.wait_agreed("c")
    assert new_term > term


def test_higher_priority_node_joining_without_preempt_leaves_the_leader_alone(make_cluster):
    cluster = make_cluster(3)
    no_preempt = {"preempt": False}
    start_highest_first(cluster, {"a": 101, "b": 102}, election=no_preempt)
    term, _ = cluster.wait_agreed("b")
    cluster.add("c", priority=103, election=no_preempt)
    assert cluster.wait_agreed("b") == (term, "b")
    assert_quiet(cluster, term, "b")
    # c is not broken, only polite: it leads once b is gone.
    cluster.daemons["b"].kill()
    new_term, _ = cluster.wait_agreed("c")
    assert new_term > term


def test_leader_restarted_before_its_death_is_noticed_rejoins_as_a_new_incarnation(make_cluster):
    cluster = make_cluster(3)
    # Slow failure detection, so the restart is seen as a new incarnation rather than a death and a join.
    start(cluster, {"a": 101, "b": 102, "c": 103}, timing={"failure_timeout": 5.0})
    term, _ = cluster.wait_agreed("c")
    restarted = cluster.daemons["c"]
    with cluster.daemons["a"].feed() as feed:
        feed.sync(lambda: cluster.mark(1))
        first = len(feed.events)
        restarted.kill()
        restarted.start()
        join = feed.wait_for("view.join", name="c", start=first)
        assert join["restarted"] is True
        new_term, _ = cluster.wait_agreed("c")
        assert new_term > term, "the new incarnation leads in a new term"
        events = feed.drain()[first:]
        assert not [e for e in events if e["topic"] == "view.dead"], events


def test_follower_restarted_after_being_declared_dead_rejoins_without_an_election(make_cluster):
    cluster = make_cluster(3)
    start(cluster, {"a": 101, "b": 102, "c": 103})
    term, _ = cluster.wait_agreed("c")
    follower = cluster.daemons["a"]
    follower.kill()
    assert cluster.wait_agreed("c") == (term, "c")  # the others drop a
    follower.start()
    assert cluster.wait_agreed("c") == (term, "c"), "a lower node rejoining must not cause an election"
    assert {s["name"] for s in follower.request("view")["servers"]} == {"a", "b", "c"}
