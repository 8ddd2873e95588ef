"""Chat: sustained message rate, end-to-end latency and failover under traffic, on 3 private hosts.

    python -m bench.chat [--quick] [--seconds 10] [--window 64] [--sweep 8 256] [--trials 5]
                         [--py-spy PATH] [--no-perf] [--no-profile] [--wait-quiet S]

Three daemons n1, n2, n3 (priorities 101..103, so n3 leads) on private hosts h1..h3 at the
default timings, with `[chat] rate` and `burst` raised to 1,000,000 (the defaults, 20/s with
bursts of 50, are a per-user abuse limit and would cap each benchmark client at 20 msg/s).
Every client is a separate Python process started on its host (`ip netns exec`) and talks to
its daemon through the daemon's control socket and feed, as dschat does; all processes share
one clock, so a send time written into the message text can be compared with the arrival
time at any subscriber.

1. Baseline (same run, same private network, before any daemon starts): raw pyzmq PUB -> SUB
   over tcp from h1 to h2 with frames shaped like a chat entry on the feed (topic
   `chat.message` + a JSON body of the same size): the most messages/s the subscriber takes
   in (the publisher floods; nothing parsed), and the one-way latency at 1,000 msg/s.
2. Sustained rate: one client per host, each a DEALER on its own daemon's control socket
   pipelining `chat.send` with `--window` requests outstanding (rid-matched replies), each
   also subscribed to its daemon's feed. Sent, committed (ok replies) and delivered (on every
   feed) per second over the same window; the goal is delivered >= 10 % of the raw rate.
   CPU of every process over the window, from /proc.
3. Latency at 1,000 msg/s offered: a paced sender on h1 (its daemon a follower), a receiver
   subscribed to n2's feed (another follower): send -> delivery on n2's feed, p50/p99/max.
   The path: h1's daemon forwards to the leader n3, which replicates to n1 and n2; a follower
   commits what it holds of the leader's log at once, so n2 publishes on the APPEND's arrival.
4. Failover: a client on h1 sends steadily (200 msg/s); `kill -9` of the leader n3; the time
   from the kill to the first message *sent after the kill* delivered on every survivor's
   feed (arrival times taken by this process as it reads the feeds). Split: kill -> the last
   survivor's `leader` event (the crash-failover figure of `bench.failover`, measured in the
   same trials), then -> that message delivered. n3 is restarted and takes back the lead
   between trials.
5. Window sweep (full run; `--sweep`): the sustained rate again with 8 and 256 requests
   outstanding per client, with `dsctl stats` counters per committed message.
6. Profile (unless --no-profile): the sustained rate again, the leader n3 and the follower n1
   sampled by py-spy when it is installed (on PATH or `--py-spy PATH`; nothing is installed by
   this benchmark); without py-spy the daemons are restarted under cProfile (`python -m
   cProfile -m dsd`, no change to dsd) and stopped with SIGTERM so they write their profiles.
   With perf installed (`--no-perf` to skip), `perf record -e cpu-clock` on all three daemons
   splits their CPU time by thread (main, libzmq's I/O thread) and object (interpreter,
   kernel, libzmq, SQLite).

Every daemon, worker and profiler is stopped by its pid and the namespaces deleted on the way
out; each worker also exits by itself after WORKER_LIMIT seconds.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import pstats
import random
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import zmq

from bench.common import (
    DEFAULT_TIMING, BenchError, add_daemon, base_parser, before_run, drain_until, median, met, private_cluster,
    proc_cpu_seconds, progress, python_pid, run_main, subscriber, system_cpu_busy, table,
)

ROOT = Path(__file__).resolve().parent.parent
RATE_GOAL = 0.10        # delivered / raw PUB->SUB
P50_GOAL = 0.001        # s, at 1,000 msg/s
P99_GOAL = 0.005
OFFERED = 1000.0        # msg/s for the latency run (the goal's rate)
LOW_RATE = 100.0        # msg/s, the latency run's first, unloaded phase
FAILOVER_RATE = 200.0   # msg/s sent during the failover trials
CRASH_FAILOVER = 0.914  # s, bench.failover median for 3 daemons (bench/RESULTS.md), quoted
TEXT_LEN = 64           # characters of message text: a feed frame of ~200 bytes
CHAT_LIMITS = {"rate": 1000000.0, "burst": 1000000}
BASE_PORT = 5599        # the baseline's PUB port on h1 (a private host)
WORKER_LIMIT = 120.0    # s: every worker process exits by itself after this


# ======================================================================== workers
#
# `python -m bench.chat --worker ROLE JSON` runs one client process (started on a private
# host by the coordinator below). Protocol on its stdin/stdout, one JSON object a line:
# it prints {"ready": ...} once set up, waits for {"go": T0, ...} (wall clock), prints its
# result, and exits. It also exits at its own deadline or when stdin closes.


class _Control:
    """The worker's stdin: lines from the coordinator, without blocking."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self._buffer = b""
        self.closed = False

    def lines(self) -> list[dict[str, Any]]:
        out = []
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                out.append(json.loads(line))
        return out

    def wait(self, deadline: float) -> dict[str, Any]:
        while time.time() < deadline:
            lines = self.lines()
            if lines:
                return lines[0]
            if self.closed:
                raise SystemExit(3)
            select.select([self.fd], [], [], min(0.5, max(0.0, deadline - time.time())))
        raise SystemExit(4)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _stamp(now: float, length: int = TEXT_LEN) -> str:
    """Message text: the send time, padded to `length` characters."""
    head = f"{now:.6f} "
    return head + "x" * max(1, length - len(head))


