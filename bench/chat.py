"""Chat: sustained rate and latency against raw ZeroMQ and PySyncObj, and failover under traffic.

    python -m bench.chat [--quick] [--seconds 10] [--window 64] [--sweep 8 256] [--trials 5]
                         [--no-profile] [--top 12] [--chart bench/chat.svg] [--wait-quiet S]

Three daemons n1..n3 (n3 leads) on private hosts h1..h3 at the default timings, `[chat] rate`
and `burst` raised to 1,000,000 (the defaults are a per-user abuse limit). Every client is a
Python process on its host (`ip netns exec`), on its daemon's control socket and feed as dschat
is; all share one clock, so a send time written into a message's text gives its latency.

1. Baselines, before any daemon starts: raw pyzmq PUB -> SUB, tcp h1 -> h2, frames shaped like
   a feed entry (flood rate, nothing parsed; one-way latency at 1,000 msg/s); and PySyncObj
   (bench/raft_peer.py, when the `bench` extra is installed).
2. Sustained rate: a client per host pipelines `chat.send` (`--window` outstanding): sent,
   committed, delivered on every feed per second; every committed message checked on every
   feed (lost, duplicated, seq gaps); CPU of every process from /proc; `dsctl stats` deltas.
3. Latency at 100 then 1,000 msg/s: a paced sender on h1 (n1, a follower, forwards to the
   leader), a receiver on n2's feed; split at the leader's sequencing time.
4. Failover: `kill -9` of the leader n3 while a client on h1 sends 200 msg/s; the time to the
   first message sent after the kill on every survivor's feed, split at the new leader's event.
5. Window sweep (`--sweep`), then a profile (`--no-profile` to skip, bench/profiling.py).

The figures are drawn against the baselines in an SVG (`--chart`, bench/charts.py). Every
process is stopped by its pid and the namespaces deleted on the way out; each worker also
exits by itself after WORKER_LIMIT seconds.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import random
import resource
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import zmq

from bench import charts, profiling, raft_peer
from bench.common import (
    DEFAULT_TIMING, BenchError, Feeds, add_daemon, base_parser, before_run, code_version, feed_endpoint, installed,
    median, met, ms1, private_cluster, proc_cpu_seconds, progress, python_pid, run_main, subscriber, system_cpu_busy,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
_JSON, _FROM_JSON = msgspec.json.Encoder(), msgspec.json.Decoder()  # the clients' codec: dsd's own
RATE_GOAL = 25000.0     # msg/s delivered on every feed
RAW_GOAL = 0.10         # delivered / raw PUB->SUB
PEER_GOAL = 2.5         # delivered / PySyncObj's committed rate
P50_GOAL = 0.001        # s, at 1,000 msg/s
P99_GOAL = 0.005
OFFERED = 1000.0        # msg/s for the latency run (the goal's rate)
LOW_RATE = 100.0        # msg/s, the latency run's first, unloaded phase
FAILOVER_RATE = 200.0   # msg/s sent during the failover trials
CRASH_FAILOVER = 0.914  # s, bench.failover median for 3 daemons (bench/RESULTS.md), quoted
TEXT_LEN = 64           # characters of message text: a feed frame of ~200 bytes
PEER_WINDOW = 1000      # PySyncObj appends outstanding
CHAT_LIMITS = {"rate": 1000000.0, "burst": 1000000}
BASE_PORT = 5599        # the baseline's PUB port on h1 (a private host)
WORKER_LIMIT = 120.0    # s: every worker process exits by itself after this
PROFILED = ("n3", "n1")
STAT_KEYS = ("control_requests", "link_messages_sent", "link_messages_received", "events_published",
             "chat_proposals_forwarded", "chat_duplicates_dropped")


# ======================================================================== workers
#
# `python -m bench.chat --worker ROLE JSON` runs one client process (started on a private
# host by the coordinator below). Protocol on its stdin/stdout, one JSON object a line:
# it prints {"ready": ...} once set up, waits for {"go": T0, ...} (wall clock), prints its
# result, and exits. It also exits at its own deadline (an alarm).


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _ready() -> dict[str, Any]:
    """Tell the coordinator this worker is set up; its go, one JSON line on stdin (the alarm bounds the wait)."""
    _say({"ready": True})
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(3)  # the coordinator is gone
    return json.loads(line)


def _stamp(now: float, length: int = TEXT_LEN) -> str:
    """Message text: the send time, padded to `length` characters."""
    head = f"{now:.6f} "
    return head + "x" * max(1, length - len(head))


def _sent_at(text: str) -> float | None:
    try:
        return float(text.split(" ", 1)[0])
    except (ValueError, AttributeError):
        return None


def _rounded(values: list[float]) -> list[float]:
    return [round(x, 7) for x in values]


def _waiting(socket: zmq.Socket) -> Iterator[list[bytes]]:
    """The messages already queued on `socket`, without blocking."""
    while True:
        try:
            yield socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


def _wait_until(t: float) -> None:
    while time.time() < t:
        time.sleep(0.0005)


class _ChatClient:
    """A DEALER on a daemon's control socket (rid-matched, pipelined) and a SUB on its feed."""

    def __init__(self, context: zmq.Context, endpoint: str, feed: str | None, user: str) -> None:
        self.user = user
        self.session = secrets.token_urlsafe(24)
        self.dealer = context.socket(zmq.DEALER)
        for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 100000), (zmq.RCVHWM, 100000)):
            self.dealer.setsockopt(option, value)
        self.dealer.connect(endpoint)
        self.sub = subscriber(context, feed, b"chat.", 1000000) if feed else None
        self.poller = zmq.Poller()
        for socket in (self.dealer, self.sub):
            if socket is not None:
                self.poller.register(socket, zmq.POLLIN)
        self.rids = 0

    def send(self, cmd: str, rid: str, **args: Any) -> None:
        payload = {"cmd": cmd, "args": {"user": self.user, "session": self.session, **args}, "rid": rid}
        self.dealer.send_multipart([b"", _JSON.encode(payload)])

    def replies(self) -> Iterator[dict[str, Any]]:
        return (_FROM_JSON.decode(frames[-1]) for frames in _waiting(self.dealer))

    def feed(self) -> Iterator[dict[str, Any]]:
        """Feed events: a feed message is [topic, json, json, ...], one or more events of one topic."""
        frames = _waiting(self.sub) if self.sub is not None else ()
        return (_FROM_JSON.decode(body) for _topic, *bodies in frames for body in bodies)

    def call(self, cmd: str, timeout: float, **args: Any) -> dict[str, Any]:
        """One request, answered before `timeout` (feed events read meanwhile are dropped)."""
        self.rids += 1
        rid = f"c{self.rids}"
        self.send(cmd, rid, **args)
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.poller.poll(50)
            for reply in self.replies():
                if reply.get("rid") == rid:
                    return reply
            for _ in self.feed():
                pass
        raise SystemExit(f"{self.user}: no reply to {cmd} within {timeout}s")

    def join(self, timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while True:
            reply = self.call("chat.join", 6.0)
            if reply.get("ok"):
                return
            if time.time() > deadline or reply["error"]["code"] != "unavailable":
                raise SystemExit(f"{self.user}: join failed: {reply}")
            time.sleep(0.1)

    def sync(self, timeout: float = 10.0) -> None:
        """Send marker messages until one comes back on the feed: the subscription is live."""
        if self.sub is None:
            return
        deadline = time.time() + timeout
        n = 0
        while time.time() < deadline:
            n += 1
            mark = f"sync-{n}"
            reply = self.call("chat.send", 6.0, id=mark, text="sync")
            if not reply.get("ok"):
                raise SystemExit(f"{self.user}: sync send failed: {reply}")
            until = time.time() + 0.5
            while time.time() < until:
                self.poller.poll(20)
                for _ in self.replies():
                    pass
                if any(e.get("user") == self.user and e.get("id") == mark for e in self.feed()):
                    return
        raise SystemExit(f"{self.user}: feed subscription never came up")

    def leave(self) -> None:
        try:
            self.call("chat.leave", 2.0)
        except SystemExit:
            pass


def _worker_pub(cfg: dict[str, Any]) -> dict[str, Any]:
    """Publish frames shaped like feed entries: flooding, or paced with the send time in the body."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.bind(cfg["bind"])
    topic, body = cfg["topic"].encode(), cfg["body"].encode()
    go = _ready()
    t0, t_end, rate = go["t0"], go["t0"] + go["seconds"], go.get("rate")
    _wait_until(t0)
    sent = 0
    while time.time() < t_end:
        if rate:
            delay = t0 + sent / rate - time.time()
            if delay > 0:
                time.sleep(delay)
                continue
            stamp = f"{time.time():.6f}".encode()
            pub.send_multipart([topic, stamp + body[len(stamp):]])
            sent += 1
            continue
        for _ in range(1000):
            try:
                pub.send_multipart([topic, body], zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
    context.destroy(linger=0)
    return {"sent": sent}


def _worker_sub(cfg: dict[str, Any]) -> dict[str, Any]:
    """Count frames (flood) or take each one's latency (paced) over the window."""
    context = zmq.Context()
    sub = subscriber(context, cfg["connect"])
    go = _ready()
    start = go["t0"] + go.get("warm", 0.0)
    stop = start + go["seconds"]
    count, size, latencies = 0, 0, []
    while time.time() < stop + 0.3:
        sub.poll(50)
        for frames in _waiting(sub):
            now = time.time()
            if go.get("rate"):
                sent = float(frames[1][:17])
                if start <= sent < stop:
                    latencies.append(now - sent)
            elif start <= now < stop:
                count += 1
                size = len(frames[1])
    context.destroy(linger=0)
    return {"count": count, "size": size, "latencies": _rounded(latencies)}


def _worker_client(cfg: dict[str, Any]) -> dict[str, Any]:
    """Pipelined chat.send with `window` messages outstanding (in chat.send_many requests of
    `batch` when it is more than 1); records replies and the feed."""
    context = zmq.Context()
    client = _ChatClient(context, cfg["endpoint"], cfg["feed"], cfg["user"])
    client.join()
    client.sync()
    go = _ready()
    t0, t_end, window, batch = go["t0"], go["t0"] + go["seconds"], cfg["window"], cfg["batch"]
    users = set(cfg["users"])
    outstanding: dict[str, tuple[float, list[str]]] = {}  # rid -> when sent, the ids of its messages
    counts = Counter[str]()
    acked: list[int] = []
    ack_latency: list[float] = []
    feed_latency: list[float] = []
    errors: Counter[str] = Counter()
    received: dict[str, list[int]] = {u: [] for u in users}
    seqs: list[int] = []

    def take(now: float) -> None:
        inside = t0 <= now < t_end
        for reply in client.replies():
            request = outstanding.pop(reply.get("rid", ""), None)
            if request is None:
                continue
            sent, ids = request
            results = reply["result"].get("results", [reply["result"]]) if reply.get("ok") else [reply]
            for id_, result in zip(ids, results):
                if "seq" in result:
                    acked.append(int(id_))
                    ack_latency.append(now - sent)
                    counts["acked_in"] += inside
                else:
                    errors[result.get("code") or result["error"]["code"]] += 1
        for event in client.feed():
            seqs.append(event["seq"])
            if event.get("kind") != "message" or event.get("user") not in users or not event["id"].isdigit():
                continue
            received[event["user"]].append(int(event["id"]))
            sent = _sent_at(event.get("text", ""))
            if sent is not None and t0 <= sent < t_end:
                feed_latency.append(now - sent)
            counts["delivered_in"] += inside

    _wait_until(t0)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while (now := time.time()) < t_end:
        while len(outstanding) * batch < window:
            ids = [str(counts["sent"] + i) for i in range(1, batch + 1)]
            counts["sent"] += batch
            if batch == 1:
                client.send("chat.send", ids[0], id=ids[0], text=_stamp(now))
            else:
                client.send("chat.send_many", ids[0], messages=[{"id": id_, "text": _stamp(now)} for id_ in ids])
            outstanding[ids[0]] = (now, ids)
        client.poller.poll(max(1, int((t_end - now) * 1000)))
        take(time.time())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.time() + 8.0  # every reply (request_timeout is 5 s), then a quiet feed
    quiet_since = time.time()
    while time.time() < deadline:
        events = client.poller.poll(100)
        now = time.time()
        if events:
            quiet_since = now
            take(now)
        elif not outstanding and now - quiet_since > 0.5:
            break
    client.leave()
    context.destroy(linger=0)
    return {
        "user": cfg["user"], "sent_in": counts["sent"], "acked_in": counts["acked_in"],
        "delivered_in": counts["delivered_in"], "acked": acked, "unanswered": len(outstanding),
        "errors": dict(errors), "ack_latency": _rounded(ack_latency), "feed_latency": _rounded(feed_latency),
        "received": received, "feed_gaps": sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1),
        "cpu": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
    }


