"""The peer bench.chat races: PySyncObj (Raft in Python), committed appends per second at its leader.

    python -m bench.raft_peer [--seconds 5] [--window 1000] [--size 64]

Three PySyncObj nodes, each a child process, on 127.0.0.1 at distinct ports (each bound to
127.0.0.1 explicitly: PySyncObj binds to 0.0.0.0 by default). The node that wins the
election appends `size`-byte messages with `window` appends outstanding and counts those
committed (its callback reports success) over `seconds`, after a warm-up. The three nodes
share one process group, killed in `finally`; each node also exits by itself after
NODE_LIMIT seconds. PySyncObj comes with the optional `bench` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
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


def available() -> bool:
    return importlib.util.find_spec("pysyncobj") is not None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def race(seconds: float, window: int = 1000, size: int = 64) -> RaftRate:
    """Run the three nodes and return the leader's committed rate; every node is killed on the way out."""
    ports = _free_ports(3)
    nodes: list[subprocess.Popen] = []
    try:
        for index in range(3):
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "bench.raft_peer", "--node", str(index), "--ports", *map(str, ports),
                 "--seconds", str(seconds), "--window", str(window), "--size", str(size)],
                stdout=subprocess.PIPE, cwd=ROOT, process_group=nodes[0].pid if nodes else 0))
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
        if nodes:
            try:
                os.killpg(nodes[0].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in nodes:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="counted window (default 5)")
    parser.add_argument("--window", type=int, default=1000, help="appends outstanding (default 1000)")
    parser.add_argument("--size", type=int, default=64, help="bytes per message (default 64)")
    parser.add_argument("--node", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node is not None:
        _node(args.node, args.ports, args.seconds, args.window, args.size)
        return 0
    if not available():
        print("PySyncObj is not installed (pip install -e '.[bench]')")
        return 1
    result = race(args.seconds, args.window, args.size)
    print(f"PySyncObj, 3 nodes on 127.0.0.1: {result.rate:,.0f} committed appends/s at the leader "
          f"(window {args.window}, {args.size}-byte messages, {args.seconds:g} s; {result.errors} failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
