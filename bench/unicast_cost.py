"""What heartbeats cost over unicast as the cluster grows (issue 11), at the default timings.

    python -m bench.unicast_cost [--sizes 10 50 200] [--rounds 2000] [--simulate-up-to 50]

Over multicast a heartbeat is one datagram whatever n; over unicast each daemon sends
its heartbeat to each of the n-1 others. Two parts, neither touching a network:

- *datagrams*, counted on the simulated unicast network of tests/simnet.py: n daemons
  (each listing one seed) settle, then every datagram sent during 10 heartbeat intervals
  is counted, and so is everything sent for the join of one more daemon (up to
  `--simulate-up-to` daemons: simulating 200 takes about 8 minutes of CPU, since every core
  input costs O(n) in `Membership.next_deadline`);
- *CPU*, measured here: what one heartbeat costs its receiver (HMAC check, decode,
  `Node.receive` against a view of n members, `next_deadline`) and its sender (one seal, then one
  UDP `sendto` per member, to a socket of this process on 127.0.0.1: loopback only), each
  the median of `--rounds`; times the datagrams per second at heartbeat_interval 0.2 s.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import time

from bench.common import base_parser, before_run, progress, run_main, table
from dsd import auth
from dsd.core import datagrams
from dsd.core.node import Node
from dsd.core.timing import Timing
from tests.simnet import SimCluster

DEFAULT = Timing()  # heartbeat 0.2 s, failure 1 s, discovery 0.2 s
SEALED = auth.Sealer(auth.Keyring((bytes(range(32)),)))


def simulated(n: int, seed: int = 1) -> tuple[float, int | None]:
    """(datagrams one daemon sends per heartbeat interval, datagrams the join of one more daemon costs)."""
    rng = random.Random(seed)
    cluster = SimCluster(seed=seed, timing=DEFAULT, unicast=True)
    names = [f"n{i:03d}" for i in range(n + 1)]
    for i, name in enumerate(names[:n]):
        cluster.add(name, 100, seeds=[rng.choice(names[:i])] if i else [names[1]])
        cluster.run_for(0.01)
    if not cluster.wait_for(cluster.settled, 10.0, step=0.05):
        raise RuntimeError(f"{n} simulated daemons did not settle")
    before = sum(cluster.sent.values())
    cluster.run_for(10 * DEFAULT.heartbeat_interval)
    per_interval = (sum(cluster.sent.values()) - before) / 10 / n
    before = sum(cluster.sent.values())
    cluster.add(names[n], 100, seeds=[names[0]])
    if not cluster.wait_for(cluster.settled, 10.0, step=0.01):
        raise RuntimeError(f"the join of a daemon into {n} did not settle")
    join = sum(cluster.sent.values()) - before
    return per_interval, join


def receive_cost(n: int, rounds: int) -> float:
    """Seconds of CPU for one sealed heartbeat arriving at a daemon whose view holds n-1 members."""
    opener = auth.Opener(SEALED.keyring, own_name="me")
    node = Node("me", 100, 1, DEFAULT, address="10.0.0.1:5008")
    node.start(0.0)
    for i in range(n - 1):
        node.receive(datagrams.Heartbeat(f"p{i:03d}", 1, 100, 1, "p000", "follower", "tcp://10.0.0.2:5555", 0),
                     f"10.0.{i // 250}.{i % 250 + 2}:5008", 0.001, True)
    samples = []
    for k in range(rounds):
        data = SEALED.seal(datagrams.Heartbeat("p001", 1, 100, 1, "p000", "follower", "tcp://10.0.0.2:5555", k))
        t0 = time.perf_counter()
        node.receive(opener.open(data), "10.0.0.3:5008", 0.002 + k * 1e-6, True)
        node.next_deadline()  # the service re-arms its timer after every input
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def send_cost(n: int, rounds: int) -> float:
    """Seconds of CPU to seal one heartbeat and send it to n-1 addresses (all 127.0.0.1: loopback only)."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    to = b.getsockname()
    message = datagrams.Heartbeat("me", 1, 100, 1, "p000", "follower", "tcp://10.0.0.1:5555", 0)
    samples = []
    try:
        for _ in range(max(1, rounds // n)):
            t0 = time.perf_counter()
            data = SEALED.seal(message)
            for _ in range(n - 1):
                a.sendto(data, to)  # UDP never blocks on a full receiver: it drops
            samples.append(time.perf_counter() - t0)
            while True:
                try:
                    b.recv(2048)
                except BlockingIOError:
                    break
    finally:
        a.close()
        b.close()
    return statistics.median(samples)


def run(args: argparse.Namespace) -> str:
    note = before_run(args.wait_quiet)
    size = len(SEALED.seal(datagrams.Heartbeat("n001", 1 << 60, 100, 12, "n200", "follower", "tcp://10.0.0.1:40123", 999)))
    rows = []
    for n in args.sizes:
        progress(f"  {n} daemons: simulating, then timing {args.rounds} heartbeats")
        per_interval, join = simulated(n) if n <= args.simulate_up_to else (float(n - 1), None)
        per_second = (n - 1) / DEFAULT.heartbeat_interval
        cpu = per_second * receive_cost(n, args.rounds) + send_cost(n, args.rounds) / DEFAULT.heartbeat_interval
        rows.append([
            n, f"{per_interval:.0f}" + ("" if join is not None else " (n-1, not simulated)"), f"{n * (n - 1) / DEFAULT.heartbeat_interval:,.0f}",
            f"{per_second:,.0f} in, {per_second:,.0f} out",
            f"{per_second * size * 8 / 1000:,.0f} kbit/s each way",
            f"{100 * cpu:.1f} %", f"{join:,}" if join is not None else "not simulated",
        ])
    headers = ["daemons", "datagrams per daemon per heartbeat (simulated)", "cluster-wide datagrams/s",
               "per daemon, datagrams/s", "per daemon, bandwidth", "per daemon, CPU for heartbeats",
               "datagrams to join one more daemon (simulated)"]
    return "\n".join([
        "### What each heartbeat costs over unicast (heartbeat_interval 0.2 s)",
        "",
        f"Command: `python -m bench.unicast_cost --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds} "
        f"--simulate-up-to {args.simulate_up_to}`. "
        f"{note}.",
        "",
        table(headers, rows),
        "",
        f"A sealed heartbeat is {size} bytes (UDP/IP headers not counted). Over multicast each daemon sends "
        f"1 datagram per interval whatever n, and receives n-1. CPU = datagrams received per second × the "
        f"measured cost of one (HMAC, decode, core, timer deadline; not the service's own bookkeeping) + one seal and n-1 UDP sendto per interval "
        f"(measured over loopback); one core of this machine = 100 %.",
    ])


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200], help="cluster sizes (default 10 50 200)")
    p.add_argument("--rounds", type=int, default=2000, help="heartbeats timed per size (default 2000)")
    p.add_argument("--simulate-up-to", type=int, default=50, metavar="N",
                   help="simulate clusters of at most N daemons (default 50)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