def _schedule(t0: float, phases: list[list[float]]) -> list[tuple[float, float, float]]:
    """[(start, end, rate)] of back-to-back phases [[rate, seconds], ...] from t0."""
    starts = itertools.accumulate((seconds for _rate, seconds in phases), initial=t0)
    return [(start, start + seconds, rate) for start, (rate, seconds) in zip(starts, phases)]


def _phase_of(schedule: list[tuple[float, float, float]], sent: float) -> int | None:
    return next((i for i, (start, end, _rate) in enumerate(schedule) if start <= sent < end), None)


def _worker_sender(cfg: dict[str, Any]) -> dict[str, Any]:
    """Paced chat.send (send time in the text): phases [[rate, seconds], ...] back to back, or until SIGUSR2."""
    stopping: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, _frame: stopping.append(signum))
    context = zmq.Context()
    client = _ChatClient(context, cfg["endpoint"], cfg.get("feed"), cfg["user"])
    client.join()
    client.sync()
    go = _ready()
    schedule = _schedule(go["t0"], go["phases"])
    outstanding: dict[str, tuple[float, int]] = {}
    ack_latency: list[list[float]] = [[] for _ in schedule]
    sent = [0 for _ in schedule]
    errors: Counter[str] = Counter()
    total = 0

    def take() -> None:
        now = time.time()
        for reply in client.replies():
            started = outstanding.pop(reply.get("rid", ""), None)
            if started is None:
                continue
            if reply.get("ok"):
                ack_latency[started[1]].append(now - started[0])
            else:
                errors[reply["error"]["code"]] += 1
        for _ in client.feed():
            pass

    _wait_until(schedule[0][0])
    for index, (start, end, rate) in enumerate(schedule):
        while not stopping and (now := time.time()) < end:
            due = start + sent[index] / rate
            if due <= now:
                sent[index] += 1
                total += 1
                client.send("chat.send", str(total), id=str(total), text=_stamp(now))
                outstanding[str(total)] = (now, index)
            else:
                time.sleep(min(due - now, 0.002))
            take()
    deadline = time.time() + 6.0
    while outstanding and time.time() < deadline:
        client.poller.poll(50)
        take()
    client.leave()
    context.destroy(linger=0)
    return {"sent": sent, "ack_latency": [_rounded(phase) for phase in ack_latency],
            "errors": dict(errors), "unanswered": len(outstanding)}


