import signal

from tests.cluster import wait_until


def test_three_hosts_agree_and_fail_over(make_cluster):
    cluster = make_cluster(3)
    for i, name in enumerate(["a", "b", "c"], start=1):
        cluster.add(name, priority=100 + i)
    term, leader = cluster.wait_agreed("c")
    cluster.daemons["c"].kill()
    new_term, new_leader = cluster.wait_agreed("b")
    assert new_term > term
