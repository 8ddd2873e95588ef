"""The peer bench.chat races: PySyncObj (Raft in Python), committed appends per second at its leader.

Three PySyncObj nodes, each a child process, on 127.0.0.1 at distinct ports (each bound to
127.0.0.1 explicitly: PySyncObj binds to 0.0.0.0 by default). The node that wins the
election appends `size`-byte messages with `window` appends outstanding and counts those
committed (its callback reports success) over `seconds`, after a warm-up. Each node runs in
a process group of its own, killed in `finally`; each also exits by itself after NODE_LIMIT
seconds. PySyncObj comes with the optional `bench` extra.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError

ROOT = Path(__file__).resolve().parent.parent
WARM = 1.0          # s of appends before the counted window
NODE_LIMIT = 120.0  # s: every node exits by itself after this


@dataclass
class RaftRate:
    rate: float     # committed appends/s at the leader
    errors: int     # appends whose callback reported a failure
    seconds: float


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def race(seconds: float, window: int = 1000, size: int = 64) -> RaftRate:
    """Run the three nodes and return the leader's committed rate; every node is killed on the way out."""
    ports = _free_ports(3)
    nodes: list[subprocess.Popen] = []
    try:
        for index in range(3):
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "bench.raft_peer", str(index), json.dumps([ports, seconds, window, size])],
                stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True))
        deadline = time.monotonic() + seconds + WARM + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([n.stdout for n in nodes], [], [], 1.0)
            for stream in ready:
                line = stream.readline()
                if line:
                    return RaftRate(**json.loads(line))
            if all(n.poll() is not None for n in nodes):
                break
        raise BenchError("no PySyncObj node reported a committed rate")
    finally:
        for node in nodes:
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait(timeout=10)
            node.stdout.close()


def _node(index: int, ports: list[int], seconds: float, window: int, size: int) -> None:
    """One node; if it becomes the leader it runs the load and prints its result as one JSON line."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class Log(SyncObj):
        def __init__(self, me: str, others: list[str]) -> None:
            super().__init__(me, others, SyncObjConf(bindAddress=me))
            self.length = 0

        @replicated
        def append(self, message: bytes) -> None:
            self.length += 1

    signal.alarm(int(NODE_LIMIT))
    addresses = [f"127.0.0.1:{port}" for port in ports]
    log = Log(addresses[index], addresses[:index] + addresses[index + 1:])
    while log._getLeader() is None:
        time.sleep(0.05)
    if not log._isLeader():
        time.sleep(NODE_LIMIT)
    slots = threading.Semaphore(window)
    done = {"ok": 0, "failed": 0}

    def committed(_result: object, error: int) -> None:
        done["ok" if error == FAIL_REASON.SUCCESS else "failed"] += 1
        slots.release()

    message = b"x" * size
    start = time.monotonic()
    marks: list[int] = []
    for mark in (start + WARM, start + WARM + seconds):
        while time.monotonic() < mark:
            if slots.acquire(timeout=0.05):
                log.append(message, callback=committed)
        marks.append(done["ok"])
    print(json.dumps({"rate": (marks[1] - marks[0]) / seconds, "errors": done["failed"], "seconds": seconds}),
          flush=True)


if __name__ == "__main__":  # one node: python -m bench.raft_peer INDEX '[PORTS, SECONDS, WINDOW, SIZE]'
    _node(int(sys.argv[1]), *json.loads(sys.argv[2]))
