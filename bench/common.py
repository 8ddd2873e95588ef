"""What every benchmark shares: private clusters at default timings, the feeds, statistics, tables.

Safety (DESIGN.md 6): daemons run only on private hosts (network namespaces joined
by a bridge that lives in a namespace), through `tests.cluster.Cluster`. A benchmark
refuses to run where namespaces cannot be made instead of falling back to the
machine's interfaces. Every process a benchmark starts is stopped by its pid and
every namespace deleted on the way out, on errors, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

import zmq

from tests.cluster import Cluster, Daemon
from tests.netns import namespaces_unavailable

# The shipped defaults (issue 2, etc/dsd.toml), spelled out so a change of the
# test harness's FAST timings can never leak into the figures.
DEFAULT_TIMING = {"heartbeat_interval": 0.2, "failure_timeout": 1.0, "discovery_timeout": 0.2}


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a trial timed out, a pid is wrong...)."""


# ------------------------------------------------------------------ processes


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so every `with` block cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def require_namespaces() -> None:
    reason = namespaces_unavailable()
    if reason is not None:
        raise SystemExit(f"bench: refusing to run: daemons must run on private hosts, and {reason}")


@contextmanager
def private_cluster(hosts: int) -> Iterator[Cluster]:
    """A Cluster on `hosts` private hosts; every daemon killed and namespace deleted on exit."""
    require_namespaces()
    cluster = Cluster(hosts, use_namespaces=True)
    try:
        cluster.__enter__()
        yield cluster
    finally:
        cluster.close()


def add_daemon(cluster: Cluster, name: str, priority: int, host: int | None = None,
               start: bool = True, timing: dict[str, float] | None = None, unicast: bool = False) -> Daemon:
    """A daemon at the default timings (or `timing`), logging at info.

    `unicast`: multicast = false, and the daemon lists one peer (`one_peer`).
    """
    settings: dict[str, dict] = {"timing": dict(timing or DEFAULT_TIMING), "log": {"level": "info"}}
    host = host if host is not None else len(cluster.daemons) + 1
    if unicast:
        settings["cluster"] = {"multicast": False, "peers": [one_peer(cluster, host)]}
    return cluster.add(name, priority=priority, host=host, start=start, **settings)


def one_peer(cluster: Cluster, host: int) -> str:
    """The one peer a daemon lists in the unicast benchmarks: host 1 lists host 2, every other host lists host 1."""
    assert cluster.net is not None
    return cluster.net.address(2 if host == 1 else 1)


def feed_endpoint(daemon: Daemon) -> str:
    return f"ipc://{daemon.dir}/run/dsd.feed"


def python_pid(process: subprocess.Popen) -> int:
    """The pid of the Python process itself (`ip netns exec` execs into it; a forking one would not)."""
    pid = process.pid
    for _ in range(3):
        argv = read_cmdline(pid)
        if argv and "python" in os.path.basename(argv[0]):
            return pid
        children = _children(pid)
        if len(children) != 1:
            break
        pid = children[0]
    raise BenchError(f"cannot find the python process under pid {process.pid}: {read_cmdline(process.pid)}")


def read_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def installed(module: str) -> bool:
    """Whether an optional module (the `bench` extra's) can be imported."""
    return importlib.util.find_spec(module) is not None


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


def proc_pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@contextmanager
def busy_loops(count: int, seconds: float, nice: int = 0) -> Iterator[list[subprocess.Popen]]:
    """`count` CPU-bound Python processes that end by themselves after `seconds`; killed by pid on exit.

    They touch no network. Each also stops when its parent (this benchmark) is gone.
    """
    code = (
        "import os, time\n"
        f"end = time.monotonic() + {float(seconds)!r}\n"
        "parent = os.getppid()\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1\n"
        "    if n % 200000 == 0 and (time.monotonic() >= end or os.getppid() != parent):\n"
        "        break\n"
    )
    processes: list[subprocess.Popen] = []

    def set_nice() -> None:
        if nice:
            os.nice(nice)

    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", code], preexec_fn=set_nice))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


# ---------------------------------------------------------------------- feeds


@dataclass
class Event:
    node: str       # the daemon that published it
    topic: str
    time: float     # wall clock at the publishing daemon (same machine: clocks agree)
    body: dict[str, Any]
    arrival: float  # wall clock when this process read it


def subscriber(context: zmq.Context, endpoint: str, prefix: bytes = b"", hwm: int = 100000) -> zmq.Socket:
    """A SUB socket on `endpoint` for topics starting with `prefix`, queueing up to `hwm` messages."""
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, hwm)
    socket.setsockopt(zmq.SUBSCRIBE, prefix)
    socket.connect(endpoint)
    return socket


