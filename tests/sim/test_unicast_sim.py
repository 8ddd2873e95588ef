"""Simulation over unicast only (issue 11): no multicast at all, each node knows a few seeds.

The same invariants as tests/sim/test_simulation.py (one view, one (term, leader), the
highest-ranked leader, terms never backwards), on a network where a datagram reaches only
the address it was sent to (tests/simnet.py with `unicast`).
"""

from __future__ import annotations

import random

import pytest

from dsd.core.unicast import LOST_TIMEOUTS
from tests.sim.test_simulation import FT, HB, assert_settles, chaos_case, node_names, settled
from tests.simnet import FAST, SimCluster


def one_seed_each(n: int, seed: int, gap: tuple[float, float] = (0.0, 0.05)) -> SimCluster:
    """n nodes started one by one, `gap` apart, each knowing one seed: one started before it
    (the first one knows a later one)."""
    rng = random.Random(seed)
    cluster = SimCluster(seed=seed, unicast=True)
    names = node_names(n)
    for i, name in enumerate(names):
        seeds = [rng.choice(names[:i])] if i else [rng.choice(names[1:])]
        cluster.add(name, rng.choice((10, 50, 100, 100)), seeds=seeds)
        if i < n - 1:
            cluster.run_for(rng.uniform(*gap))
    return cluster


@pytest.mark.parametrize("seed", range(10))
def test_fifty_daemons_each_knowing_one_seed_agree_within_two_heartbeats_of_the_last_join(seed: int) -> None:
    cluster = one_seed_each(50, seed)
    assert all(len(cluster.seeds[name]) == 1 for name in cluster.nodes)
    took = assert_settles(cluster, f"50 daemons over unicast, seed={seed}", within=2 * HB)
    assert took <= 2 * HB


@pytest.mark.parametrize("seed", range(4))
def test_fifty_daemons_started_together_each_knowing_one_seed_agree(seed: int) -> None:
    cluster = one_seed_each(50, seed, gap=(0.0, 0.0))
    assert_settles(cluster, f"50 daemons started together over unicast, seed={seed}", within=2 * HB)


@pytest.mark.parametrize("seed", range(3))
def test_daemons_started_in_any_order_find_each_other_through_seeds_not_up_yet(seed: int) -> None:
    """A ring of seeds (each lists the next), started in random order, far apart: every node
    but the last starts before its seed is up, and finds it when the retry with backoff does."""
    rng = random.Random(seed)
    names = node_names(8)
    cluster = SimCluster(seed=seed, unicast=True)
    order = rng.sample(names, len(names))
    for name in order:
        cluster.add(name, 100, seeds=[names[(names.index(name) + 1) % len(names)]])
        cluster.run_for(rng.uniform(0, 4 * FAST.max_probe_interval))
    assert_settles(cluster, f"ring of seeds, order {order}", within=FAST.max_probe_interval + FT)


def test_a_heartbeat_costs_one_datagram_per_other_member() -> None:
    cluster = one_seed_each(10, 0)
    assert_settles(cluster, "10 daemons over unicast", within=2 * HB)
    before = cluster.sent.copy()
    cluster.run_for(10 * HB)
    sent = cluster.sent - before
    assert sent["heartbeat"] == 10 * 10 * 9  # 10 intervals, 10 daemons, 9 others each
    assert set(sent) == {"heartbeat"}, sent  # settled: nothing else, not even a seed's retry


def test_a_node_listing_itself_among_its_seeds_stops_probing_itself() -> None:
    cluster = SimCluster(unicast=True)
    names = node_names(3)
    for name in names:
        cluster.add(name, seeds=names)
    assert_settles(cluster, "3 daemons with one list", within=2 * HB)
    before = cluster.sent.copy()
    cluster.run_for(20 * FAST.max_probe_interval)
    assert (cluster.sent - before)["probe"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_a_partition_heals_over_unicast_as_fast_as_over_multicast(seed: int) -> None:
    """10 nodes, a 3|7 split for 4 failure_timeouts, then heal: the time to one view and one
    leader is within a heartbeat of what the same scenario takes on multicast."""
    took = {}
    for unicast in (False, True):
        rng = random.Random(seed)
        cluster = SimCluster(seed=seed, unicast=unicast)
        names = node_names(10)
        for i, name in enumerate(names):
            cluster.add(name, rng.choice((50, 100)), seeds=[names[i - 1]] if unicast else None)
        assert_settles(cluster, f"cold start unicast={unicast}", within=2 * FT)
        side = set(rng.sample(names, 3))
        cluster.partition(side, set(names) - side)
        cluster.run_for(4 * FT)
        assert not settled(cluster, True), "the partition split the view"
        cluster.heal()
        took[unicast] = assert_settles(cluster, f"heal seed={seed} unicast={unicast}", within=2 * FT)
    assert took[True] <= took[False] + HB, took


def test_a_partition_longer_than_heartbeats_go_to_lost_members_heals_through_the_seeds() -> None:
    cluster = SimCluster(unicast=True)
    names = node_names(6)
    for i, name in enumerate(names):
        cluster.add(name, seeds=[names[3] if i < 3 else names[0]])  # everyone's seed is on the other side
    assert_settles(cluster, "cold start", within=2 * FT)
    cluster.partition(set(names[:3]), set(names[3:]))
    cluster.run_for((LOST_TIMEOUTS + 2) * FT)
    cluster.heal()
    assert_settles(cluster, "heal after a long partition", within=FAST.max_probe_interval + FT)


@pytest.mark.parametrize("seed", range(24))
def test_chaos_10_over_unicast(seed: int) -> None:
    chaos_case(seed, 10, preempt=seed % 3 != 2, duration=2.5, final_loss=0.01 if seed % 4 == 3 else 0.0,
               unicast=True)


@pytest.mark.parametrize("seed", range(40))
def test_chaos_3_over_unicast(seed: int) -> None:
    chaos_case(seed, 3, preempt=seed % 3 != 2, duration=3.0, final_loss=0.01 if seed % 4 == 3 else 0.0,
               unicast=True)


@pytest.mark.parametrize("seed", range(2))
def test_chaos_50_over_unicast(seed: int) -> None:
    chaos_case(seed, 50, preempt=True, duration=1.2, unicast=True)
