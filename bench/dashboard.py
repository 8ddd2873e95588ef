"""The README's picture of the Grafana dashboard's panels, drawn from a real run's scrapes.

    python -m bench.dashboard [--out docs/dashboard.png] [--seconds 60]

Grafana cannot be installed here, so this draws the panels of etc/grafana/dsd.json with
matplotlib (`pip install -e '.[bench]'`) from what a scraper on h1 read off three daemons'
`[metrics] listen` every 0.5 s (default timings, on private hosts) while it: sends chat
messages steadily, `kill -9`s the leader at 25 % of the run and restarts it at 40 %, sends
a burst of malformed datagrams at 55 %, and stops a follower cleanly at 70 % and restarts it
at 80 %. The quantiles are computed from the histogram buckets as Prometheus's
histogram_quantile does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

from bench.chat import CHAT_LIMITS
from bench.common import BenchError, add_daemon, base_parser, installed, private_cluster, progress, run_main
from dsd.client import ControlClient, DaemonError, Unreachable
from tests.processes import kill_group, spawn

ROOT = Path(__file__).resolve().parent.parent
METRICS_PORT = 9108
SCRAPE_INTERVAL = 0.5
CHAT_RATE = 50.0  # messages/s sent through n1
WINDOW = 5.0      # s: the rate and latency panels' window ($__rate_interval)

# Run on h1 with the venv's Python: argv = interval, urls...; one JSON line per scrape.
_SCRAPER = """
import json, sys, time, urllib.request
from prometheus_client.parser import text_string_to_metric_families
interval, urls = float(sys.argv[1]), sys.argv[2:]
next_at = time.monotonic()
while True:
    for url in urls:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            continue
        samples = {}
        for family in text_string_to_metric_families(text):
            if family.name.startswith("dsd_"):
                for s in family.samples:
                    key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
                    samples[key] = s.value
        print(json.dumps({"t": time.time(), "url": url, "samples": samples}), flush=True)
    next_at += interval
    time.sleep(max(0.0, next_at - time.monotonic()))
"""


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative `buckets` (upper bound -> count)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-12)
        lower, below = bound, buckets[bound]
    return lower


def buckets_of(samples: dict[str, float], family: str) -> dict[float, float]:
    prefix = f"{family}_bucket,le="
    return {float(key[len(prefix):]): value for key, value in samples.items() if key.startswith(prefix)}


class Chatter:
    """Sends chat messages through a daemon at a steady rate, in a thread, until stopped."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        user, session = "chart", uuid.uuid4().hex
        joined, n, next_at = False, 0, time.monotonic()
        while not self.stopping.is_set():
            try:
                with ControlClient(self.endpoint, timeout=2.0, retries=1) as client:
                    if not joined:
                        client.request("chat.join", user=user, session=session)
                        joined = True
                    n += 1
                    client.request("chat.send", user=user, session=session, id=f"m{n}", text=f"message {n}")
            except (Unreachable, DaemonError):
                joined = False  # during the failover: join again, go on
            next_at += 1 / CHAT_RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


def scenario(cluster, daemons, seconds: float) -> None:
    """The faults, at fixed fractions of the run."""
    start = time.monotonic()

    def at(fraction: float) -> None:
        time.sleep(max(0.0, start + fraction * seconds - time.monotonic()))

    at(0.25)
    progress("kill -9 of the leader n3")
    daemons[2].kill()
    at(0.40)
    progress("n3 restarted")
    daemons[2].start()
    at(0.55)
    progress("malformed datagrams from h2")
    cluster.send(2, [os.urandom(n % 300 + 1) for n in range(500)])
    at(0.70)
    progress("n2 stopped cleanly")
    daemons[1].stop()
    at(0.80)
    progress("n2 restarted")
    daemons[1].start()
    at(1.0)


def collect(cluster, daemons, seconds: float) -> dict[str, list[tuple[float, dict[str, float]]]]:
    urls = {f"http://{d.sections['metrics']['listen']}/metrics": d.name for d in daemons}
    scraper = spawn(cluster.prefix(1) + [sys.executable, "-c", _SCRAPER, str(SCRAPE_INTERVAL), *urls],
                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(scraper.stdout), daemon=True)
    reader.start()
    chatter = Chatter(daemons[0].endpoint)
    chatter.thread.start()
    try:
        scenario(cluster, daemons, seconds)
    finally:
        chatter.stopping.set()
        chatter.thread.join(timeout=10)
        kill_group(scraper)
        reader.join(timeout=5)
    series: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
    for line in lines:
        scrape = json.loads(line)
        series[urls[scrape["url"]]].append((scrape["t"], scrape["samples"]))
    if not all(series.get(d.name) for d in daemons):
        raise BenchError("a daemon was never scraped")
    return series


def windowed(points: list[tuple[float, dict[str, float]]], i: int) -> int:
    """The index of the last scrape at least WINDOW seconds before scrape i (or the first)."""
    j = i
    while j > 0 and points[i][0] - points[j][0] < WINDOW:
        j -= 1
    return j


