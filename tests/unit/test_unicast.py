"""One Node over unicast (dsd.core.unicast), driven by hand on a fake clock: where each datagram goes."""

from __future__ import annotations

from dsd.core.actions import Action, Log, Resolve, Send
from dsd.core.node import Node
from dsd.core.unicast import LOST_TIMEOUTS, Unicast
from dsd.core.datagrams import Heartbeat, Leave, Members, Probe
from tests.unit.drivers import T, hb

ME = "10.0.0.1:5008"


def ip(i: int) -> str:
    return f"10.0.0.{i}:5008"


def node(seeds: list[str] = (), names: dict[str, str] | None = None, multicast: bool = False,
         name: str = "m", incarnation: int = 10, address: str = ME) -> tuple[Node, list[Action]]:
    """A started node at `address`; `seeds` are IPv4 "ip:port" entries, `names` entry -> host name."""
    entries = [(s, *s.split(":")[:1], int(s.split(":")[1]), True) for s in seeds]
    entries += [(entry, host, 5008, False) for entry, host in (names or {}).items()]
    n = Node(name, 100, incarnation, T, address=address, unicast=Unicast(entries, T, multicast))
    return n, n.start(0.0)


def sends(actions: list[Action], kind: type | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.message, kind))]


def targets(actions: list[Action], kind: type) -> list[str]:
    return sorted(a for s in sends(actions, kind) for a in (s.to or ("<group>",)))


def join(n: Node, name: str, address: str, at: float, priority: int = 100) -> list[Action]:
    return n.receive(hb(name, priority), address, at, direct=True)


def test_a_seed_is_probed_at_start_by_unicast_and_nothing_goes_to_the_group() -> None:
    _, out = node([ip(2), ip(3)])
    assert targets(out, Probe) == [ip(2), ip(3)]
    assert all(s.to is not None for s in sends(out))


def test_an_absent_seed_is_retried_with_backoff_up_to_the_cap_and_not_while_present() -> None:
    n, _ = node([ip(2)])
    probes = []
    now = 0.0
    while now < 10.0:
        now = n.next_deadline()
        probes += [now] * len(targets(n.tick(now), Probe))
    # discovery_timeout 0.25 doubling to max_probe_interval 2.0: 0, then +0.25, +0.5, +1, +2, +2...
    assert [p for p in probes if ip(2)] == [0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75]
    quiet = []
    for t in (10.0, 10.25, 10.5, 11.0, 12.0, 14.0):
        join(n, "a", ip(2), t)
        quiet += n.tick(t)
    assert targets(quiet, Probe) == []


def test_a_seed_that_falls_silent_is_retried_from_the_shortest_interval_again() -> None:
    n, _ = node([ip(2)])
    join(n, "a", ip(2), 0.1)
    for t in (0.25, 0.5, 0.75):
        n.tick(t)
    out = n.tick(1.1) + n.tick(1.2)  # dead at 1.1 (failure_timeout 1.0 after 0.1)
    assert targets(out, Probe) == [ip(2)]
    assert n.next_deadline() <= 1.2 + T.discovery_timeout


def test_a_unicast_probe_is_answered_to_the_prober_alone_with_a_heartbeat_and_the_member_list() -> None:
    n, _ = node([ip(2)])
    join(n, "a", ip(2), 0.05)
    out = n.receive(Probe("b", 1, 100), ip(3), 0.1, direct=True)
    assert targets(out, Heartbeat) == [ip(3)] and targets(out, Members) == [ip(3)]
    listed = [m for s in sends(out, Members) for m in s.message.members]
    assert listed == [("m", ME, 10), ("a", ip(2), 1)]  # ourselves and the others, not b itself


def test_a_member_list_makes_the_node_probe_only_the_members_it_does_not_know_and_each_once() -> None:
    n, _ = node([ip(2)])
    join(n, "a", ip(2), 0.05)
    members = Members("a", 1, 100, (("a", ip(2), 1), ("b", ip(3), 4), ("c", ip(4), 5), ("m", ME, 10)))
    out = n.receive(members, ip(2), 0.1, direct=True)
    assert targets(out, Probe) == [ip(3), ip(4)]
    again = n.receive(members, ip(2), 0.2, direct=True)
    assert targets(again, Probe) == []  # asked already, within suspect_timeout
    later = n.receive(members, ip(2), 0.1 + T.suspect_timeout, direct=True)
    assert targets(later, Probe) == [ip(3), ip(4)]
    assert n.peers.get("b") is None, "a member joins the view when it answers, not when it is named"


