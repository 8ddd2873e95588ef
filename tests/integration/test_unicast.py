"""Real daemons where multicast does not reach (issue 11): two subnets joined by a router.

Hosts 1-2 are on 10.77.1.0/24 and hosts 3-4 on 10.77.2.0/24 (tests/netns.py RoutedNetwork):
the router forwards unicast and no multicast. Every daemon runs with multicast = false and
lists one peer only, on the other subnet; the rest of the cluster it learns from that peer.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.chatclients import Chats, present
from tests.cluster import Cluster, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE
from tests.netns import RoutedNetwork

# name -> (host, priority, the one peer it lists: a host on the other subnet), in start order:
# c and d start first and both list a, which is not up yet.
DAEMONS = {"c": (3, 103, 1), "d": (4, 104, 1), "a": (1, 101, 3), "b": (2, 102, 4)}


@pytest.fixture
def routed() -> Iterator[Cluster]:
    if NAMESPACES_UNAVAILABLE:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the routed-subnet tests: {NAMESPACES_UNAVAILABLE}")
        pytest.skip(NAMESPACES_UNAVAILABLE)
    with Cluster(4, network=RoutedNetwork(4, first=2)) as cluster:
        net = cluster.net
        assert isinstance(net, RoutedNetwork)
        for name, (host, priority, peer) in DAEMONS.items():
            # bootstrap_expect: a daemon that starts before its peer leads alone, and c and d would
            # each form the chat's voters (two chat clusters, never merged).
            cluster.add(name, priority=priority, host=host, chat={"client_timeout": 2.0, "bootstrap_expect": 4},
                        cluster={"multicast": False, "peers": [net.address(peer)]})
            if name == "d":  # alone on their subnet, their peer absent: each its own leader, retrying a
                cluster.wait_agreed("c", among=["c"])
                cluster.wait_agreed("d", among=["d"])
        yield cluster


def test_two_subnets_without_multicast_form_one_cluster_fail_over_heal_and_chat(routed: Cluster) -> None:
    cluster, net = routed, routed.net
    assert isinstance(net, RoutedNetwork)
    term, _ = cluster.wait_agreed("d", timeout=15)
    for daemon in cluster.daemons.values():
        started = next(line for line in daemon.logs().splitlines() if "started:" in line)
        assert "unicast on 0.0.0.0:5008" in started and "group" not in started, started
    hosts = {name: host for name, (host, _, _) in DAEMONS.items()}
    for server in cluster.daemons["a"].request("view")["servers"]:  # c and d as a heard them: over the router
        assert server["address"] == f"{net.address(hosts[server['name']])}:5008", server

    # kill -9 of the leader: one new leader everywhere.
    cluster.daemons["d"].kill()
    new_term, _ = cluster.wait_agreed("c", timeout=10, among=["a", "b", "c"])
    assert new_term > term
    cluster.daemons["d"].start()  # it lists a, on the other subnet, and comes back through it
    cluster.wait_agreed("d", timeout=15)

    # Subnet 2 cut off from the router: each side agrees on its own; healed: one leader again.
    net.cut_subnet(2)
    cluster.wait_agreed("b", timeout=10, among=["a", "b"])
    cluster.wait_agreed("d", timeout=10, among=["c", "d"])
    net.heal_subnet(2)
    cluster.wait_agreed("d", timeout=15)

    # A chat message sent on subnet 1 reaches a user on subnet 2.
    chats = Chats(cluster)
    try:
        alice = chats.piped(1, "alice", "a")
        dave = chats.piped(4, "dave", "d")
        wait_until(lambda: present(cluster, "alice", "dave"), 20, what="alice and dave present")
        alice.write("hello across the router")
        wait_until(lambda: dave.seen("alice", "hello across the router"), 15, what="dave seeing alice's line")
    finally:
        chats.close()


@pytest.fixture
def hosts_file(make_cluster) -> Iterator[tuple[Cluster, Path]]:
    """Two private hosts; host 1 sees its own /etc/hosts (`ip netns exec` mounts /etc/netns/NS/hosts)."""
    cluster = make_cluster(2, partitions=True)
    parent = Path("/etc/netns")
    made_parent = not parent.exists()
    directory = parent / cluster.net.hosts[0]
    directory.mkdir(parents=True)
    try:
        hosts = directory / "hosts"
        hosts.write_text("127.0.0.1 localhost\n")
        yield cluster, hosts
    finally:
        shutil.rmtree(directory)
        if made_parent:
            parent.rmdir()


def test_a_peer_name_that_does_not_resolve_is_a_warning_and_retried_until_it_does(hosts_file) -> None:
    cluster, hosts = hosts_file
    a = cluster.add("a", priority=101, cluster={"multicast": False, "peers": ["peer-b"]})
    cluster.add("b", priority=102, cluster={"multicast": False, "peers": ["10.77.0.99"]})  # nobody there
    wait_until(lambda: "cannot resolve 'peer-b'" in a.logs(), 10, what="a's warning")
    cluster.wait_agreed("a", among=["a"])
    cluster.wait_agreed("b", among=["b"])
    with open(hosts, "a") as file:  # in place: the mount shows the same file
        file.write("10.77.0.2 peer-b\n")
    cluster.wait_agreed("b", timeout=10)
    warnings = [line for line in a.logs().splitlines() if "WARNING" in line and "cannot resolve 'peer-b'" in line]
    assert a.running and len(warnings) == 1, a.logs()  # once per failing streak, however many retries
    assert "'peer-b' resolves again, to 10.77.0.2:5008" in a.logs()


def test_multicast_on_a_segment_and_peers_for_a_remote_site_make_one_cluster_hearing_nothing_twice(
        make_cluster) -> None:
    """a and b share subnet 1 (multicast), c is alone on subnet 2; all keep multicast on and list a
    peer of the other site. With a secret, a datagram heard both ways would be refused as replayed."""
    if NAMESPACES_UNAVAILABLE:
        pytest.skip(NAMESPACES_UNAVAILABLE)
    with Cluster(3, network=RoutedNetwork(3, first=2)) as cluster:
        key = cluster.workdir / "dsd.key"
        key.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
        key.chmod(0o600)
        net = cluster.net
        for name, host, peer in (("a", 1, 3), ("b", 2, 3), ("c", 3, 1)):
            cluster.add(name, priority=100 + host, host=host,
                        cluster={"peers": [net.address(peer)], "secret_file": str(key)})
        cluster.wait_agreed("c", timeout=15)
        view = {s["name"]: s["address"] for s in cluster.daemons["c"].request("view")["servers"]}
        assert view == {"a": "10.77.1.1:5008", "b": "10.77.1.2:5008", "c": "10.77.2.3:5008"}
        received = {d.name: d.request("stats")["datagrams_received"] for d in cluster.live()}
        wait_until(lambda: all(d.request("stats")["datagrams_received"] > received[d.name] + 40
                               for d in cluster.live()), 10, what="some heartbeats more")
        for daemon in cluster.live():
            by_reason = daemon.request("stats")["datagrams_rejected_by_reason"]
            assert by_reason["replayed"] == 0, (daemon.name, by_reason)