def _worker_receiver(cfg: dict[str, Any]) -> dict[str, Any]:
    """Subscribed to one feed: send -> arrival of `user`'s messages, by the phase they were sent in."""
    context = zmq.Context()
    sub = subscriber(context, cfg["feed"], b"chat.", 1000000)
    go = _ready()
    schedule = _schedule(go["t0"], go["phases"])
    latencies: list[list[float]] = [[] for _ in schedule]
    sequenced: list[list[float]] = [[] for _ in schedule]  # send -> the leader's sequencing time
    expected = sum(int(rate * (end - start)) for start, end, rate in schedule)
    received = 0
    end = schedule[-1][1]
    while time.time() < end + 3.0 and not (time.time() > end + 0.5 and received >= expected):
        sub.poll(100)
        for _topic, *bodies in _waiting(sub):
            now = time.time()
            for event in map(json.loads, bodies):
                if event.get("user") != cfg["user"] or event.get("kind") != "message":
                    continue
                sent = _sent_at(event.get("text", ""))
                phase = _phase_of(schedule, sent) if sent is not None else None
                if phase is not None:
                    latencies[phase].append(now - sent)
                    sequenced[phase].append(float(event.get("time", now)) - sent)
                    received += 1
    context.destroy(linger=0)
    return {"latencies": [_rounded(phase) for phase in latencies],
            "sequenced": [_rounded(phase) for phase in sequenced]}


WORKERS = {"pub": _worker_pub, "sub": _worker_sub, "client": _worker_client,
           "sender": _worker_sender, "receiver": _worker_receiver}


