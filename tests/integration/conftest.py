"""Fixtures for tests with real dsd processes on private hosts."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from tests.cluster import Cluster
from tests.netns import namespaces_unavailable

NAMESPACES_UNAVAILABLE = namespaces_unavailable()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Hosts a, b and c (priorities 101, 102, 103) running and agreed on leader c: one per module."""
    with Cluster(3, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        for i, name in enumerate(["a", "b", "c"], start=1):
            cluster.add(name, priority=100 + i)
        cluster.wait_agreed("c")
        yield cluster


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Cluster]]:
    """make_cluster(hosts, partitions=False): a Cluster, always cleaned up.

    Without namespaces the daemons share loopback; tests that cut hosts off are
    skipped with the reason, except under CI, where that is a failure.
    """
    clusters: list[Cluster] = []

    def make(hosts: int, partitions: bool = False) -> Cluster:
        if NAMESPACES_UNAVAILABLE and partitions:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run partition tests: {NAMESPACES_UNAVAILABLE}")
            pytest.skip(NAMESPACES_UNAVAILABLE)
        cluster = Cluster(hosts, use_namespaces=NAMESPACES_UNAVAILABLE is None)
        clusters.append(cluster)
        return cluster.__enter__()

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()
