"""What an election costs in datagrams as the cluster grows (simulated, deterministic).

    python -m bench.election_messages [--sizes 3 5 10 20 50] [--seeds 3] [--loss 0 0.05]

Runs the pure cores on the simulated network of tests/simnet.py (virtual clock,
FAST timings: heartbeat 50 ms, failure_timeout 250 ms, discovery 50 ms), so nothing
touches a real interface and every figure is reproducible from its seed. For each
cluster size n (priorities drawn from {50, 100, 100}, so ties are broken by name):

- cold start: all n cores start at the same instant, until the cluster is settled;
- leader crash: in a settled cluster the leader dies, until the survivors settle;
- leader leave: the leader shuts down cleanly (LEAVE), until the others settle.

"Settled" is the invariant of DESIGN.md section 2 (one view, all alive, one
(term, leader), the highest-ranked live node leads) with every other node a
follower, checked every 1 ms of virtual time. Each cell is the mean over the seeds
of the datagrams *sent* (one multicast = one datagram, whatever the group size)
from the fault until settled. ELECTION + ANSWER + COORDINATOR is the election
proper; heartbeats and probes are membership traffic that runs anyway
(the PROBE answers of a cold start are n heartbeats per probe: O(n^2) in all).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # python bench/election_messages.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.simnet import ELECTION_TYPES, FAST, SimCluster  # noqa: E402

TYPES = ("probe", "heartbeat", "leave", "election", "answer", "coordinator")
SCENARIOS = ("cold start", "leader crash", "leader leave")


def names(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(n)]


def run(scenario: str, n: int, seed: int, loss: float) -> tuple[float, Counter[str]]:
    """One trial: (virtual seconds until settled, datagrams sent by type)."""
    rng = random.Random(seed * 1000 + n)
    priorities = {name: rng.choice((50, 100, 100)) for name in names(n)}
    cluster = SimCluster(seed=seed, loss=loss)

    def start_all() -> None:
        for name in names(n):
            cluster.add(name, priorities[name])

    action: Callable[[], object] = start_all
    if scenario != "cold start":
        start_all()
        if not cluster.wait_for(cluster.settled, 2.0):
            raise RuntimeError(f"n={n} seed={seed}: no agreement before the {scenario}\n{cluster.describe()}")
        cluster.run_for(2 * FAST.heartbeat_interval)
        leader = cluster.live()[0].leader
        assert leader is not None
        action = (lambda: cluster.crash(leader)) if scenario == "leader crash" else (lambda: cluster.stop(leader))
    reached, took, sent = cluster.measure(action, cluster.settled, within=5.0)
    if not reached:
        raise RuntimeError(f"n={n} seed={seed}: {scenario} did not settle\n{cluster.describe()}")
    return took, sent


def fmt(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.1f}"


def table(sizes: list[int], seeds: int, loss: float) -> str:
    head = ["n", "scenario", "ms", *(t.upper() for t in TYPES), "election", "elec/node", "all/node"]
    rows = [head]
    for scenario in SCENARIOS:
        for n in sizes:
            trials = [run(scenario, n, seed, loss) for seed in range(seeds)]
            mean = {t: statistics.mean(sent[t] for _, sent in trials) for t in TYPES}
            election = sum(mean[t] for t in ELECTION_TYPES)
            rows.append([
                str(n), scenario, f"{1000 * statistics.mean(took for took, _ in trials):.0f}",
                *(fmt(mean[t]) for t in TYPES),
                fmt(election), f"{election / n:.2f}", f"{sum(mean.values()) / n:.1f}",
            ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 10, 20, 50])
    parser.add_argument("--seeds", type=int, default=3, help="trials per cell (seeds 0..N-1)")
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.05], help="datagram loss rates")
    args = parser.parse_args(argv)
    print(f"datagrams sent from the event until settled; mean of {args.seeds} seeds; timing {FAST}")
    for loss in args.loss:
        print(f"\nloss {loss:.0%}\n")
        print(table(args.sizes, args.seeds, loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
