"""Metrics cost: the chat's sustained rate with and without `[metrics] listen`, on 3 private hosts.

    python -m bench.metrics_cost [--seconds 5] [--rounds 3] [--interval 1]

bench.chat's sustained-rate run (three clients pipelining `chat.send`, 64 outstanding each)
on the same three daemons, restarted between runs alternately without metrics and with
`[metrics] listen` on each host's address while a scraper on h1 fetches every daemon's
/metrics every `--interval` seconds (1 s: fifteen times Prometheus's default). Rounds
alternate (off, on, off, on, ...) after one uncounted warm-up run, so drift in the machine's
load falls on both; the figure is the median rate of each. The issue's goal: with metrics within 3 % of without.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.chat import CHAT_LIMITS, throughput
from bench.common import add_daemon, base_parser, before_run, private_cluster, progress, run_main, table
from tests.processes import kill_group, spawn

GOAL = 0.03
METRICS_PORT = 9108

# Run on h1: argv = interval, urls...; scrapes every url each interval until killed.
_SCRAPER = """
import sys, time, urllib.request
interval, urls = float(sys.argv[1]), sys.argv[2:]
next_at = time.monotonic()
while True:
    for url in urls:
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except OSError as error:
            print(f"scrape {url}: {error}", file=sys.stderr, flush=True)
    next_at += interval
    time.sleep(max(0.0, next_at - time.monotonic()))
"""


def restart(cluster, daemons, metrics: bool) -> None:
    for daemon in daemons:
        if daemon.process is not None:
            daemon.stop()
    for daemon in daemons:
        listen = f"{cluster.net.address(daemon.host)}:{METRICS_PORT}" if metrics else ""
        daemon.configure(metrics={"listen": listen})
        daemon.start()
    cluster.wait_agreed("n3", timeout=20)


def run(args: argparse.Namespace) -> str:
    note = before_run(args.wait_quiet)
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}  # the three daemons' CPU per committed message
    with private_cluster(3) as cluster, tempfile.TemporaryDirectory(prefix="dsd-bench-metrics-") as tmp:
        daemons = []
        for i in range(1, 4):
            daemon = add_daemon(cluster, f"n{i}", 100 + i, start=False)
            daemon.configure(chat=dict(CHAT_LIMITS))
            daemons.append(daemon)
        restart(cluster, daemons, metrics=False)
        progress("warm-up run (not counted)")
        throughput(cluster, daemons, Path(tmp), args.seconds, 64, tag="warm-")
        for round_ in range(args.rounds):
            for metrics in (False, True):
                restart(cluster, daemons, metrics)
                with ExitStack() as stack:
                    if metrics:
                        urls = [f"http://{d.sections['metrics']['listen']}/metrics" for d in daemons]
                        scraper = spawn(cluster.prefix(1) + [sys.executable, "-c", _SCRAPER, str(args.interval),
                                                             *urls], stderr=subprocess.DEVNULL)
                        stack.callback(kill_group, scraper)
                    tp = throughput(cluster, daemons, Path(tmp), args.seconds, 64, tag=f"r{round_}{int(metrics)}-")
                rate = min(tp.delivered.values())
                rates[metrics].append(rate)
                daemon_cpu = sum(seconds for name, seconds in tp.cpu.items() if name.startswith("n"))
                cpu[metrics].append(daemon_cpu / max(1, tp.messages))
                progress(f"round {round_ + 1}, metrics {'on ' if metrics else 'off'}: "
                         f"delivered everywhere {rate:,.0f} msg/s, daemons' CPU {1e6 * cpu[metrics][-1]:.0f} µs/msg")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    cost, cpu_cost = (off - on) / off, (cpu_on - cpu_off) / cpu_off
    rows = [
        ["without [metrics] listen", f"{off:,.0f} msg/s", f"{1e6 * cpu_off:.0f} µs",
         ", ".join(f"{r:,.0f}" for r in rates[False])],
        [f"with it, scraped every {args.interval:g} s", f"{on:,.0f} msg/s", f"{1e6 * cpu_on:.0f} µs",
         ", ".join(f"{r:,.0f}" for r in rates[True])],
        ["cost", f"{100 * cost:+.1f} % rate (goal: within {100 * GOAL:.0f} %: {'met' if cost <= GOAL else 'missed'})",
         f"{100 * cpu_cost:+.1f} % CPU", ""],
    ]
    command = f"python -m bench.metrics_cost --seconds {args.seconds:g} --rounds {args.rounds} --interval {args.interval:g}"
    return "\n".join(["### Metrics cost\n", f"`{command}` · {note}\n",
                      table(["chat sustained rate (delivered on every feed)", "median rate",
                             "daemons' CPU per message (median)", "rate in each round"], rows)])


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="sustained-rate window per run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="runs with and without metrics each (default 3)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    return p


if __name__ == "__main__":
    raise SystemExit(run_main(run, parser()))
