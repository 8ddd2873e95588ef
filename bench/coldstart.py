"""Cold start: N daemons launched together until all agree on one leader.

    python -m bench.coldstart [--trials 5] [--sizes 3 5 10] [--unicast]

N daemons (priorities 101..100+N) on N private hosts at the default timings.
Each trial subscribes to every daemon's feed before launching (ZeroMQ retries
the connect until the feed is bound), notes the wall clock, launches the N
processes one after the other, and waits until every daemon's latest `leader`
event names the highest-ranked daemon, then confirms through the control
sockets that all see each other alive and agree, and watches 0.5 s more for a
late change. The figure is the last of those `leader` events (daemon
timestamps) minus the launch time.

Split: *processes up* is launch -> the last daemon's "started" log line (the
interpreter, imports, sockets bound); *last up -> agreed* is that -> agreement, which by
design includes one discovery_timeout (0.2 s) of listening for answers to the
start-up PROBE before the first election.

Baselines, measured in the same run through the same `ip netns exec` prefix:
`python -m dsd --version` (interpreter + dsd's CLI imports) and
`python -c "import dsd.service"` (adds asyncio and pyzmq), median of 5 runs each.

`--unicast`: the same with `[cluster] multicast = false`, each daemon listing one peer
(host 1 lists host 2, every other host lists host 1; issue 11).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime

from bench.common import (
    DEFAULT_TIMING, BenchError, Feeds, add_daemon, base_parser, before_run, median, met, ms, p95,
    private_cluster, progress, run_main, table,
)
from tests.cluster import Cluster, Daemon

GOAL = {5: 1.0}  # s, issue 2: 5 daemons to one agreed leader
STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO dsd: (started):", re.M)
LEADER_IS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ INFO dsd: leader is now (\S+) ", re.M)


def baseline(cluster: Cluster, code: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cluster.prefix(1) + [sys.executable, *code], check=True, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t0)
    return median(times)


def log_times(daemon: Daemon, pattern: re.Pattern, after: float) -> list[tuple[float, str]]:
    """(wall time, group 2) of the daemon's log lines matching `pattern` since `after` (ms resolution)."""
    found = []
    for match in pattern.finditer(daemon.logs()):
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= after - 0.002:
            found.append((at, match.group(2) if pattern.groups >= 2 else ""))
    return found


def trial(cluster: Cluster, daemons: list[Daemon]) -> tuple[float, float | None, int]:
    """(launch -> agreed, launch -> all processes up, daemons timed from their log) for one cold start.

    A daemon that starts last can learn the leader a few ms after binding its feed,
    before our subscription has reached it (ZeroMQ's slow joiner); its time then comes
    from its "leader is now" log line (ms resolution) instead.
    """
    expected = daemons[-1].name
    with Feeds() as feeds:
        for daemon in daemons:
            feeds.connect(daemon)
        t0 = time.time()
        for daemon in daemons:
            daemon.start()

        def feed_latest() -> dict[str, float]:
            latest: dict[str, float] = {}
            for daemon in daemons:
                events = feeds.since(0, daemon.name, "leader")
                if events and events[-1].body.get("leader") == expected:
                    latest[daemon.name] = events[-1].time
            return latest

        try:
            deadline = time.monotonic() + 20
            next_check = time.monotonic() + 0.25
            while len(feed_latest()) < len(daemons):
                feeds.drain(0.01)
                if time.monotonic() >= next_check:  # the feed may have missed an early event
                    next_check = time.monotonic() + 0.25
                    if cluster.agreed(expected):
                        break
                if time.monotonic() >= deadline:
                    raise BenchError(f"no agreement on {expected} 20 s after launch")
            cluster.wait_agreed(expected, timeout=10)
            settle_end = time.monotonic() + 0.5
            while time.monotonic() < settle_end:
                feeds.drain(0.05)
            if not cluster.agreed(expected):
                raise BenchError(f"agreement on {expected} did not hold for 0.5 s")
        except (BenchError, AssertionError) as error:
            raise BenchError(f"{error}\n{cluster.describe()}") from None
        latest = feed_latest()
    for daemon in daemons:
        daemon.signal(15)
    for daemon in daemons:
        daemon.process.wait(timeout=10)
    from_log = 0
    for daemon in daemons:
        if daemon.name not in latest:
            lines = log_times(daemon, LEADER_IS, t0)
            if not lines or lines[-1][1] != expected:
                raise BenchError(f"{daemon.name} agreed on {expected} but neither its feed nor its log says when")
            latest[daemon.name] = lines[-1][0]
            from_log += 1
    starts = [log_times(d, STARTED, t0) for d in daemons]
    up = max(s[-1][0] for s in starts) - t0 if all(starts) else None
    return max(latest.values()) - t0, up, from_log