def test_a_daemon_tells_every_member_it_adds_the_members_it_knows() -> None:
    n, _ = node([ip(2)])
    join(n, "a", ip(2), 0.05)
    out = join(n, "b", ip(3), 0.1)  # a heartbeat from a member it did not know
    assert targets(out, Members) == [ip(3)]
    assert [m[0] for s in sends(out, Members) for m in s.message.members] == ["m", "a"]
    assert targets(join(n, "b", ip(3), 0.2), Members) == []  # once, when it joins


def test_cluster_wide_messages_go_to_each_member_and_heartbeats_to_lost_members_for_a_while() -> None:
    n, _ = node([ip(2)])
    join(n, "a", ip(2), 0.0)
    join(n, "b", ip(3), 0.0)
    out = n.tick(0.25)
    assert targets(out, Heartbeat) == [ip(2), ip(3)]
    for t in (0.5, 0.75, 1.0):
        join(n, "a", ip(2), t)
        n.tick(t)
    join(n, "a", ip(2), 1.25)
    out = n.tick(1.25)  # b has been silent for failure_timeout: dead, and lost
    assert n.peers.get("b") is None and targets(out, Heartbeat) == [ip(2), ip(3)]
    end = 1.0 + LOST_TIMEOUTS * T.failure_timeout
    t = 1.25
    while t < end + 1:
        t += 0.25
        join(n, "a", ip(2), t)
        beat = targets(n.tick(t), Heartbeat)
        assert beat == ([ip(2), ip(3)] if t < end else [ip(2)]), t
    assert targets(n.leave(t), Leave) == [ip(2), ip(2)]  # a LEAVE goes to members only (twice)


def test_with_multicast_too_a_member_heard_by_multicast_gets_cluster_messages_that_way_only() -> None:
    n, out = node([ip(2)], multicast=True)
    assert targets(out, Probe) == [ip(2), "<group>"]
    n.receive(hb("lan", 100), ip(5), 0.05)  # by multicast
    join(n, "remote", ip(2), 0.05)
    assert targets(n.tick(0.25), Heartbeat) == [ip(2), "<group>"]


def test_a_name_is_resolved_before_each_try_and_a_failure_is_a_warning_once_then_retried() -> None:
    n, out = node(names={"peer-a": "peer-a.example"})
    assert [a for a in out if isinstance(a, Resolve)] == [Resolve("peer-a", "peer-a.example", 5008)]
    assert targets(out, Probe) == []
    failed = n.unresolved("peer-a", "Name or service not known", 0.01)
    assert [(a.level, "peer-a.example" in a.text) for a in failed if isinstance(a, Log)] == [("warning", True)]
    retry = n.tick(n.next_deadline())
    assert [a.host for a in retry if isinstance(a, Resolve)] == ["peer-a.example"]
    again = n.unresolved("peer-a", "Name or service not known", n.next_deadline() or 0.3)
    assert [a.level for a in again if isinstance(a, Log)] == ["debug"]  # said once per failing streak
    at = n.next_deadline()
    n.tick(at)
    found = n.resolved("peer-a", [ip(7), ip(8)], at + 0.01)
    assert targets(found, Probe) == [ip(7), ip(8)]
    assert [a.level for a in found if isinstance(a, Log)] == ["info"]


def test_a_seed_at_our_own_address_is_recognised_and_left_alone() -> None:
    n, out = node([ME, ip(2)])
    assert targets(out, Probe) == [ME, ip(2)]
    n.receive(Probe("m", 10, 100), ME, 0.001, direct=True)  # our own probe, back from our own address
    later = []
    for t in (0.01, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0):
        join(n, "a", ip(2), t)
        later += n.tick(t)
    assert targets(later, Probe) == []


def test_a_namesake_learns_of_the_holder_from_any_member_and_probes_it() -> None:
    holder_side, _ = node([ip(2)], name="x", incarnation=5)
    join(holder_side, "a", ip(2), 0.0)
    # A member refuses the second "x" (incarnation 9 while 5 is alive) but tells it who is there.
    member, _ = node([ip(1)], name="a", incarnation=1, address=ip(2))
    member.receive(hb("x", 100, inc=5), ME, 0.0, direct=True)
    out = member.receive(Probe("x", 9, 100), ip(9), 0.1, direct=True)
    assert member.peers.get("x").incarnation == 5
    listed = [m for s in sends(out, Members) for m in s.message.members]
    assert ("x", ME, 5) in listed and targets(out, Members) == [ip(9)]
    newcomer, _ = node([ip(2)], name="x", incarnation=9, address=ip(9))
    probes = newcomer.receive(Members("a", 1, 100, tuple(listed)), ip(2), 0.1, direct=True)
    assert ME in targets(probes, Probe)
