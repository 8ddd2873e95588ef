"""`[metrics] listen`: every daemon of a real cluster serves Prometheus metrics that move.

Scrapes are parsed with prometheus_client's own text parser. The tests run in file order
on one cluster; the last one kills its leader.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from dsd import __version__, auth
from dsd.client import DaemonError
from dsd.metrics import REFUSALS
from tests.chatclients import request
from tests.cluster import Cluster, Daemon, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE
from tests.scrape import Scrape, listen_address, scrape

GAUGES = ["dsd_members", "dsd_is_leader", "dsd_term", "dsd_chat_clients", "dsd_chat_last_seq", "dsd_build_info"]
COUNTERS = ["dsd_leader_changes", "dsd_elections", "dsd_datagrams_received", "dsd_datagrams_sent",
            "dsd_datagrams_rejected", "dsd_chat_committed_entries", "dsd_chat_proposals_refused",
            "dsd_requests_refused"]
HISTOGRAMS = ["dsd_failure_detection_seconds", "dsd_chat_commit_latency_seconds"]


def add(cluster: Cluster, name: str, priority: int, host: int) -> Daemon:
    return cluster.add(name, priority=priority, host=host, metrics={"listen": listen_address(cluster, host)})


@pytest.fixture(scope="module")
def metrics_cluster() -> Iterator[Cluster]:
    """a, b, c (priorities 101-103) with metrics on, agreed on c."""
    with Cluster(3, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        for i, name in enumerate("abc", start=1):
            add(cluster, name, 100 + i, i)
        cluster.wait_agreed("c")
        yield cluster


def scrapes(cluster: Cluster) -> dict[str, Scrape]:
    result = {}
    for daemon in cluster.live():
        one = scrape(daemon)
        assert one is not None, f"{daemon.name} serves no metrics\n{daemon.logs()[-2000:]}"
        result[daemon.name] = one
    return result


def test_every_name_is_there_from_the_first_scrape_with_every_label_value(metrics_cluster):
    for name, s in scrapes(metrics_cluster).items():
        for family in GAUGES:
            assert s.families[family].type == "gauge", (name, family)
        for family in COUNTERS:
            assert s.families[family].type == "counter", (name, family)
        for family in HISTOGRAMS:
            assert s.families[family].type == "histogram", (name, family)
            assert s.value(f"{family}_count") >= 0
            assert s.value(f"{family}_bucket", le="+Inf") == s.value(f"{family}_count")
        assert s.labels("dsd_members", "state") == {"alive", "suspect"}
        assert s.labels("dsd_datagrams_rejected", "reason") == {*auth.REASONS, "refused"}
        assert s.labels("dsd_requests_refused", "reason") >= set(REFUSALS)
        assert s.value("dsd_build_info", version=__version__) == 1
        assert s.value("dsd_members", state="alive") == 3
        assert s.value("dsd_members", state="suspect") == 0
        assert s.value("dsd_is_leader") == (name == "c")
        assert s.value("dsd_term") >= 1
        assert s.value("dsd_datagrams_received_total") > 0 and s.value("dsd_datagrams_sent_total") > 0
        assert "process_resident_memory_bytes" in s.families  # prometheus_client's process collector


def test_twenty_chat_messages_raise_committed_entries_everywhere(metrics_cluster):
    before = scrapes(metrics_cluster)
    a = metrics_cluster.daemons["a"]
    user, session = f"m{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    request(a, "chat.join", user=user, session=session)
    assert scrape(a).value("dsd_chat_clients") == 1
    for i in range(20):
        request(a, "chat.send", user=user, session=session, id=f"{user}-{i}", text=f"message {i}")
    request(a, "chat.leave", user=user, session=session)

    def committed_everywhere() -> dict[str, Scrape] | None:
        now = scrapes(metrics_cluster)
        grew = all(now[n].value("dsd_chat_committed_entries_total")
                   >= before[n].value("dsd_chat_committed_entries_total") + 20 for n in now)
        same_seq = len({s.value("dsd_chat_last_seq") for s in now.values()}) == 1
        return now if grew and same_seq else None

    after = wait_until(committed_everywhere, 10, interval=0.1, what="20 more committed entries on every daemon")
    assert after["a"].value("dsd_chat_last_seq") >= before["a"].value("dsd_chat_last_seq") + 22  # join, 20, leave
    latency = "dsd_chat_commit_latency_seconds"
    assert after["a"].value(f"{latency}_count") - before["a"].value(f"{latency}_count") == 20
    assert 0 < after["a"].value(f"{latency}_sum") - before["a"].value(f"{latency}_sum") < 20 * 5
    assert after["a"].value("dsd_chat_clients") == 0
    for name in "bc":  # the requests were taken by a: no latency observed elsewhere
        assert after[name].value(f"{latency}_count") == before[name].value(f"{latency}_count")


def test_refused_requests_are_counted_by_code(metrics_cluster):
    a = metrics_cluster.daemons["a"]
    before = scrape(a).value("dsd_requests_refused_total", reason="not_joined")
    with pytest.raises(DaemonError) as refused:
        request(a, "chat.send", user="nobody", session=uuid.uuid4().hex, id="x1", text="hello")
    assert refused.value.code == "not_joined"
    assert scrape(a).value("dsd_requests_refused_total", reason="not_joined") == before + 1


def test_taken_port_stops_dsd_with_an_error_naming_the_key(metrics_cluster):
    a = metrics_cluster.daemons["a"]
    taken = a.sections["metrics"]["listen"]
    clash = Daemon(metrics_cluster, "clash", a.host, 50, {"metrics": {"listen": taken}})
    result = clash.run(timeout=30)
    assert result.returncode == 1, result.stderr
    assert f'[metrics] listen = "{taken}": cannot listen there' in result.stderr
    assert str(clash.config) in result.stderr
    assert "started" not in result.stderr  # it stopped before joining the cluster
    assert scrape(a) is not None  # the daemon that holds the port is unaffected


def test_kill_9_of_the_leader_moves_the_leader_and_member_metrics(metrics_cluster):
    before = scrapes(metrics_cluster)
    metrics_cluster.daemons["c"].kill()  # kill -9

    def settled() -> dict[str, Scrape] | None:
        now = scrapes(metrics_cluster)
        if any(s.value("dsd_members", state="alive") != 2 for s in now.values()):
            return None
        if sorted(n for n, s in now.items() if s.value("dsd_is_leader") == 1) != ["b"]:
            return None
        # Both survivors have come to follow a new leader (a may take b's word a moment after b leads).
        if any(now[n].value("dsd_leader_changes_total") <= before[n].value("dsd_leader_changes_total") for n in now):
            return None
        return now

    after = wait_until(settled, 15, interval=0.1, what="b leading a and b, leader changes counted on both")
    assert after["a"].value("dsd_term") == after["b"].value("dsd_term") > before["b"].value("dsd_term")
    for name in "ab":
        assert after[name].value("dsd_members", state="suspect") == 0
        detections = after[name].value("dsd_failure_detection_seconds_count")
        assert detections == before[name].value("dsd_failure_detection_seconds_count") + 1
        silence = after[name].value("dsd_failure_detection_seconds_sum") - \
            before[name].value("dsd_failure_detection_seconds_sum")
        timeout = metrics_cluster.daemons[name].sections["timing"]["failure_timeout"]
        assert timeout <= silence < timeout + 1.0  # declared dead failure_timeout after the last heartbeat
    assert after["a"].value("dsd_is_leader") == 0