def run(args) -> str:
    note = before_run(args.wait_quiet)
    how = "unicast (multicast = false, one peer each)" if args.unicast else "multicast"
    progress(f"cold start over {how}: sizes {args.sizes}, {args.trials} trials each, timings {DEFAULT_TIMING}")
    rows = []
    bare = imports = None
    fallbacks = 0
    for size in args.sizes:
        with private_cluster(size) as cluster:
            if bare is None:
                bare = baseline(cluster, ["-m", "dsd", "--version"])
                imports = baseline(cluster, ["-c", "import dsd.service"])
                progress(f"  baseline: python -m dsd --version {ms(bare)}, import dsd.service {ms(imports)}")
            daemons = [add_daemon(cluster, f"n{i:02d}", 100 + i, start=False, unicast=args.unicast)
                       for i in range(1, size + 1)]
            totals, ups, protocol = [], [], []
            for number in range(1, args.trials + 1):
                total, up, from_log = trial(cluster, daemons)
                fallbacks += from_log
                totals.append(total)
                if up is not None:
                    ups.append(up)
                    protocol.append(total - up)
                progress(f"  {size} daemons, trial {number}/{args.trials}: {ms(total)}"
                         f" (processes up {ms(up) if up is not None else '?'}"
                         f"{f', {from_log} timed from their log' if from_log else ''})")
        goal = GOAL.get(size)
        rows.append([
            size, len(totals), ms(median(totals)), ms(p95(totals)), ms(max(totals)),
            ms(median(ups)) if ups else "?",
            ms(median(protocol)) if protocol else "?",
            ms(median(totals) - bare),
            f"{median(totals) / bare:.1f}×",
            f"≤ {goal:.1f} s — {met(median(totals) <= goal)}" if goal else "—",
        ])
    headers = ["daemons", "trials", "median", "p95", "max", "processes up (median)",
               "last up → agreed (median)", "median − bare start", "median / bare start", "goal"]
    return "\n".join([
        f"### Cold start over {how} (N daemons launched together → one leader agreed everywhere)",
        "",
        f"Default timings. Command: `python -m bench.coldstart --trials {args.trials} "
        f"--sizes {' '.join(map(str, args.sizes))}{' --unicast' if args.unicast else ''}`. {note}.",
        "",
        table(headers, rows),
        "",
        f"Baselines in the same run (through `ip netns exec`, median of 5): bare start "
        f"`python -m dsd --version` **{ms(bare)}**; `python -c \"import dsd.service\"` (adds asyncio, "
        f"pyzmq) {ms(imports)}. Processes up = launch → the last daemon's \"started\" log line "
        f"(ms resolution); last up → agreed = the rest: the protocol's part, one discovery_timeout "
        f"({DEFAULT_TIMING['discovery_timeout']} s) of listening for PROBE answers before the first "
        f"election plus a few ms, or just one round trip for a daemon that starts after the others "
        f"have agreed. The N processes are launched one after another on {__import__('os').cpu_count()} CPUs, "
        f"so their interpreter start-ups compete. Times are the daemons' feed timestamps; "
        f"{fallbacks} of the daemon-trials learnt the leader before the feed subscription reached them "
        f"and were timed from their log line instead (ms resolution).",
    ])


def parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=5, help="cold starts per cluster size (default 5)")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 10], help="cluster sizes (default 3 5 10)")
    p.add_argument("--unicast", action="store_true", help="multicast = false, each daemon listing one peer")
    return p


def main(argv=None) -> int:
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
