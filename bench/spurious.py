"""Spurious elections in a 10-node cluster while every CPU is kept busy.

    python -m bench.spurious [--duration 300] [--idle 30] [--nodes 10] [--loops 2] [--nice 0]

N daemons on N private hosts at the default timings agree on a leader. Then two
phases on the same cluster: `--idle` seconds with nothing else running (the
baseline), and `--duration` seconds with `--loops` CPU-bound Python busy loops
(by default 2, at the same nice level as the daemons, i.e. *not* niced, so they
compete on equal terms; each ends by itself after the phase and is also killed
by pid). For each phase: the sum over all daemons of the `stats` counters
elections_started, elections_won, leader_changes and pauses_detected (after
minus before), the feed events seen (view.suspect, view.dead, view.leave,
view.join, leader) from every daemon, and, sampled once a second from every
daemon's `view`, the largest time since a peer was last heard (suspect at
failure_timeout / 2 = 0.5 s, dead at 1.0 s). Goal: 0 spurious elections.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import nullcontext
from typing import Any

from bench.common import (
    DEFAULT_TIMING, Feeds, add_daemon, base_parser, busy_loops, before_run, met, private_cluster,
    proc_cpu_seconds, progress, run_main, system_cpu_busy, table,
)
from tests.cluster import Cluster, Daemon

COUNTERS = ["elections_started", "elections_won", "leader_changes", "pauses_detected"]
TOPICS = ["view.suspect", "view.dead", "view.leave", "view.join", "leader"]


def counters(daemons: list[Daemon]) -> dict[str, int]:
    total = Counter()
    for daemon in daemons:
        stats = daemon.request("stats", timeout=5)
        for key in COUNTERS:
            total[key] += stats[key]
    return dict(total)


def phase(cluster: Cluster, daemons: list[Daemon], feeds: Feeds, seconds: float,
          loops: int, nice: int) -> dict[str, Any]:
    feeds.drain()
    mark = len(feeds.events)
    before = counters(daemons)
    busy0, total0 = system_cpu_busy()
    largest_age, samples, unanswered = 0.0, 0, 0
    load = busy_loops(loops, seconds + 5, nice) if loops else nullcontext([])
    with load as processes:
        t0 = time.monotonic()
        loop_cpu0 = [proc_cpu_seconds(p.pid) for p in processes]
        next_report = t0 + 60
        while (now := time.monotonic()) < t0 + seconds:
            for daemon in daemons:
                view = daemon.try_request("view")
                if view is None:
                    unanswered += 1
                    continue
                samples += 1
                largest_age = max([largest_age] + [s["last_seen"] for s in view["servers"]])
            feeds.drain(max(0.0, min(1.0 - (time.monotonic() - now), t0 + seconds - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += 60
                progress(f"  {time.monotonic() - t0:.0f}/{seconds:g} s, "
                         f"{len(feeds.events) - mark} events so far")
        elapsed = time.monotonic() - t0
        loop_cpu = [(proc_cpu_seconds(p.pid) - c) / elapsed for p, c in zip(processes, loop_cpu0)
                    if p.poll() is None]
    busy1, total1 = system_cpu_busy()
    time.sleep(0.5)
    feeds.drain()
    after = counters(daemons)
    events = Counter(e.topic for e in feeds.since(mark) if e.topic in TOPICS)
    return {
        "seconds": elapsed,
        "delta": {key: after[key] - before[key] for key in COUNTERS},
        "events": events,
        "largest_age": largest_age,
        "samples": samples,
        "unanswered": unanswered,
        "cpu_busy": (busy1 - busy0) / max(1, total1 - total0),
        "loop_cpu": loop_cpu,
        "agreed": cluster.agreed(daemons[-1].name),
    }


def run(args) -> str:
    note = before_run(args.wait_quiet)
    progress(f"spurious elections: {args.nodes} daemons, idle {args.idle:g} s, then {args.duration:g} s "
             f"with {args.loops} busy loops (nice {args.nice}), timings {DEFAULT_TIMING}")
    results = []
    with private_cluster(args.nodes) as cluster, Feeds() as feeds:
        daemons = [add_daemon(cluster, f"n{i:02d}", 100 + i, start=False) for i in range(1, args.nodes + 1)]
        for daemon in daemons:
            feeds.connect(daemon)
            daemon.start()
        cluster.wait_agreed(daemons[-1].name, timeout=30)
        time.sleep(2)
        if args.idle > 0:
            progress(f"  idle phase ({args.idle:g} s)")
            results.append(("idle (baseline)", phase(cluster, daemons, feeds, args.idle, 0, 0)))
        progress(f"  loaded phase ({args.duration:g} s)")
        results.append((f"{args.loops} busy loops, nice {args.nice}",
                        phase(cluster, daemons, feeds, args.duration, args.loops, args.nice)))
    headers = ["phase", "duration", "CPU busy (all)", "elections started", "leader changes",
               "pauses detected", "view.suspect", "view.dead", "largest heartbeat age sampled",
               "one leader at end", "goal: 0 spurious elections"]
    rows = []
    for name, r in results:
        spurious = r["delta"]["elections_started"]
        quiet = spurious == 0 and r["delta"]["leader_changes"] == 0
        rows.append([
            name, f"{r['seconds']:.0f} s", f"{100 * r['cpu_busy']:.0f} %",
            r["delta"]["elections_started"], r["delta"]["leader_changes"], r["delta"]["pauses_detected"],
            r["events"]["view.suspect"], r["events"]["view.dead"], f"{r['largest_age'] * 1000:.0f} ms",
            "yes" if r["agreed"] else "**no**",
            f"{spurious} — {met(quiet)}",
        ])
    loaded = results[-1][1]
    loop_share = ", ".join(f"{100 * c:.0f} %" for c in loaded["loop_cpu"]) or "?"
    return "\n".join([
        f"### Spurious elections ({args.nodes}-node cluster, every CPU kept busy)",
        "",
        f"Default timings. Command: `python -m bench.spurious --duration {args.duration:g} "
        f"--idle {args.idle:g} --nodes {args.nodes} --loops {args.loops} --nice {args.nice}`. {note}.",
        "",
        table(headers, rows),
        "",
        f"Counters are `dsctl stats` summed over all {args.nodes} daemons (after − before); events are "
        f"from every daemon's feed. Busy loops: {args.loops} CPU-bound Python processes "
        f"{'at the same nice level as the daemons (not niced)' if args.nice == 0 else f'niced +{args.nice}'}, "
        f"on {os.cpu_count()} CPUs; each used {loop_share} of a CPU. CPU busy = all CPUs, from /proc/stat. "
        f"Heartbeat age = the largest `last_seen` in {loaded['samples']} samples of `view` "
        f"(one per daemon per second; {loaded['unanswered']} unanswered within 0.5 s); a peer is suspect "
        f"at {DEFAULT_TIMING['failure_timeout'] / 2:g} s and dead at {DEFAULT_TIMING['failure_timeout']:g} s.",
    ])


def parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds under load (default 300)")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of the idle baseline before (default 30; 0 = none)")
    p.add_argument("--nodes", type=int, default=10, help="cluster size (default 10)")
    p.add_argument("--loops", type=int, default=2, help="busy-loop processes (default 2)")
    p.add_argument("--nice", type=int, default=0, help="nice increment of the busy loops (default 0: not niced)")
    return p


def main(argv=None) -> int:
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