def drain_until(drain: Callable[[float], Any], condition: Callable[[], Any], timeout: float, what: str,
                step: float) -> Any:
    """Call `drain(step)` until `condition()` is truthy (its value is returned); BenchError at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        drain(step)
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")


class Feeds:
    """ZeroMQ SUB sockets on the daemons' feeds, drained from the calling thread.

    Events keep the daemons' own `time` stamps, so how late they are read does not matter.
    """

    def __init__(self) -> None:
        self._context = zmq.Context()
        self._sockets: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()
        self.events: list[Event] = []

    def connect(self, daemon: Daemon) -> None:
        """Subscribe to everything `daemon` publishes (again, after a restart)."""
        self.disconnect(daemon.name)
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, 100000)
        socket.setsockopt(zmq.RECONNECT_IVL, 5)  # the feed may not be bound yet: retry quickly
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(feed_endpoint(daemon))
        self._sockets[daemon.name] = socket
        self._poller.register(socket, zmq.POLLIN)

    def disconnect(self, name: str) -> None:
        socket = self._sockets.pop(name, None)
        if socket is not None:
            self._poller.unregister(socket)
            socket.close(linger=0)

    def drain(self, timeout: float = 0.0) -> int:
        """Read whatever has arrived, waiting up to `timeout` for the first of it."""
        count = 0
        ready = dict(self._poller.poll(int(timeout * 1000)))
        while ready:
            now = time.time()
            for socket in ready:
                while True:
                    try:
                        _topic, *payloads = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    for payload in payloads:
                        body = json.loads(payload)
                        self.events.append(Event(body.get("node", "?"), body.get("topic", "?"),
                                                 float(body.get("time", 0.0)), body, now))
                    count += len(payloads)
            ready = dict(self._poller.poll(0))
        return count

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        return drain_until(self.drain, condition, timeout, what, 0.01)

    def since(self, index: int, node: str | None = None, topic: str | None = None) -> list[Event]:
        return [
            e for e in self.events[index:]
            if (node is None or e.node == node) and (topic is None or e.topic == topic)
        ]

    def close(self) -> None:
        for name in list(self._sockets):
            self.disconnect(name)
        self._context.term()

    def __enter__(self) -> "Feeds":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (with 20 values: the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def ms1(seconds: float, decimals: int = 1) -> str:
    """Milliseconds with one decimal (or `decimals`), for small figures."""
    return f"{seconds * 1000:.{decimals}f} ms"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


# --------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table with columns padded for people reading the raw text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def machine() -> str:
    """One line on where and when the figures were taken."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"dsd {code_version()} · "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} · {os.cpu_count()} CPUs"
        f"{' (' + model + ')' if model else ''} · Python {platform.python_version()} · "
        f"Linux {platform.release()} · load average: {load}"
    )


def code_version() -> str:
    """The commit measured, marked when dsd/ had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsd"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(unknown commit)"
    return f"{head}{' + uncommitted changes in dsd/' if dirty else ''}" if head else "(unknown commit)"


def progress(text: str) -> None:
    """Progress goes to stderr so stdout holds only the tables."""
    print(text, file=sys.stderr, flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="first wait up to S seconds for other work on the machine to stop (default 0)")
    return parser


def before_run(wait_quiet: float = 0.0) -> str:
    """The machine line, with how busy the CPUs were with other work just before the run."""
    busy = wait_for_quiet(wait_quiet) if wait_quiet > 0 else cpu_busy(2.0)
    return f"{machine()} · CPUs busy with other work just before: {100 * busy:.0f} %"


def cpu_busy(window: float) -> float:
    busy0, total0 = system_cpu_busy()
    time.sleep(window)
    busy1, total1 = system_cpu_busy()
    return (busy1 - busy0) / max(1, total1 - total0)


def run_main(run: Callable[[argparse.Namespace], str], parser: argparse.ArgumentParser,
             argv: list[str] | None = None) -> int:
    """Parse, run one benchmark, print its markdown; 130 on Ctrl-C/SIGTERM after cleaning up."""
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        print(run(args), flush=True)
    except KeyboardInterrupt:
        progress("bench: interrupted; every daemon stopped and namespace deleted")
        return 130
    except BenchError as error:
        progress(f"bench: {error}")
        return 1
    return 0


def wait_for_quiet(max_wait: float, busy_below: float = 0.15, window: float = 3.0) -> float:
    """Wait (up to `max_wait` s) until the CPUs are less than `busy_below` busy over `window` s.

    Other work on the machine (a test run...) disturbs the figures; returns the last busy fraction.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy = cpu_busy(window)
        if busy < busy_below or time.monotonic() >= deadline:
            return busy
        progress(f"bench: the machine is {100 * busy:.0f} % busy with other work; waiting for it to calm down")