def increase(points: list[tuple[float, dict[str, float]]], j: int, i: int, key: str) -> float:
    """How much counter `key` rose from scrape j to scrape i; a restart (the value falls) counts from 0."""
    total = 0.0
    for k in range(j + 1, i + 1):
        before, after = points[k - 1][1].get(key, 0.0), points[k][1].get(key, 0.0)
        total += after - before if after >= before else after
    return total


def with_gaps(points: list[tuple[float, dict[str, float]]]) -> list[tuple[float, dict[str, float]]]:
    """An empty scrape wherever a daemon was down, so its lines break instead of bridging the gap."""
    out: list[tuple[float, dict[str, float]]] = []
    for t, samples in points:
        if out and t - out[-1][0] > 3 * SCRAPE_INTERVAL:
            out.append((out[-1][0] + SCRAPE_INTERVAL, {}))
        out.append((t, samples))
    return out


def draw(series: dict[str, list[tuple[float, dict[str, float]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(points[0][0] for points in series.values())
    fig, axes = plt.subplots(4, 2, figsize=(13, 12), sharex=True)
    panels = axes.flatten()
    for name, scraped in sorted(series.items()):
        points = with_gaps(scraped)
        ts = [t - t0 for t, _ in points]
        get = lambda key: [s.get(key, float("nan")) for _, s in points]  # noqa: E731
        panels[0].step(ts, get("dsd_members,state=alive"), where="post", label=f"{name} alive")
        panels[1].step(ts, get("dsd_is_leader"), where="post", label=name)
        panels[2].step(ts, get("dsd_leader_changes_total"), where="post", label=f"{name} leader changes")
        rate, rejected, p50, p99 = [], [], [], []
        for i in range(len(points)):
            j = windowed(points, i)
            span = points[i][0] - points[j][0]
            b = points[i][1]
            if not b or not span:
                rate.append(float("nan"))
                rejected.append(float("nan"))
                p50.append(None)
                p99.append(None)
                continue
            rate.append(increase(points, j, i, "dsd_chat_committed_entries_total") / span)
            rejected.append(sum(increase(points, j, i, k) for k in b if k.startswith("dsd_datagrams_rejected_total"))
                            / span)
            prefix = "dsd_chat_commit_latency_seconds_bucket,le="
            window = {float(key[len(prefix):]): increase(points, j, i, key) for key in b if key.startswith(prefix)}
            p50.append(quantile(0.5, window))
            p99.append(quantile(0.99, window))
        panels[4].plot(ts, rate, label=name)
        panels[6].plot(ts, rejected, label=name)
        if name == "n1":  # the daemon that took the client's requests
            panels[5].plot(ts, [1000 * v if v is not None else float("nan") for v in p50], label="n1 p50")
            panels[5].plot(ts, [1000 * v if v is not None else float("nan") for v in p99], label="n1 p99")
        detection = [buckets_of(s, "dsd_failure_detection_seconds") for _, s in points]
        panels[3].step(ts, [quantile(0.5, b) or float("nan") for b in detection], where="post", label=f"{name} p50")
        panels[7].plot(ts, get("dsd_term"), label=name)
    titles = [
        ("Members seen alive by each daemon", ""), ("Leader (1 = this daemon leads)", ""),
        ("Leader changes (counter)", ""), ("Failure detection p50 (last heard -> dead)", "s"),
        (f"Chat entries committed per second ({WINDOW:g} s window)", "1/s"),
        ("Chat commit latency (send -> committed)", "ms"),
        ("Datagrams rejected per second", "1/s"), ("Term", ""),
    ]
    for panel, (title, unit) in zip(panels, titles):
        panel.set_title(title, fontsize=10)
        panel.set_ylabel(unit)
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7, loc="upper left")
    for panel in panels[-2:]:
        panel.set_xlabel("seconds")
    fig.suptitle("dsd: three daemons scraped every 0.5 s (leader killed at 25 %, back at 40 %; "
                 "junk datagrams at 55 %; a follower stopped at 70 %, back at 80 %)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


def run(args: argparse.Namespace) -> str:
    if not installed("matplotlib"):
        raise BenchError("matplotlib is missing: pip install -e '.[bench]'")
    with private_cluster(3) as cluster:
        daemons = []
        for i in range(1, 4):
            daemon = add_daemon(cluster, f"n{i}", 100 + i, start=False)
            daemon.configure(chat=dict(CHAT_LIMITS),
                             metrics={"listen": f"{cluster.net.address(i)}:{METRICS_PORT}"})
            daemons.append(daemon.start())
        cluster.wait_agreed("n3", timeout=20)
        progress(f"scraping for {args.seconds:g} s")
        series = collect(cluster, daemons, args.seconds)
    draw(series, Path(args.out))
    scrapes = sum(len(points) for points in series.values())
    return f"wrote {args.out} from {scrapes} scrapes of {len(series)} daemons over {args.seconds:g} s"


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"), help="where to write the PNG")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the run (default 60)")
    return p


if __name__ == "__main__":
    raise SystemExit(run_main(run, parser()))