def _sent_at(text: str) -> float | None:
    try:
        return float(text.split(" ", 1)[0])
    except (ValueError, AttributeError):
        return None


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _ChatClient:
    """A DEALER on a daemon's control socket (rid-matched, pipelined) and a SUB on its feed."""

    def __init__(self, context: zmq.Context, endpoint: str, feed: str | None, user: str) -> None:
        self.user = user
        self.session = secrets.token_urlsafe(24)
        self.dealer = context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.SNDHWM, 100000)
        self.dealer.setsockopt(zmq.RCVHWM, 100000)
        self.dealer.connect(endpoint)
        self.sub = None
        if feed:
            self.sub = subscriber(context, feed, b"chat.", 1000000)
        self.poller = zmq.Poller()
        self.poller.register(self.dealer, zmq.POLLIN)
        if self.sub is not None:
            self.poller.register(self.sub, zmq.POLLIN)
        self.rids = 0

    def send(self, cmd: str, rid: str, **args: Any) -> None:
        payload = {"cmd": cmd, "args": {"user": self.user, "session": self.session, **args}, "rid": rid}
        self.dealer.send_multipart([b"", json.dumps(payload).encode()])

    def replies(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            yield json.loads(frames[-1])

    def feed(self) -> Iterator[dict[str, Any]]:
        if self.sub is None:
            return
        while True:
            try:
                _topic, *bodies = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for body in bodies:
                yield json.loads(body)

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
                for event in self.feed():
                    if event.get("user") == self.user and event.get("id") == mark:
                        return
        raise SystemExit(f"{self.user}: feed subscription never came up")

    def leave(self) -> None:
        try:
            self.call("chat.leave", 2.0)
        except SystemExit:
            pass


def _worker_pub(cfg: dict[str, Any], control: _Control) -> dict[str, Any]:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.bind(cfg["bind"])
    topic, body = cfg["topic"].encode(), cfg["body"].encode()
    _say({"ready": True})
    go = control.wait(time.time() + 60)
    t0, t_end, rate = go["t0"], go["t0"] + go["seconds"], go.get("rate")
    while time.time() < t0:
        time.sleep(0.001)
    sent = 0
    if rate:  # paced, the send time in the body
        while True:
            now = time.time()
            if now >= t_end:
                break
            due = t0 + sent / rate
            if due > now:
                time.sleep(due - now)
                continue
            stamp = f"{time.time():.6f}".encode()
            pub.send_multipart([topic, stamp + body[len(stamp):]])
            sent += 1
    else:  # flood
        while True:
            for _ in range(1000):
                try:
                    pub.send_multipart([topic, body], zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
            if time.time() >= t_end:
                break
    pub.close(linger=0)
    context.destroy(linger=0)
    return {"sent": sent}


def _worker_sub(cfg: dict[str, Any], control: _Control) -> dict[str, Any]:
    context = zmq.Context()
    sub = subscriber(context, cfg["connect"])
    _say({"ready": True})
    go = control.wait(time.time() + 60)
    start, stop = go["t0"] + go.get("warm", 0.0), go["t0"] + go.get("warm", 0.0) + go["seconds"]
    count, size, latencies = 0, 0, []
    paced = bool(go.get("rate"))
    while True:
        now = time.time()
        if now >= stop + 0.3:
            break
        if not sub.poll(50):
            continue
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.time()
            if paced:
                sent = float(frames[1][:17])
                if start <= sent < stop:
                    latencies.append(now - sent)
            elif start <= now < stop:
                count += 1
                size = len(frames[1])
    sub.close(linger=0)
    context.destroy(linger=0)
    return {"count": count, "size": size, "latencies": [round(x, 7) for x in latencies]}


def _worker_client(cfg: dict[str, Any], control: _Control) -> dict[str, Any]:
    """Pipelined chat.send with `window` outstanding; records replies and the feed."""
    context = zmq.Context()
    client = _ChatClient(context, cfg["endpoint"], cfg["feed"], cfg["user"])
    client.join()
    client.sync()
    _say({"ready": True})
    go = control.wait(time.time() + 60)
    t0, t_end, window = go["t0"], go["t0"] + go["seconds"], cfg["window"]
    users = set(cfg["users"])
    outstanding: dict[str, float] = {}
    sent_in = acked_in = 0
    acked: list[int] = []
    ack_latency: list[float] = []
    errors: Counter[str] = Counter()
    delivered_in = 0
    feed_latency: list[float] = []
    received: dict[str, list[int]] = {u: [] for u in users}
    seqs: list[int] = []
    n = 0

    def take(now: float) -> None:
        nonlocal acked_in, delivered_in
        for reply in client.replies():
            rid = reply.get("rid", "")
            sent = outstanding.pop(rid, None)
            if sent is None:
                continue
            if reply.get("ok"):
                acked.append(int(rid))
                ack_latency.append(now - sent)
                if t0 <= now < t_end:
                    acked_in += 1
            else:
                errors[reply["error"]["code"]] += 1
        for event in client.feed():
            seqs.append(event["seq"])
            if event.get("kind") != "message" or event.get("user") not in users:
                continue
            id_ = event["id"]
            if not id_.isdigit():
                continue
            received[event["user"]].append(int(id_))
            sent = _sent_at(event.get("text", ""))
            if sent is not None and t0 <= sent < t_end:
                feed_latency.append(now - sent)
            if t0 <= now < t_end:
                delivered_in += 1

    while time.time() < t0:
        time.sleep(0.001)
    cpu0 = _cpu_self()
    while True:
        now = time.time()
        if now >= t_end:
            break
        while len(outstanding) < window:
            n += 1
            client.send("chat.send", str(n), id=str(n), text=_stamp(now))
            outstanding[str(n)] = now
            sent_in += 1
        client.poller.poll(max(1, int((t_end - now) * 1000)) if outstanding else 1)
        take(time.time())
    cpu1 = _cpu_self()
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
    gaps = sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1)
    context.destroy(linger=0)
    return {
        "user": cfg["user"], "sent_in": sent_in, "acked_in": acked_in, "delivered_in": delivered_in,
        "sent": n, "acked": acked, "unanswered": len(outstanding), "errors": dict(errors),
        "ack_latency": [round(x, 7) for x in ack_latency],
        "feed_latency": [round(x, 7) for x in feed_latency],
        "received": received, "feed_gaps": gaps, "cpu": cpu1 - cpu0,
    }


def _schedule(t0: float, phases: list[list[float]]) -> list[tuple[float, float, float]]:
    """[(start, end, rate)] of back-to-back phases [[rate, seconds], ...] from t0."""
    out, start = [], t0
    for rate, seconds in phases:
        out.append((start, start + seconds, rate))
        start += seconds
    return out


def _phase_of(schedule: list[tuple[float, float, float]], sent: float) -> int | None:
    for index, (start, end, _rate) in enumerate(schedule):
        if start <= sent < end:
            return index
    return None


def _worker_sender(cfg: dict[str, Any], control: _Control) -> dict[str, Any]:
    """Paced chat.send (send time in the text): phases [[rate, seconds], ...] back to back, or until 'stop'."""
    context = zmq.Context()
    client = _ChatClient(context, cfg["endpoint"], cfg.get("feed"), cfg["user"])
    client.join()
    client.sync()
    _say({"ready": True})
    go = control.wait(time.time() + 60)
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

    while time.time() < schedule[0][0]:
        time.sleep(0.0005)
    for index, (start, end, rate) in enumerate(schedule):
        while True:
            now = time.time()
            if now >= end or control.closed or any(line.get("stop") for line in control.lines()):
                break
            due = start + sent[index] / rate
            if due <= now:
                sent[index] += 1
                total += 1
                client.send("chat.send", str(total), id=str(total), text=_stamp(now))
                outstanding[str(total)] = (now, index)
            else:
                time.sleep(min(due - now, 0.002))
            take()
        if now < end:
            break  # told to stop
    deadline = time.time() + 6.0
    while outstanding and time.time() < deadline:
        client.poller.poll(50)
        take()
    client.leave()
    context.destroy(linger=0)
    return {"sent": sent, "ack_latency": [[round(x, 7) for x in phase] for phase in ack_latency],
            "errors": dict(errors), "unanswered": len(outstanding)}


def _worker_receiver(cfg: dict[str, Any], control: _Control) -> dict[str, Any]:
    """Subscribed to one feed: send -> arrival of `user`'s messages, by the phase they were sent in."""
    context = zmq.Context()
    sub = subscriber(context, cfg["feed"], b"chat.", 1000000)
    _say({"ready": True})
    go = control.wait(time.time() + 60)
    schedule = _schedule(go["t0"], go["phases"])
    latencies: list[list[float]] = [[] for _ in schedule]
    sequenced: list[list[float]] = [[] for _ in schedule]  # send -> the leader's sequencing time
    expected = sum(int(rate * (end - start)) for start, end, rate in schedule)
    received = 0
    while time.time() < schedule[-1][1] + 3.0:
        if not sub.poll(100):
            if time.time() > schedule[-1][1] + 0.5 and received >= expected:
                break
            continue
        while True:
            try:
                _topic, *bodies = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
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
    sub.close(linger=0)
    context.destroy(linger=0)
    return {"latencies": [[round(x, 7) for x in phase] for phase in latencies],
            "sequenced": [[round(x, 7) for x in phase] for phase in sequenced]}


WORKERS = {"pub": _worker_pub, "sub": _worker_sub, "client": _worker_client,
           "sender": _worker_sender, "receiver": _worker_receiver}


def worker_main(role: str, config: str) -> int:
    signal.alarm(int(WORKER_LIMIT))  # ends by itself whatever happens
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where is it stuck (stderr, the worker's log)
    control = _Control()
    result = WORKERS[role](json.loads(config), control)
    _say({"result": result})
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

    def pid(self) -> int:
        return python_pid(self.process)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


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


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def us(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def feed_body_size(text_len: int = TEXT_LEN) -> int:
    """Bytes of a typical chat.message frame body on the feed (as dsd.io.control.Feed writes it)."""
    event = {"topic": "chat.message", "node": "n1", "time": 1764112345.123456, "seq": 123456,
             "kind": "message", "user": "tp1", "text": _stamp(1764112345.123456, text_len), "id": "12345",
             "server": "n1"}
    return len(json.dumps(event).encode())


# ------------------------------------------------------------------- the phases


@dataclass
class Baseline:
    rate: float
    sent: int
    size: int
    latencies: list[float]


def baseline(cluster, logdir: Path, seconds: float, latency_seconds: float) -> Baseline:
    size = feed_body_size()
    body = ("{" + "x" * (size - 2) + "}")
    endpoint = f"tcp://{cluster.net.address(1)}:{BASE_PORT}"
    with ExitStack() as local:
        pub, sub = start_workers(local, cluster, [
            (1, "pub", {"bind": endpoint, "topic": "chat.message", "body": body}),
            (2, "sub", {"connect": endpoint}),
        ], logdir)
        time.sleep(0.3)  # the subscription reaches the publisher
        go([pub], seconds=seconds + 0.6)
        go([sub], warm=0.3, seconds=seconds)
        flood = sub.expect("result", seconds + 10)
        sent = pub.expect("result", 10)["sent"]
    with ExitStack() as local:
        pub, sub = start_workers(local, cluster, [
            (1, "pub", {"bind": endpoint, "topic": "chat.message", "body": body}),
            (2, "sub", {"connect": endpoint}),
        ], logdir)
        time.sleep(0.3)
        go([pub, sub], seconds=latency_seconds, rate=OFFERED)
        paced = sub.expect("result", latency_seconds + 10)
    return Baseline(flood["count"] / seconds, sent, flood["size"], paced["latencies"])


def start_chat_cluster(cluster) -> list:
    daemons = []
    for i in range(1, 4):
        daemon = add_daemon(cluster, f"n{i}", 100 + i, start=False)
        daemon.configure(chat=dict(CHAT_LIMITS))
        daemons.append(daemon)
    for daemon in daemons:
        daemon.start()
    cluster.wait_agreed("n3", timeout=20)
    return daemons


def endpoints(daemon) -> dict[str, str]:
    return {"endpoint": daemon.endpoint, "feed": f"ipc://{daemon.dir}/run/dsd.feed"}



STAT_KEYS = ("control_requests", "link_messages_sent", "link_messages_received", "link_messages_dropped",
             "events_published", "chat_entries_committed", "chat_proposals_forwarded", "chat_duplicates_dropped")


def counters(daemons) -> dict[str, dict[str, int]]:
    return {d.name: {k: d.request("stats", timeout=2.0)[k] for k in STAT_KEYS} for d in daemons}


@dataclass
class Throughput:
    seconds: float
    window: int
    sent: float
    committed: float
    delivered: dict[str, float]          # per daemon's feed
    complete: bool
    missing: int
    gaps: int
    errors: dict[str, int]
    unanswered: int
    ack_latency: list[float]
    feed_latency: list[float]
    cpu: dict[str, float]                # process -> CPU seconds over the window
    busy: float                          # all CPUs, fraction
    messages: int                        # committed in the window (ok replies)
    stats: dict[str, dict[str, int]]     # daemon -> counter deltas over the run (dsctl stats)


def throughput(cluster, daemons, logdir: Path, seconds: float, window: int, tag: str,
               samplers: Callable[[dict[str, int]], list[subprocess.Popen]] | None = None) -> Throughput:
    """The sustained-rate run; `samplers(daemon name -> pid)` starts profilers at the window's start."""
    users = [f"{tag}{i}" for i in range(1, 4)]
    with ExitStack() as local:
        clients = start_workers(local, cluster, [
            (i, "client", {**endpoints(daemons[i - 1]), "user": users[i - 1], "users": users, "window": window})
            for i in range(1, 4)
        ], logdir)
        pids = {d.name + (" (leader)" if d.name == "n3" else " (follower)"): python_pid(d.process)
                for d in daemons}
        pids.update({f"client h{i}": w.pid() for i, w in enumerate(clients, 1)})
        stats0 = counters(daemons)
        t0 = go(clients, delay=0.3, seconds=seconds)
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
        busy0 = system_cpu_busy()
        profilers = samplers({d.name: python_pid(d.process) for d in daemons}) if samplers else []
        for profiler in profilers:
            local.callback(_stop, profiler)
        time.sleep(max(0.0, t0 + seconds - time.time()))
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
    missing = 0
    for r in results:
        for user, ids in acked.items():
            missing += len(ids - set(r["received"].get(user, [])))
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    committed_in = sum(r["acked_in"] for r in results)
    return Throughput(
        seconds=seconds, window=window,
        sent=sum(r["sent_in"] for r in results) / seconds,
        committed=committed_in / seconds,
        delivered={f"n{i}": r["delivered_in"] / seconds for i, r in enumerate(results, 1)},
        complete=missing == 0, missing=missing, gaps=sum(r["feed_gaps"] for r in results),
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
            (2, "receiver", {"feed": endpoints(daemons[1])["feed"], "user": "lat1"}),
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


class FeedReader:
    """SUB sockets on some daemons' feeds (everything), arrival times taken on reading."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.sockets: dict[str, zmq.Socket] = {}
        self.poller = zmq.Poller()
        self.events: list[tuple[float, str, dict[str, Any]]] = []  # (arrival, daemon, event)

    def connect(self, name: str, feed: str) -> None:
        socket = subscriber(self.context, feed, hwm=1000000)
        self.sockets[name] = socket
        self.poller.register(socket, zmq.POLLIN)

    def drain(self, timeout: float) -> None:
        ready = dict(self.poller.poll(int(timeout * 1000)))
        while ready:
            now = time.time()
            for socket in ready:
                name = next(n for n, s in self.sockets.items() if s is socket)
                while True:
                    try:
                        _topic, *bodies = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.events.extend((now, name, json.loads(body)) for body in bodies)
            ready = dict(self.poller.poll(0))

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        return drain_until(self.drain, condition, timeout, what, 0.005)

    def close(self) -> None:
        self.context.destroy(linger=0)


def first_new_message(reader: FeedReader, mark: int, names: list[str], after: float, user: str):
    """{daemon: (arrival, seq)} of the first message of `user` sent after `after`, once on every daemon."""
    found = {}
    for arrival, name, event in reader.events[mark:]:
        if name in found or name not in names or event.get("topic") != "chat.message" or event.get("user") != user:
            continue
        sent = _sent_at(event.get("text", ""))
        if sent is not None and sent > after:
            found[name] = (arrival, event["seq"])
    return found if len(found) == len(names) else None


def failover(cluster, daemons, logdir: Path, trials: int, seed: int) -> tuple[list[FailoverTrial], dict]:
    rng = random.Random(seed)
    top, survivors = daemons[-1], daemons[:-1]
    names = [d.name for d in survivors]
    user = "fo1"
    results: list[FailoverTrial] = []
    reader = FeedReader()
    with ExitStack() as local:
        local.callback(reader.close)
        for daemon in survivors:
            reader.connect(daemon.name, endpoints(daemon)["feed"])
        (sender,) = start_workers(local, cluster, [(1, "sender", {**endpoints(daemons[0]), "user": user})], logdir)
        t0 = go([sender], delay=0.1, phases=[[FAILOVER_RATE, WORKER_LIMIT - 30]])
        reader.wait_for(lambda: first_new_message(reader, 0, names, t0 + 0.2, user), 10, "chat traffic on both feeds")
        for trial in range(1, trials + 1):
            time.sleep(rng.uniform(0.3, 0.7))
            term0 = cluster.agreed("n3") or cluster.wait_agreed("n3", timeout=10)
            reader.drain(0)
            mark = len(reader.events)
            pid = python_pid(top.process)
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            found = reader.wait_for(lambda: first_new_message(reader, mark, names, t_kill, user), 15,
                                    "the first message sent after the kill on every survivor")
            delivered = max(arrival for arrival, _ in found.values())
            leaders = {}
            for _arrival, name, event in reader.events[mark:]:
                if event.get("topic") == "leader" and event.get("leader") == "n2" and event.get("term", 0) > term0[0]:
                    leaders.setdefault(name, event["time"])
            if len(leaders) != len(names):
                raise BenchError(f"failover trial {trial}: not every survivor reported n2: {leaders}")
            elected = max(leaders.values())
            results.append(FailoverTrial(delivered - t_kill, elected - t_kill, delivered - elected))
            progress(f"  failover trial {trial}/{trials}: first new message everywhere {us(delivered - t_kill)} "
                     f"after the kill (leader reported at {us(elected - t_kill)})")
            top.process.wait(timeout=10)
            cluster.wait_agreed("n2", timeout=10)
            top.start()
            cluster.wait_agreed("n3", timeout=20)
            back = time.time()
            reader.wait_for(lambda: first_new_message(reader, mark, names, back, user), 15,
                            "chat traffic again after n3 came back")
        sender.tell({"stop": True})
        sent = sender.expect("result", 20)
    return results, sent


@dataclass
class Profile:
    tool: str                                   # "py-spy" or "cProfile"
    run: Throughput                             # the sustained-rate run it watched
    python: dict[str, list[tuple[str, float]]]  # daemon -> [(bucket, share of its busy samples)]
    top: dict[str, list[tuple[str, float]]]     # daemon -> [(function, self share)]
    busy: dict[str, float]                      # daemon -> profiled busy seconds
    perf: dict[str, dict[str, float]] | None    # daemon -> {thread/object: CPU seconds}
    perf_seconds: float = 0.0


def profile(cluster, daemons, logdir: Path, seconds: float, window: int, py_spy: str | None,
            perf: str | None, top: int) -> Profile:
    """The sustained rate again, watched by py-spy (or, without it, cProfile) and perf when installed.

    py-spy samples the running daemons; cProfile needs them restarted under it
    (`python -m cProfile -o FILE -m dsd`, written when they stop on SIGTERM).
    """
    watched = ("n3", "n1")
    spy_files = {name: logdir / f"{name}.pyspy" for name in watched}
    perf_file = logdir / "dsd.perf"
    duration = max(1, int(seconds))

    threads: dict[int, str] = {}  # every thread id of the daemons -> daemon name (perf reports threads)

    def samplers(pids: dict[str, int]) -> list[subprocess.Popen]:
        for name, pid in pids.items():
            threads.update({int(tid): name for tid in os.listdir(f"/proc/{pid}/task")})
        started = []
        if py_spy:
            for name in watched:
                started.append(subprocess.Popen(
                    [py_spy, "record", "-p", str(pids[name]), "-d", str(duration), "-r", "250", "--nonblocking",
                     "--format", "raw", "-o", str(spy_files[name])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if perf:
            started.append(subprocess.Popen(
                [perf, "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-p", ",".join(str(p) for p in pids.values()),
                 "-o", str(perf_file), "--", "sleep", str(duration)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return started

    prof_files = {}
    if not py_spy:
        for daemon in daemons:
            daemon.stop()
        for daemon in daemons:
            prof_files[daemon.name] = logdir / f"{daemon.name}.prof"
            command = cluster.prefix(daemon.host) + [
                sys.executable, "-m", "cProfile", "-o", str(prof_files[daemon.name]), "-m", "dsd",
                "-c", str(daemon.config)]
            with open(daemon.log, "ab") as log:
                daemon.process = subprocess.Popen(command, stdout=log, stderr=log)
        cluster.wait_agreed("n3", timeout=20)
    result = throughput(cluster, daemons, logdir, seconds, window, tag="pr", samplers=samplers)
    python, tops, busy = {}, {}, {}
    if py_spy:
        for name in watched:
            if spy_files[name].exists():
                python[name], tops[name], busy[name] = read_py_spy(spy_files[name], top)
    else:
        for daemon in daemons:
            daemon.stop(timeout=20)
        for name in watched:
            if prof_files[name].exists():
                python[name], tops[name], busy[name] = read_cprofile(prof_files[name], top)
    perf_split = read_perf(perf, perf_file, threads) if perf and perf_file.exists() else None
    return Profile("py-spy" if py_spy else "cProfile", result, python, tops, busy, perf_split, float(duration))


# --------------------------------------------------------------- py-spy buckets

IDLE = "idle"
BUCKETS = [  # (label, test on one frame "function (file:line)"); frames are tried from the leaf up
    (IDLE, lambda f: "EpollSelector.select" in f),
    ("ZeroMQ send (each one wakes libzmq's I/O thread)",
     lambda f: "zmq/" in f and ("send" in f.split(" (")[0].lower())),
    ("ZeroMQ receive", lambda f: "zmq/" in f),
    ("SQLite store (a transaction per commit)", lambda f: "dsd/store.py" in f),
    ("link encode (json.dumps)", lambda f: f.startswith("encode (dsd/linkwire.py")),
    ("link decode (json.loads + validation)", lambda f: "dsd/linkwire.py" in f),
    ("feed publish (JSON of each entry)", lambda f: "Feed.publish" in f),
    ("control requests (parse, dispatch, reply)", lambda f: "dsd/commands.py" in f or "ControlServer" in f),
    ("timers (_rearm, next_deadline scans)", lambda f: "next_deadline" in f or "_rearm" in f or "_on_timer" in f),
    ("chat core (dsd/core/chat.py)", lambda f: "dsd/core/chat.py" in f),
    ("cluster core (heartbeats, view)", lambda f: "dsd/core/" in f or "dsd/wire.py" in f or "multicast" in f),
    ("service glue (_apply, _on_link…)", lambda f: "dsd/" in f),
    ("asyncio event loop", lambda f: "asyncio/" in f or "selectors.py" in f),
]


def bucket_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, test in BUCKETS:
            if test(frame):
                return label
    return "other"


def read_py_spy(path: Path, top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]], float]:
    """py-spy raw output (`stack;frames count` lines): busy samples by bucket, and the top leaf functions."""
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        label = bucket_of(frames)
        buckets[label] += int(count)
        if label != IDLE:
            leaves[_short_frame(frames[-1])] += int(count)
    busy = sum(n for label, n in buckets.items() if label != IDLE)
    shares = [(label, n / busy) for label, n in buckets.most_common() if label != IDLE]
    return shares, [(f, n / busy) for f, n in leaves.most_common(top)], busy / 250.0


def _short_frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


# ------------------------------------------------------------- cProfile buckets

STARTUP = "start-up (imports)"
CPROFILE_CATEGORIES = [  # (label, substrings of `_where`); the first match wins
    (IDLE, ("poll of select.epoll",)),
    (STARTUP, ("importlib", "builtins.compile", "builtins.exec", "_imp.", "marshal.", "BufferedReader", "<frozen")),
    ("SQLite store (a transaction per commit)", ("sqlite3", "dsd/store.py")),
    ("ZeroMQ send/receive", ("zmq/",)),
    ("JSON encode/decode", ("json/",)),
    ("link encode: dataclasses.asdict (deep copies)", ("dataclasses.py", "copy.py")),
    ("link decode: validation (dsd/linkwire.py)", ("dsd/linkwire.py",)),
    ("chat core (dsd/core/chat.py)", ("dsd/core/chat.py",)),
    ("cluster core (dsd/core/node.py, membership…)", ("dsd/core/",)),
    ("service, commands, control/feed/links I/O", ("dsd/service.py", "dsd/commands.py", "dsd/io/")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("logging", ("logging/",)),
]
HELPERS = ("enum.py", "re/", "functools.py", "typing.py", "abc.py")  # their time goes to their callers


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name.replace("<method '", "").replace("<built-in method ", "").rstrip(">'").replace("' of '", " of ")
    parts = Path(filename).parts
    if "dsd" in parts:
        short = "/".join(parts[len(parts) - 1 - parts[::-1].index("dsd"):])
    elif "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1:])
    else:
        short = "/".join(parts[-2:]) if len(parts) > 1 and not parts[-2].startswith("python3") else parts[-1]
    return f"{name} ({short}:{line})"


def _direct(func) -> str | None:
    where = _where(func)
    if func[2] == "<module>":
        return STARTUP
    for label, needles in CPROFILE_CATEGORIES:
        if any(n in where for n in needles):
            return label
    if func[0] == "~" or any(h in where for h in HELPERS):
        return None
    return "other"


def _categories(raw: dict) -> dict[Any, dict[str, float]]:
    """Each function's category shares; built-ins and small helpers take their callers' categories."""

    def resolve(func, depth: int) -> dict[str, float]:
        label = _direct(func)
        if label is not None:
            return {label: 1.0}
        callers = raw[func][4] if func in raw else {}
        weights = {c: edge[2] for c, edge in callers.items()}
        total = sum(weights.values())
        if depth >= 4 or total <= 0:
            return {"other": 1.0}
        shares: Counter[str] = Counter()
        for caller, weight in weights.items():
            for label, share in resolve(caller, depth + 1).items():
                shares[label] += share * weight / total
        return shares

    return {func: resolve(func, 0) for func in raw}


def read_cprofile(path: Path, top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]], float]:
    raw = pstats.Stats(str(path)).stats  # func -> (cc, nc, tt, ct, callers)
    shares = _categories(raw)
    by: Counter[str] = Counter()
    for func, value in raw.items():
        for label, share in shares[func].items():
            by[label] += value[2] * share
    busy = sum(t for label, t in by.items() if label not in (IDLE, STARTUP))
    steady = [(f, v) for f, v in raw.items() if shares[f].get(STARTUP, 0) + shares[f].get(IDLE, 0) < 0.5]
    rows = sorted(steady, key=lambda fv: -fv[1][2])[:top]
    return ([(label, t / busy) for label, t in by.most_common() if label not in (IDLE, STARTUP)],
            [(_where(f), v[2] / busy) for f, v in rows], busy)


# ------------------------------------------------------------------------- perf

PERF_HZ = 499


def read_perf(perf: str, path: Path, threads: dict[int, str]) -> dict[str, dict[str, float]] | None:
    """CPU seconds of each daemon by thread (main / libzmq I/O) and object (interpreter, kernel, …)."""
    try:
        out = subprocess.run([perf, "report", "-i", str(path), "--sort", "pid,dso", "--stdio", "-n", "-t", "|"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    split: dict[str, Counter[str]] = {}
    for line in out.splitlines():
        if line.startswith("#") or line.count("|") < 3:
            continue
        _overhead, samples, pid_comm, dso = [x.strip() for x in line.split("|")[:4]]
        pid, _, comm = pid_comm.partition(":")
        if not pid.isdigit() or not samples.isdigit():
            continue
        name = threads.get(int(pid))
        if name is None:
            continue
        thread = "libzmq I/O thread" if comm.startswith("ZMQbg") else "main thread"
        if thread == "libzmq I/O thread":
            part = thread
        elif "libpython" in dso:
            part = "main: Python interpreter"
        elif "kernel" in dso:
            part = "main: kernel (syscalls)"
        elif "zmq" in dso:
            part = "main: libzmq + pyzmq"
        elif "sqlite" in dso:
            part = "main: SQLite"
        elif "json" in dso:
            part = "main: _json"
        else:
            part = "main: other (libc, …)"
        split.setdefault(name, Counter())[part] += int(samples) / PERF_HZ
    return {name: dict(parts) for name, parts in split.items()} or None


def run(args) -> str:
    quick = args.quick
    seconds = args.seconds or (3.0 if quick else 10.0)
    lat_seconds = 2.0 if quick else 6.0
    base_seconds = 1.0 if quick else 3.0
    trials = args.trials or (2 if quick else 5)
    prof_seconds = 2.0 if quick else 4.0
    sweep = args.sweep if args.sweep is not None else ([] if quick else [8, 256])
    sweep_seconds = 4.0
    note = before_run(args.wait_quiet)
    command = "python -m bench.chat" + (" --quick" if quick else "")
    for flag, value, default in (("--seconds", args.seconds, 0), ("--window", args.window, 64),
                                 ("--trials", args.trials, 0)):
        if value != default:
            command += f" {flag} {value:g}"
    if args.sweep is not None:
        command += " --sweep" + "".join(f" {w}" for w in args.sweep)
    if args.no_profile:
        command += " --no-profile"
    if args.py_spy:
        command += f" --py-spy {args.py_spy}"
    if args.no_perf:
        command += " --no-perf"
    started = time.monotonic()
    with private_cluster(3) as cluster, tempfile.TemporaryDirectory(prefix="dsd-bench-chat-") as tmp:
        logdir = Path(tmp)
        progress(f"chat: baseline PUB->SUB h1->h2 ({base_seconds:g} s flood, {base_seconds:g} s at {OFFERED:g}/s)")
        base = baseline(cluster, logdir, base_seconds, base_seconds)
        progress(f"  raw PUB->SUB: {base.rate:,.0f} msg/s of {base.size} bytes")
        daemons = start_chat_cluster(cluster)
        progress(f"chat: sustained rate, 3 clients, window {args.window}, {seconds:g} s")
        tp = throughput(cluster, daemons, logdir, seconds, args.window, tag="tp")
        progress(f"  committed {tp.committed:,.0f} msg/s, delivered everywhere {min(tp.delivered.values()):,.0f} msg/s")
        swept = [tp]
        for window in sweep:
            progress(f"chat: sustained rate, window {window}, {sweep_seconds:g} s")
            swept.append(throughput(cluster, daemons, logdir, sweep_seconds, window, tag=f"w{window}-"))
            progress(f"  committed {swept[-1].committed:,.0f} msg/s")
        phases = [[LOW_RATE, lat_seconds / 2], [OFFERED, lat_seconds]]
        progress(f"chat: latency at {LOW_RATE:g} then {OFFERED:g} msg/s")
        lat, lat_sender = latency(cluster, daemons, logdir, phases)
        for one in lat:
            progress(f"  {one.rate:g}/s: p50 {us(percentile(one.latencies, 0.5))}, "
                     f"p99 {us(percentile(one.latencies, 0.99))}")
        progress(f"chat: failover under traffic, {trials} trials")
        fo, fo_sender = failover(cluster, daemons, logdir, trials, args.seed)
        prof = None
        if not args.no_profile:
            py_spy = args.py_spy or shutil.which("py-spy")
            perf = None if args.no_perf else shutil.which("perf")
            tools = " + ".join(t for t in ("py-spy" if py_spy else "cProfile", "perf" if perf else "") if t)
            progress(f"chat: profile ({tools}), {prof_seconds:g} s")
            prof = profile(cluster, daemons, logdir, prof_seconds, args.window, py_spy, perf, args.top)
        elapsed = time.monotonic() - started
    return report(args, command, note, base, tp, swept, lat, lat_sender, fo, fo_sender, prof, elapsed, trials)


def sweep_report(runs: list[Throughput]) -> list[str]:
    rows = []
    for run in sorted(runs, key=lambda r: r.window):
        per = 1e6 / max(1, run.messages)
        daemons = sum(c for n, c in run.cpu.items() if n.startswith("n"))
        leader = run.stats["n3"]
        rows.append([
            run.window, f"{run.seconds:g} s", f"{run.committed:,.0f}", f"{min(run.delivered.values()):,.0f}",
            f"{us(percentile(run.ack_latency, 0.5))} / {us(percentile(run.ack_latency, 0.99))}",
            f"{daemons * per:.0f}",
            f"{(leader['link_messages_sent'] + leader['link_messages_received']) * per / 1e6:.1f}",
            f"{leader['chat_duplicates_dropped'] * per / 1e6:.2f}",
            f"{sum(run.cpu.values()) / run.seconds * 100:.0f} % · {100 * run.busy:.0f} %",
            _errors(run.errors),
        ])
    return [
        "Window sweep (the same clients with fewer or more `chat.send` outstanding each):",
        "",
        table(["window", "run", "committed msg/s", "delivered on every feed", "send → reply p50 / p99",
               "CPU µs per message (3 daemons)", "leader link msgs per message (sent + received)",
               "duplicates dropped per message (leader)", "CPU of daemons + clients · machine busy",
               "error replies"], rows),
        "",
    ]


def profile_report(prof: Profile) -> list[str]:
    run = prof.run
    messages = run.committed * prof.perf_seconds  # messages committed while the samplers ran
    per_python = messages if prof.tool == "py-spy" else run.messages  # cProfile saw the whole run
    cpu = ", ".join(f"{n.split()[0]} {100 * c / run.seconds:.0f} %" for n, c in run.cpu.items() if n.startswith("n"))
    if prof.tool == "py-spy":
        how = ("py-spy (250 samples/s, `--nonblocking`) on the running n3 and n1: a sample counts where the main "
               "thread's Python stack is whenever it is not idle in epoll — including while it sits in a system "
               "call or waits for a CPU, so these are shares of *wall-clock* busy time; perf below gives CPU time")
    else:
        how = ("cProfile (`python -m cProfile -m dsd`, the daemons restarted under it; no change to dsd): "
               "wall-clock self time, and the profiler slows Python code, so read the shares")
    lines = [
        f"**Where the daemon's time goes** — the same load again for {run.seconds:g} s "
        f"({run.committed:,.0f} msg/s committed; CPU {cpu}), watched by {how}.",
        "",
    ]
    names = [n for n in ("n3", "n1") if n in prof.python]
    if names:
        labels = []
        for name in names:
            labels += [label for label, _ in prof.python[name] if label not in labels]
        shares = {name: dict(prof.python[name]) for name in names}
        lines.append(table(
            ["where (innermost matching frame)"] + [f"{n} ({'leader' if n == 'n3' else 'follower'})" for n in names]
            + [f"{n} µs/msg" for n in names],
            [[label] + [f"{100 * shares[n].get(label, 0):.0f} %" for n in names]
             + [f"{shares[n].get(label, 0) * prof.busy[n] / max(1, per_python) * 1e6:.0f}" for n in names]
             for label in labels]))
        lines.append("")
        depth = max(len(prof.top[n]) for n in names)
        lines.append(table(
            ["#"] + [f"{n}: top functions (self time)" for n in names],
            [[i + 1] + [f"`{prof.top[n][i][0]}` {100 * prof.top[n][i][1]:.1f} %" if i < len(prof.top[n]) else ""
                        for n in names] for i in range(depth)]))
        lines.append("")
    if prof.perf:
        parts = ["main: Python interpreter", "main: kernel (syscalls)", "main: libzmq + pyzmq", "main: SQLite",
                 "main: _json", "main: other (libc, …)", "libzmq I/O thread"]
        rows = []
        for name in sorted(prof.perf):
            split = prof.perf[name]
            total = sum(split.values())
            rows.append([f"{name} ({'leader' if name == 'n3' else 'follower'})"]
                        + [f"{split.get(p, 0) / max(1, messages) * 1e6:.0f} ({100 * split.get(p, 0) / total:.0f} %)"
                           for p in parts]
                        + [f"{total / max(1, messages) * 1e6:.0f}"])
        lines += [
            f"CPU time by thread and object (perf, cpu-clock at {PERF_HZ} Hz on all 3 daemons, {prof.perf_seconds:g} s; "
            "µs of CPU per committed message, share of the daemon's CPU):",
            "",
            table(["daemon"] + parts + ["total µs/msg"], rows),
            "",
        ]
    return lines


def _minus(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(errors.items())) or "none"


def report(args, command, note, base, tp, swept, lat, lat_sender, fo, fo_sender, prof, elapsed, trials) -> str:
    delivered = min(tp.delivered.values())
    ratio = delivered / base.rate
    per = 1 / max(1, tp.messages)
    lines = [
        "### Chat (3 daemons on 3 private hosts: sustained rate, latency, failover under traffic)",
        "",
        f"Default timings ({', '.join(f'{k} {v:g} s' for k, v in DEFAULT_TIMING.items())}); `[chat] rate = 1000000`, `burst = 1000000` in the bench config (the defaults, 20 msg/s "
        f"with bursts of 50, are a per-user abuse limit, not a capacity: they would cap each client at 20 msg/s). "
        f"n3 leads; one client process per host, on its own daemon's control socket and feed (ipc). "
        f"Command: `{command}` ({elapsed:.0f} s). {note}.",
        "",
        f"**Sustained rate** — each client pipelines `chat.send` with {tp.window} requests outstanding "
        f"(DEALER, rid-matched) and reads its daemon's feed; {tp.seconds:g} s:",
        "",
        table(["measure", "messages/s", "goal", "vs raw PUB→SUB"], [
            [f"baseline: raw pyzmq PUB→SUB, tcp h1→h2, {base.size}-byte frames (flood, nothing parsed)",
             f"{base.rate:,.0f}", "", "1.000"],
            ["chat: sent (3 clients)", f"{tp.sent:,.0f}", "", f"{tp.sent / base.rate:.3f}"],
            ["chat: committed (ok replies)", f"{tp.committed:,.0f}", "", f"{tp.committed / base.rate:.3f}"],
            ["chat: delivered on every feed (slowest of the 3)", f"{delivered:,.0f}",
             f"≥ {RATE_GOAL:.0%} of raw — {met(ratio >= RATE_GOAL)}", f"**{ratio:.3f}**"],
        ]),
        "",
        "Per feed: " + ", ".join(f"{n} {r:,.0f}/s" for n, r in tp.delivered.items()) +
        f". Every committed message reached all 3 feeds: {'yes' if tp.complete else f'**no, {tp.missing} missing**'}; "
        f"seq gaps on the feeds: {tp.gaps}; error replies: {_errors(tp.errors)}; unanswered: {tp.unanswered}. "
        f"At this load `chat.send` → reply (committed) p50 {us(percentile(tp.ack_latency, 0.5))}, "
        f"p99 {us(percentile(tp.ack_latency, 0.99))}; send → feed p50 {us(percentile(tp.feed_latency, 0.5))}, "
        f"p99 {us(percentile(tp.feed_latency, 0.99))} (Little: {3 * tp.window} outstanding / "
        f"{tp.committed:,.0f} per s = {us(3 * tp.window / max(1, tp.committed))} — the window, not the path).",
        "",
        table(["process", "CPU over the window", "CPU µs per committed message"], [
            [name, f"{100 * cpu / tp.seconds:.0f} % of a CPU", f"{cpu * per * 1e6:.0f}"]
            for name, cpu in tp.cpu.items()
        ] + [["all 3 daemons", f"{100 * sum(c for n, c in tp.cpu.items() if n.startswith('n')) / tp.seconds:.0f} %",
              f"{sum(c for n, c in tp.cpu.items() if n.startswith('n')) * per * 1e6:.0f}"],
             ["whole machine (all processes)", f"{100 * tp.busy:.0f} % of {os.cpu_count()} CPUs busy", ""]]),
        "",
        table(["daemon (`dsctl stats` deltas / committed message)", "control requests", "link msgs sent",
               "link msgs received", "feed events", "proposals forwarded", "duplicates dropped"], [
            [name, f"{s['control_requests'] * per:.2f}", f"{s['link_messages_sent'] * per:.2f}",
             f"{s['link_messages_received'] * per:.2f}", f"{s['events_published'] * per:.2f}",
             f"{s['chat_proposals_forwarded'] * per:.2f}", f"{s['chat_duplicates_dropped'] * per:.2f}"]
            for name, s in tp.stats.items()
        ]),
        "",
    ]
    if len(swept) > 1:
        lines += sweep_report(swept)
    base_p50, base_p99 = percentile(base.latencies, 0.5), percentile(base.latencies, 0.99)
    rows = [[f"baseline: raw PUB→SUB tcp h1→h2", f"{OFFERED:,.0f}", len(base.latencies), us(base_p50), us(base_p99),
             us(max(base.latencies)), "", "", "1×"]]
    for one in lat:
        p50, p99 = percentile(one.latencies, 0.5), percentile(one.latencies, 0.99)
        goal = ""
        if one.rate == OFFERED:
            goal = f"p50 ≤ 1 ms — {met(p50 <= P50_GOAL)}; p99 ≤ 5 ms — {met(p99 <= P99_GOAL)}"
        rows.append([
            "chat: send on h1 → delivered on n2's feed", f"{one.rate:,.0f}", f"{len(one.latencies)} of {one.sent}",
            us(p50), us(p99), us(max(one.latencies)),
            f"{us(percentile(one.ack_latency, 0.5))} / {us(percentile(one.ack_latency, 0.99))}", goal,
            f"{p50 / base_p50:.0f}×",
        ])
    lines += [
        "**End-to-end latency** — paced sender on h1 (its daemon n1 is a follower: n1 forwards to the leader n3, "
        "n3 replicates to n1 and n2, n2 commits and publishes on the APPEND's arrival), "
        f"receiver on n2's feed on h2; {lat[0].rate:g} msg/s first, then {lat[-1].rate:,.0f} msg/s:",
        "",
        table(["path", "offered msg/s", "messages", "p50", "p99", "max", "send → reply p50 / p99", "goal",
               "p50 / baseline"], rows),
        "",
        "Split of send → delivered on n2's feed, from each entry's `time` (the leader's clock when it sequenced "
        "it; one clock for all): *to the leader* = the client's request to n1, n1's FORWARD, n3 sequencing it; "
        "*leader → n2's feed* = n3's APPEND to n2, n2 storing and publishing the entry, the subscriber "
        "reading it.",
        "",
        table(["offered msg/s", "send → sequenced at the leader p50 / p99", "leader → n2's feed p50 / p99"], [
            [f"{one.rate:,.0f}", f"{us(percentile(one.sequenced, 0.5))} / {us(percentile(one.sequenced, 0.99))}",
             f"{us(percentile(_minus(one.latencies, one.sequenced), 0.5))} / "
             f"{us(percentile(_minus(one.latencies, one.sequenced), 0.99))}"]
            for one in lat
        ]),
        "",
        f"Sender error replies: {_errors(lat_sender['errors'])}; unanswered: {lat_sender['unanswered']}.",
        "",
    ]
    totals = [t.total for t in fo]
    elected = [t.elected for t in fo]
    after = [t.after for t in fo]
    lines += [
        f"**Failover under traffic** — `kill -9` of the leader n3 while a client on h1 sends {FAILOVER_RATE:.0f} msg/s "
        f"through n1; {trials} trials:",
        "",
        table(["measure", "median", "min", "max", "compare"], [
            ["kill → first message sent after the kill delivered on every survivor's feed", us(median(totals)),
             us(min(totals)), us(max(totals)), f"{median(totals) / CRASH_FAILOVER:.2f}× the crash-failover median "
             f"({CRASH_FAILOVER * 1000:.0f} ms, bench.failover, 3 daemons, quoted)"],
            ["… of which kill → last survivor reports the new leader n2", us(median(elected)),
             us(min(elected)), us(max(elected)), "the same measure as bench.failover, in these trials"],
            ["… of which new leader → that message delivered everywhere", us(median(after)), us(min(after)),
             us(max(after)), "chat view change (GATHER/STATUS), n1 re-forwards, replicate, commit"],
        ]),
        "",
        f"The failover client sent {sum(fo_sender['sent'])} messages; error replies {_errors(fo_sender['errors'])}; "
        f"unanswered at the end {fo_sender['unanswered']}.",
        "",
    ]
    if prof is not None:
        lines += profile_report(prof)
    lines += [
        "Rates count, over the same window, the sends issued, the ok replies received and the feed events received "
        "by the clients. Latencies compare the send time written into the message text with the arrival time at "
        "the reader (all processes share one clock); p99 is nearest-rank. CPU is utime+stime from /proc.",
    ]
    return "\n".join(lines)


def parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about 35 s in all)")
    p.add_argument("--seconds", type=float, default=0, help="sustained-rate window (default 10, quick 3)")
    p.add_argument("--window", type=int, default=64, help="chat.send requests outstanding per client (default 64)")
    p.add_argument("--trials", type=int, default=0, help="failover trials (default 5, quick 2)")
    p.add_argument("--sweep", type=int, nargs="*", metavar="WINDOW",
                   help="more sustained-rate runs of 4 s with these windows (default 8 256; quick: none)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiling run")
    p.add_argument("--py-spy", metavar="PATH", help="py-spy to sample the daemons with (default: py-spy on PATH; "
                   "without it the daemons are restarted under cProfile)")
    p.add_argument("--no-perf", action="store_true", help="do not use perf even when installed")
    p.add_argument("--top", type=int, default=12, help="functions listed per profiled daemon (default 12)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random pause between failover trials")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    return run_main(run, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