def worker_main(role: str, config: str) -> int:
    signal.alarm(int(WORKER_LIMIT))  # ends by itself whatever happens
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where is it stuck (stderr, the worker's log)
    _say({"result": WORKERS[role](json.loads(config))})
    return 0


# ==================================================================== coordinator


class Worker:
    """One worker process on a private host; killed by its pid on close."""

    def __init__(self, cluster, host: int, role: str, cfg: dict[str, Any], log: Path) -> None:
        self.role = role
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                cluster.prefix(host) + [sys.executable, "-m", "bench.chat", "--worker", role, json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
            )
        self._buffer = b""

    def expect(self, key: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = json.loads(line)
                if key in message:
                    return message[key]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"worker {self.role} gave no {key!r} within {timeout}s: {self.tail()}")
            if select.select([fd], [], [], min(remaining, 0.5))[0]:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise BenchError(f"worker {self.role} exited ({self.process.wait()}): {self.tail()}")
                self._buffer += chunk

    def tell(self, message: dict[str, Any]) -> None:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdin.close()
        self.process.stdout.close()


def start_workers(stack: ExitStack, cluster, specs: list[tuple[int, str, dict[str, Any]]],
                  logdir: Path, timeout: float = 30.0) -> list[Worker]:
    workers = []
    for host, role, cfg in specs:
        worker = Worker(cluster, host, role, cfg, logdir / f"{role}-h{host}-{len(list(logdir.iterdir()))}.log")
        stack.callback(worker.close)
        workers.append(worker)
    for worker in workers:
        worker.expect("ready", timeout)
    return workers


def go(workers: list[Worker], delay: float = 0.2, **fields: Any) -> float:
    t0 = time.time() + delay
    for worker in workers:
        worker.tell({"go": True, "t0": t0, **fields})
    return t0


def quantiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99) of all the samples (statistics.quantiles, inclusive)."""
    if len(values) < 2:
        raise BenchError(f"too few samples for percentiles: {len(values)}")
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def p50_p99(values: list[float]) -> str:
    p50, p99 = quantiles(values)
    return f"{ms1(p50, 2)} / {ms1(p99, 2)}"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(errors.items())) or "none"


# ------------------------------------------------------------------- the phases


@dataclass
class Baseline:
    rate: float              # raw PUB->SUB, flood
    size: int                # bytes of each frame's body
    latencies: list[float]   # one-way at OFFERED msg/s


def baseline(cluster, logdir: Path, seconds: float) -> Baseline:
    event = {"topic": "chat.message", "node": "n1", "time": 1764112345.123456, "seq": 123456, "kind": "message",
             "user": "tp1", "text": _stamp(1764112345.123456), "id": "12345", "server": "n1"}
    body = "{" + "x" * (len(json.dumps(event)) - 2) + "}"  # the size of a chat.message body on the feed
    endpoint = f"tcp://{cluster.net.address(1)}:{BASE_PORT}"
    results = []
    for rate in (0.0, OFFERED):
        with ExitStack() as local:
            pub, sub = start_workers(local, cluster, [
                (1, "pub", {"bind": endpoint, "topic": "chat.message", "body": body}),
                (2, "sub", {"connect": endpoint}),
            ], logdir)
            time.sleep(0.3)  # the subscription reaches the publisher
            if rate:
                go([pub, sub], seconds=seconds, rate=rate)
            else:
                go([pub], seconds=seconds + 0.6)
                go([sub], warm=0.3, seconds=seconds)
            results.append(sub.expect("result", seconds + 10))
    return Baseline(results[0]["count"] / seconds, results[0]["size"], results[1]["latencies"])


def start_chat_cluster(cluster) -> list:
    daemons = [add_daemon(cluster, f"n{i}", 100 + i, start=False) for i in range(1, 4)]
    for daemon in daemons:
        daemon.configure(chat=dict(CHAT_LIMITS))
        daemon.start()
    cluster.wait_agreed("n3", timeout=20)
    return daemons


def endpoints(daemon) -> dict[str, str]:
    return {"endpoint": daemon.endpoint, "feed": feed_endpoint(daemon)}


def counters(daemons) -> dict[str, dict[str, int]]:
    return {d.name: {k: d.request("stats", timeout=2.0)[k] for k in STAT_KEYS} for d in daemons}


@dataclass
class Throughput:
    seconds: float
    window: int                          # messages outstanding per client
    batch: int                           # messages per request (chat.send_many when > 1)
    sent: float
    committed: float
    delivered: dict[str, float]          # per daemon's feed
    missing: int                         # committed but absent from a feed
    duplicated: int                      # delivered more than once on a feed
    gaps: int
    errors: dict[str, int]
    unanswered: int
    ack_latency: list[float]
    feed_latency: list[float]
    cpu: dict[str, float]                # process -> CPU seconds over the window
    busy: float                          # all CPUs, fraction
    messages: int                        # committed in the window (ok replies)
    stats: dict[str, dict[str, int]]     # daemon -> counter deltas over the run (dsctl stats)


def throughput(cluster, daemons, logdir: Path, seconds: float, window: int, tag: str, batch: int = 1,
               samplers: Callable[[dict[str, int]], list[subprocess.Popen]] | None = None) -> Throughput:
    """The sustained-rate run; `samplers(daemon name -> pid)` starts profilers at the window's start."""
    users = [f"{tag}{i}" for i in range(1, 4)]
    with ExitStack() as local:
        clients = start_workers(local, cluster, [
            (i, "client", {**endpoints(daemons[i - 1]), "user": users[i - 1], "users": users, "window": window,
                           "batch": batch})
            for i in range(1, 4)
        ], logdir)
        pids = {f"{d.name} ({'leader' if d.name == 'n3' else 'follower'})": python_pid(d.process) for d in daemons}
        pids.update({f"client h{i}": python_pid(w.process) for i, w in enumerate(clients, 1)})
        stats0 = counters(daemons)
        t0 = go(clients, delay=0.3, seconds=seconds)
        _wait_until(t0)
        cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        busy0 = system_cpu_busy()
        profilers = samplers({d.name: python_pid(d.process) for d in daemons}) if samplers else []
        for profiler in profilers:
            local.callback(profiler.kill)
        _wait_until(t0 + seconds)
        cpu1 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        busy1 = system_cpu_busy()
        for profiler in profilers:
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise BenchError(f"profiler {profiler.args[:2]} did not finish") from None
        results = [w.expect("result", seconds + 30) for w in clients]
        stats1 = counters(daemons)
    acked = {r["user"]: set(r["acked"]) for r in results}
    feeds = [r["received"].get(user, []) for r in results for user in acked]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    committed_in = sum(r["acked_in"] for r in results)
    return Throughput(
        seconds=seconds, window=window, batch=batch,
        sent=sum(r["sent_in"] for r in results) / seconds,
        committed=committed_in / seconds,
        delivered={f"n{i}": r["delivered_in"] / seconds for i, r in enumerate(results, 1)},
        missing=sum(len(acked[user] - set(r["received"].get(user, []))) for r in results for user in acked),
        duplicated=sum(len(ids) - len(set(ids)) for ids in feeds),
        gaps=sum(r["feed_gaps"] for r in results),
        errors=dict(errors), unanswered=sum(r["unanswered"] for r in results),
        ack_latency=[x for r in results for x in r["ack_latency"]],
        feed_latency=[x for r in results for x in r["feed_latency"]],
        cpu={name: cpu1[name] - cpu0[name] for name in pids},
        busy=(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        messages=committed_in,
        stats={n: {k: stats1[n][k] - stats0[n][k] for k in STAT_KEYS} for n in stats0},
    )


@dataclass
class Latency:
    rate: float
    sent: int
    latencies: list[float]   # send -> delivered on n2's feed
    ack_latency: list[float]  # send -> the sender's reply
    sequenced: list[float]   # send -> the entry's `time` (the leader's clock when it sequenced it)


def latency(cluster, daemons, logdir: Path, phases: list[list[float]]) -> tuple[list[Latency], dict]:
    """A paced sender on h1 (n1), a receiver on n2's feed; one result per phase [rate, seconds]."""
    with ExitStack() as local:
        receiver, sender = start_workers(local, cluster, [
            (2, "receiver", {"feed": feed_endpoint(daemons[1]), "user": "lat1"}),
            (1, "sender", {**endpoints(daemons[0]), "user": "lat1"}),
        ], logdir)
        go([receiver, sender], delay=0.3, phases=phases)
        total = sum(seconds for _rate, seconds in phases)
        sent = sender.expect("result", total + 20)
        received = receiver.expect("result", total + 20)
    return [Latency(rate, sent["sent"][i], received["latencies"][i], sent["ack_latency"][i], received["sequenced"][i])
            for i, (rate, _seconds) in enumerate(phases)], sent


@dataclass
class FailoverTrial:
    total: float       # kill -> first message sent after it delivered on every survivor's feed
    elected: float     # kill -> the last survivor's `leader` event (bench.failover's figure)
    after: float       # elected -> that message delivered everywhere


def first_new_message(feeds: Feeds, mark: int, names: list[str], after: float, user: str) -> dict[str, float] | None:
    """{daemon: arrival} of the first message of `user` sent after `after`, once it is on every daemon's feed."""
    found: dict[str, float] = {}
    for event in feeds.events[mark:]:
        if event.node in found or event.topic != "chat.message" or event.body.get("user") != user:
            continue
        sent = _sent_at(event.body.get("text", ""))
        if sent is not None and sent > after:
            found[event.node] = event.arrival
    return found if set(found) >= set(names) else None


def failover(cluster, daemons, logdir: Path, trials: int, seed: int) -> tuple[list[FailoverTrial], dict]:
    rng = random.Random(seed)
    top, survivors = daemons[-1], daemons[:-1]
    names = [d.name for d in survivors]
    user = "fo1"
    results: list[FailoverTrial] = []
    with ExitStack() as local:
        feeds = local.enter_context(Feeds())
        for daemon in survivors:
            feeds.connect(daemon)
        (sender,) = start_workers(local, cluster, [(1, "sender", {**endpoints(daemons[0]), "user": user})], logdir)
        t0 = go([sender], delay=0.1, phases=[[FAILOVER_RATE, WORKER_LIMIT - 30]])
        feeds.wait_for(lambda: first_new_message(feeds, 0, names, t0 + 0.2, user), 10, "chat traffic on both feeds")
        for trial in range(1, trials + 1):
            time.sleep(rng.uniform(0.3, 0.7))
            term0 = cluster.agreed("n3") or cluster.wait_agreed("n3", timeout=10)
            feeds.drain(0)
            mark = len(feeds.events)
            os.kill(python_pid(top.process), signal.SIGKILL)
            t_kill = time.time()  # after the kill: a message stamped later cannot have reached n3
            found = feeds.wait_for(lambda: first_new_message(feeds, mark, names, t_kill, user), 15,
                                   "the first message sent after the kill on every survivor")
            leaders: dict[str, float] = {}
            for e in feeds.events[mark:]:
                if e.topic == "leader" and e.body.get("leader") == "n2" and e.body.get("term", 0) > term0[0]:
                    leaders.setdefault(e.node, e.time)
            if set(leaders) != set(names):
                raise BenchError(f"failover trial {trial}: not every survivor reported n2: {leaders}")
            delivered, elected = max(found.values()), max(leaders.values())
            results.append(FailoverTrial(delivered - t_kill, elected - t_kill, delivered - elected))
            progress(f"  failover trial {trial}/{trials}: first new message everywhere {ms1(delivered - t_kill)} "
                     f"after the kill (leader reported at {ms1(elected - t_kill)})")
            top.process.wait(timeout=10)
            cluster.wait_agreed("n2", timeout=10)
            top.start()
            cluster.wait_agreed("n3", timeout=20)
            back = time.time()
            feeds.wait_for(lambda: first_new_message(feeds, mark, names, back, user), 15,
                           "chat traffic again after n3 came back")
        os.kill(python_pid(sender.process), signal.SIGUSR2)
        sent = sender.expect("result", 20)
    return results, sent


@dataclass
class Profile:
    run: Throughput                                 # the sustained-rate run it watched
    py_spy: dict[str, profiling.Samples]            # daemon -> its samples (none without py-spy)
    perf: dict[str, Counter[str]] | None            # daemon -> CPU seconds by thread and object file


def profile(cluster, daemons, logdir: Path, seconds: float, window: int, py_spy: str | None,
            perf: str | None) -> Profile:
    """The sustained rate again, py-spy sampling the leader and a follower, perf all 3 daemons."""
    spy_files = {name: logdir / f"{name}.speedscope.json" for name in PROFILED}
    perf_file = logdir / "daemons.perf"
    names: dict[int, str] = {}

    def samplers(pids: dict[str, int]) -> list[subprocess.Popen]:
        names.update({pid: name for name, pid in pids.items()})
        started = [profiling.record(py_spy, pids[name], int(seconds), spy_files[name]) for name in PROFILED
                   if py_spy]
        if perf:
            started.append(profiling.perf_record(perf, list(pids.values()), int(seconds), perf_file))
        return started

    run = throughput(cluster, daemons, logdir, seconds, window, tag="pr", samplers=samplers)
    return Profile(run, {name: profiling.read(path) for name, path in spy_files.items() if path.exists()},
                   profiling.perf_read(perf, perf_file, names) if perf and perf_file.exists() else None)


# ------------------------------------------------------------------- the report


@dataclass
class Results:
    base: Baseline
    peer: raft_peer.RaftRate | None      # None: PySyncObj is not installed
    swept: list[Throughput]              # the sustained-rate run first, then the sweep
    lat: list[Latency]
    lat_sender: dict[str, Any]
    fo: list[FailoverTrial]
    fo_sender: dict[str, Any]
    prof: Profile | None

    @property
    def delivered(self) -> float:
        return min(self.swept[0].delivered.values())


def goals(r: Results) -> list[str]:
    tp, delivered = r.swept[0], r.delivered
    p50, p99 = quantiles(next(one for one in r.lat if one.rate == OFFERED).latencies)
    rows = [[f"delivered on every feed (the slowest of 3; 3 clients × {tp.window} outstanding)",
             f"{delivered:,.0f} msg/s", f"≥ {RATE_GOAL:,.0f} msg/s", met(delivered >= RATE_GOAL)],
            [f"… against raw ZeroMQ PUB→SUB ({r.base.rate:,.0f} msg/s: tcp h1→h2, flood, "
             f"{r.base.size}-byte frames, nothing parsed)", percent(delivered / r.base.rate),
             f"≥ {100 * RAW_GOAL:.0f} %", met(delivered >= RAW_GOAL * r.base.rate)]]
    if r.peer:
        rows.append([f"… against PySyncObj ({r.peer.rate:,.0f} committed appends/s at its leader: 3 nodes on "
                     f"127.0.0.1, window {PEER_WINDOW}, {TEXT_LEN}-byte messages, {r.peer.seconds:g} s; "
                     f"{r.peer.errors} appends failed)",
                     f"{delivered / r.peer.rate:.2f}×", f"≥ {PEER_GOAL:g}×",
                     met(delivered >= PEER_GOAL * r.peer.rate)])
    rows += [[f"send on h1 → delivered on n2's feed at {OFFERED:,.0f} msg/s: p50", ms1(p50, 2), "≤ 1 ms",
              met(p50 <= P50_GOAL)],
             ["… p99", ms1(p99, 2), "≤ 5 ms", met(p99 <= P99_GOAL)],
             ["committed messages lost / duplicated on the 3 feeds", f"{tp.missing} / {tp.duplicated}", "0 / 0",
              met(tp.missing == tp.duplicated == 0)]]
    lines = [table(["measure", "figure", "goal", ""], rows), ""]
    if not r.peer:
        lines += ["PySyncObj is not installed (`pip install -e '.[bench]'`): no comparison with it.", ""]
    return lines


def rate_section(r: Results) -> list[str]:
    tp, base = r.swept[0], r.base
    per = 1 / max(1, tp.messages)
    peer = [["PySyncObj: committed at its leader", f"{r.peer.rate:,.0f}", percent(r.peer.rate / base.rate), "1.00×"]
            ] if r.peer else []

    def row(name: str, rate: float) -> list[str]:
        return [name, f"{rate:,.0f}", percent(rate / base.rate), f"{rate / r.peer.rate:.2f}×" if r.peer else ""]

    daemons = sum(c for n, c in tp.cpu.items() if n.startswith("n"))
    return [
        "**Sustained rate** — each client pipelines "
        + (f"`chat.send` with {tp.window} requests outstanding" if tp.batch == 1 else
           f"`chat.send_many` of {tp.batch} messages with {tp.window} messages outstanding")
        + f" (DEALER, rid-matched) and reads its daemon's feed; {tp.seconds:g} s:",
        "",
        table(["measure", "messages/s", "vs raw PUB→SUB", "vs PySyncObj"], [
            ["baseline: raw pyzmq PUB→SUB, tcp h1→h2", f"{base.rate:,.0f}", "100 %", ""], *peer,
            row("chat: sent (3 clients)", tp.sent), row("chat: committed (ok replies)", tp.committed),
            *[row(f"chat: delivered on {name}'s feed", rate) for name, rate in tp.delivered.items()],
        ]),
        "",
        f"Committed but missing from a feed: {tp.missing}; duplicated on a feed: {tp.duplicated}; seq gaps: "
        f"{tp.gaps}; error replies: {_errors(tp.errors)}; unanswered: {tp.unanswered}. `chat.send` → reply "
        f"p50 / p99 {p50_p99(tp.ack_latency)}, send → feed {p50_p99(tp.feed_latency)} (Little: "
        f"{3 * tp.window} outstanding / {tp.committed:,.0f} per s = {ms1(3 * tp.window / max(1, tp.committed), 2)} "
        "— the window, not the path).",
        "",
        table(["process", "CPU over the window", "CPU µs per committed message"], [
            *[[name, f"{100 * cpu / tp.seconds:.0f} % of a CPU", f"{cpu * per * 1e6:.0f}"]
              for name, cpu in tp.cpu.items()],
            ["all 3 daemons", f"{100 * daemons / tp.seconds:.0f} %", f"{daemons * per * 1e6:.0f}"],
            ["whole machine (all processes)", f"{100 * tp.busy:.0f} % of {os.cpu_count()} CPUs busy", ""]]),
        "",
        table(["daemon (`dsctl stats` deltas / committed message)", *STAT_KEYS],
              [[name, *(f"{s[k] * per:.2f}" for k in STAT_KEYS)] for name, s in tp.stats.items()]),
        "",
    ]


def sweep_section(runs: list[Throughput]) -> list[str]:
    rows = []
    for run in sorted(runs, key=lambda r: r.window):
        per = 1e6 / max(1, run.messages)
        daemons = sum(c for n, c in run.cpu.items() if n.startswith("n"))
        rows.append([run.window, f"{run.seconds:g} s", f"{run.committed:,.0f}", f"{min(run.delivered.values()):,.0f}",
                     p50_p99(run.ack_latency), f"{daemons * per:.0f}", f"{100 * run.busy:.0f} %", _errors(run.errors)])
    return ["Window sweep (the same clients with fewer or more `chat.send` outstanding each):", "",
            table(["window", "run", "committed msg/s", "delivered on every feed", "send → reply p50 / p99",
                   "CPU µs per message (3 daemons)", "machine busy", "error replies"], rows), ""]


def latency_section(r: Results) -> list[str]:
    base_p50 = quantiles(r.base.latencies)[0]
    rows = [["baseline: raw PUB→SUB tcp h1→h2", f"{OFFERED:,.0f}", len(r.base.latencies), p50_p99(r.base.latencies),
             ms1(max(r.base.latencies), 2), "", "1×"]]
    rows += [["chat: send on h1 → delivered on n2's feed", f"{one.rate:,.0f}", f"{len(one.latencies)} of {one.sent}",
              p50_p99(one.latencies), ms1(max(one.latencies), 2), p50_p99(one.ack_latency),
              f"{quantiles(one.latencies)[0] / base_p50:.0f}×"] for one in r.lat]
    return [
        "**End-to-end latency** — paced sender on h1 (its daemon n1 is a follower: n1 forwards to the leader n3, "
        "n3 replicates to n1 and n2, n2 commits and publishes on the APPEND's arrival), receiver on n2's feed on "
        f"h2; {r.lat[0].rate:g} msg/s first, then {r.lat[-1].rate:,.0f} msg/s:",
        "",
        table(["path", "offered msg/s", "messages", "p50 / p99", "max", "send → reply p50 / p99", "p50 / baseline"],
              rows),
        "",
        "Split at the entry's `time` (the leader's clock when it sequenced it; one clock for all): *to the leader* "
        "= the request to n1, n1's FORWARD, n3 sequencing it; *leader → n2's feed* = n3's APPEND to n2, n2 storing "
        "and publishing it, the subscriber reading it.",
        "",
        table(["offered msg/s", "send → sequenced at the leader p50 / p99", "leader → n2's feed p50 / p99"], [
            [f"{one.rate:,.0f}", p50_p99(one.sequenced),
             p50_p99([x - y for x, y in zip(one.latencies, one.sequenced)])] for one in r.lat]),
        "",
        f"Sender error replies: {_errors(r.lat_sender['errors'])}; unanswered: {r.lat_sender['unanswered']}.",
        "",
    ]


def failover_section(r: Results) -> list[str]:
    def row(name: str, values: list[float], compare: str) -> list[str]:
        return [name, ms1(median(values)), ms1(min(values)), ms1(max(values)), compare]

    totals = [t.total for t in r.fo]
    return [
        f"**Failover under traffic** — `kill -9` of the leader n3 while a client on h1 sends {FAILOVER_RATE:.0f} "
        f"msg/s through n1; {len(r.fo)} trials:",
        "",
        table(["measure", "median", "min", "max", "compare"], [
            row("kill → first message sent after the kill delivered on every survivor's feed", totals,
                f"{median(totals) / CRASH_FAILOVER:.2f}× the crash-failover median ({ms1(CRASH_FAILOVER, 0)}, "
                "bench.failover, 3 daemons, quoted)"),
            row("… of which kill → last survivor reports the new leader n2", [t.elected for t in r.fo],
                "the same measure as bench.failover, in these trials"),
            row("… of which new leader → that message delivered everywhere", [t.after for t in r.fo],
                "chat view change, n1 re-forwards, replicate, commit"),
        ]),
        "",
        f"The failover client sent {sum(r.fo_sender['sent'])} messages; error replies "
        f"{_errors(r.fo_sender['errors'])}; unanswered at the end {r.fo_sender['unanswered']}.",
        "",
    ]


def profile_section(r: Results, top: int) -> list[str]:
    if r.prof is None:
        return ["`--no-profile`, or neither py-spy (`pip install -e '.[bench]'`) nor perf is installed: no profile.",
                ""]
    run = r.prof.run
    lines = [f"**Where the daemons' time goes** — the same load again for {run.seconds:g} s ({run.committed:,.0f} "
             "msg/s committed).", ""]
    if r.prof.py_spy:
        lines += ["py-spy on the leader n3 and the follower n1 (busy wall-clock samples by innermost Python frame; C "
                  "code counts as its caller's); share of busy samples · µs per committed message:", "",
                  profiling.report(r.prof.py_spy, run.messages, top), ""]
    else:
        lines += ["py-spy is not installed (`pip install -e '.[bench]'`): no Python profile.", ""]
    if r.prof.perf:
        lines += [f"perf on all 3 daemons (cpu-clock at {profiling.PERF_HZ} Hz): CPU time by thread and the object "
                  "file it ran in:", "", profiling.perf_report(r.prof.perf, run.messages, top), ""]
    else:
        lines += ["perf is not installed: no CPU split by thread and object file.", ""]
    return lines


def chart(path: Path, r: Results) -> Path:
    rates = {"raw ZeroMQ PUB→SUB": r.base.rate, "dsd: delivered on every feed": r.delivered}
    rate_goals = {f"goal {RATE_GOAL:,.0f} msg/s": RATE_GOAL,
                  f"goal {100 * RAW_GOAL:.0f} % of raw": RAW_GOAL * r.base.rate}
    if r.peer:
        rates["PySyncObj: committed at its leader"] = r.peer.rate
        rate_goals[f"goal {PEER_GOAL:g}× PySyncObj"] = PEER_GOAL * r.peer.rate
    latencies = {f"raw PUB→SUB at {OFFERED:,.0f}/s": r.base.latencies,
                 **{f"dsd at {one.rate:,.0f}/s": one.latencies for one in r.lat}}
    return charts.write(path, f"dsd chat, 3 daemons on 3 private hosts ({code_version()})", [
        charts.Panel("Sustained rate", "messages/s (log scale)", list(rates), {"measured": list(rates.values())},
                     rate_goals, log=True),
        charts.Panel("Send → delivered on another host's feed", "ms", ["p50", "p99"],
                     {name: [1000 * q for q in quantiles(values)] for name, values in latencies.items()},
                     {"goal p50 1 ms": P50_GOAL * 1000, "goal p99 5 ms": P99_GOAL * 1000}),
    ])


def report(r: Results, args: argparse.Namespace, note: str, elapsed: float, chart_line: str) -> str:
    return "\n".join([
        "### Chat (3 daemons on 3 private hosts: rate and latency against raw ZeroMQ and PySyncObj, failover)",
        "",
        f"Default timings ({', '.join(f'{k} {v:g} s' for k, v in DEFAULT_TIMING.items())}); `[chat] rate` and "
        "`burst` 1,000,000 in the bench config (the defaults are a per-user abuse limit). n3 leads; one client "
        f"process per host, on its own daemon's control socket and feed (ipc). Command: `{command(args)}` "
        f"({elapsed:.0f} s). {note}. {chart_line}",
        "",
        *goals(r), *rate_section(r), *(sweep_section(r.swept) if len(r.swept) > 1 else []), *latency_section(r),
        *failover_section(r), *profile_section(r, args.top),
        "Rates count, over the same window, the sends issued, the ok replies and the feed events received by the "
        "clients. Latencies compare the send time written into the message text with the arrival time at the "
        "reader (one clock for all processes); percentiles are statistics.quantiles' (inclusive). CPU is "
        "utime+stime from /proc.",
    ])


def run(args: argparse.Namespace) -> str:
    seconds, lat_seconds, base_seconds, trials, prof_seconds, sweep = \
        (3.0, 2.0, 1.0, 2, 2.0, []) if args.quick else (10.0, 6.0, 3.0, 5, 4.0, [8, 256])
    seconds, trials, sweep = args.seconds or seconds, args.trials or trials, sweep if args.sweep is None else args.sweep
    py_spy, perf = (None, None) if args.no_profile else (profiling.find("py-spy"), profiling.find("perf"))
    note = before_run(args.wait_quiet)
    started = time.monotonic()
    with private_cluster(3) as cluster, tempfile.TemporaryDirectory(prefix="dsd-bench-chat-") as tmp:
        logdir = Path(tmp)
        progress(f"chat: baseline PUB->SUB h1->h2 ({base_seconds:g} s flood, {base_seconds:g} s at {OFFERED:g}/s)")
        base = baseline(cluster, logdir, base_seconds)
        progress(f"  raw PUB->SUB: {base.rate:,.0f} msg/s of {base.size} bytes")
        peer = None
        if installed("pysyncobj"):
            progress(f"chat: PySyncObj, 3 nodes on 127.0.0.1, window {PEER_WINDOW}, {seconds:g} s")
            peer = raft_peer.race(seconds, PEER_WINDOW, TEXT_LEN)
            progress(f"  PySyncObj: {peer.rate:,.0f} committed appends/s at its leader")
        daemons = start_chat_cluster(cluster)
        swept = []
        for window, length in [(args.window, seconds)] + [(w, 4.0) for w in sweep]:
            progress(f"chat: sustained rate, 3 clients, window {window}, {length:g} s")
            swept.append(throughput(cluster, daemons, logdir, length, window, tag=f"w{window}-{len(swept)}-",
                                    batch=args.batch))
            progress(f"  committed {swept[-1].committed:,.0f} msg/s, "
                     f"delivered everywhere {min(swept[-1].delivered.values()):,.0f} msg/s")
        progress(f"chat: latency at {LOW_RATE:g} then {OFFERED:g} msg/s")
        lat, lat_sender = latency(cluster, daemons, logdir, [[LOW_RATE, lat_seconds / 2], [OFFERED, lat_seconds]])
        progress(f"chat: failover under traffic, {trials} trials")
        fo, fo_sender = failover(cluster, daemons, logdir, trials, args.seed)
        prof = None
        if py_spy or perf:
            tools = " + ".join(name for name, path in (("py-spy", py_spy), ("perf", perf)) if path)
            progress(f"chat: profile ({tools}), {prof_seconds:g} s")
            prof = profile(cluster, daemons, logdir, prof_seconds, args.window, py_spy, perf)
        elapsed = time.monotonic() - started
    results = Results(base, peer, swept, lat, lat_sender, fo, fo_sender, prof)
    if installed("matplotlib"):
        path = chart(args.chart, results).resolve()
        chart_line = f"Chart: `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`."
    else:
        chart_line = "matplotlib is not installed (`pip install -e '.[bench]'`): no chart."
    return report(results, args, note, elapsed, chart_line)


def parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about 40 s in all)")
    p.add_argument("--seconds", type=float, default=0,
                   help="sustained-rate window, and PySyncObj's (default 10, quick 3)")
    p.add_argument("--window", type=int, default=64, help="messages outstanding per client (default 64)")
    p.add_argument("--batch", type=int, default=1,
                   help="messages per request: more than 1 sends them with chat.send_many (default 1: chat.send)")
    p.add_argument("--trials", type=int, default=0, help="failover trials (default 5, quick 2)")
    p.add_argument("--sweep", type=int, nargs="*", metavar="WINDOW",
                   help="more sustained-rate runs of 4 s with these windows (default 8 256; quick: none)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiling run")
    p.add_argument("--top", type=int, default=12, help="functions and files listed per profiled daemon (default 12)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random pause between failover trials")
    p.add_argument("--chart", type=Path, default=ROOT / "bench" / "chat.svg",
                   help="the SVG chart written (default bench/chat.svg)")
    return p


def command(args: argparse.Namespace) -> str:
    """The command line that gives `args` (only the flags that differ from their defaults)."""
    defaults = vars(parser().parse_args([]))
    flags = []
    for name, value in vars(args).items():
        if value != defaults[name]:
            shown = " ".join(map(str, value)) if isinstance(value, list) else "" if value is True else f"{value:g}" \
                if isinstance(value, float) else value
            flags.append(f"--{name.replace('_', '-')} {shown}".rstrip())
    return " ".join(["python -m bench.chat", *flags])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
