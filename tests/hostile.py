"""Hostile clients for tests/integration/test_hostile.py, each run as its own process on a private host.

    python -m tests.hostile flood JSON        datagrams into the group, bounded in count and time
    python -m tests.hostile subscribers JSON  SUB sockets that read one event each, then never again
    python -m tests.hostile dealers JSON      many DEALER connections to a control socket

Protocol: one JSON object a line on stdout. `subscribers` and `dealers` print
{"ready": ...} once set up and then hold their sockets until stdin closes (the
test's way of saying "close them now"); every mode prints its result last and
exits. Each also exits by itself after LIMIT seconds, whatever the test does. A tcp://
endpoint is a daemon's CURVE endpoint: the JSON then gives its public key as `server_key`.
"""

from __future__ import annotations

import json
import random
import select
import socket
import sys
import time
from typing import Any

import zmq

from dsd.curve import ClientCurve, connect

LIMIT = 120.0  # s: no hostile process outlives a stuck test by more than this


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _hold(deadline: float) -> None:
    """Until stdin closes (or the deadline)."""
    while time.monotonic() < deadline:
        if select.select([sys.stdin], [], [], max(0.0, min(1.0, deadline - time.monotonic())))[0]:
            if not sys.stdin.buffer.read1(4096):
                return


def flood(cfg: dict[str, Any]) -> dict[str, Any]:
    """Up to `count` datagrams within `seconds`, paced evenly: the templates given (hex) in turn,
    every `random_every`-th one random bytes instead, every `oversize_every`-th one the first
    template padded with spaces to a size from `oversize` (low, high).
    """
    templates = [bytes.fromhex(t) for t in cfg["templates"]]
    rng = random.Random(cfg["seed"])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(cfg["interface"]))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg["ttl"])
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    count, seconds, group = cfg["count"], cfg["seconds"], (cfg["group"], cfg["port"])
    interval = 0.9 * seconds / count  # paced to end early: a late start or a slow turn still fits
    start = time.monotonic()
    sent = size = 0
    while sent < count and time.monotonic() - start < seconds:
        if sent % cfg["random_every"] == 0:
            data = rng.randbytes(rng.randint(1, 1400))
        elif sent % cfg["oversize_every"] == 0:
            data = templates[0] + b" " * (rng.randint(*cfg["oversize"]) - len(templates[0]))
        else:
            data = templates[sent % len(templates)]
        try:
            s.sendto(data, group)
        except BlockingIOError:  # a full send buffer: this one is not sent, the next is tried
            continue
        sent += 1
        size += len(data)
        ahead = start + sent * interval - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead)
    return {"sent": sent, "bytes": size, "elapsed": round(time.monotonic() - start, 3)}


def _curve(cfg: dict[str, Any]) -> ClientCurve | None:
    """For tcp:// endpoints: the daemon's public key (`server_key`) and a fresh client keypair."""
    return ClientCurve.from_options(cfg.get("server_key"), None)


def subscribers(cfg: dict[str, Any]) -> dict[str, Any]:
    """`count` SUBs per endpoint with the smallest buffers: each reads one event (so its subscription
    is known to be live), says ready, then never reads again, as a stuck client would.
    """
    curve = _curve(cfg)
    context = zmq.Context()
    subs = []
    for endpoint in cfg["endpoints"]:
        for _ in range(cfg["count"]):
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 1)
            sub.setsockopt(zmq.RCVBUF, 4096)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            connect(sub, endpoint, curve)
            subs.append(sub)
    deadline = time.monotonic() + LIMIT
    waiting = list(subs)
    while waiting and time.monotonic() < deadline:
        waiting = [sub for sub in waiting if not sub.poll(10, zmq.POLLIN)]
    for sub in subs:
        if sub not in waiting:
            sub.recv_multipart()
    _say({"ready": len(subs) - len(waiting)})
    _hold(deadline)
    for sub in subs:
        sub.close(linger=0)
    context.term()
    return {"closed": len(subs)}


def dealers(cfg: dict[str, Any]) -> dict[str, Any]:
    """`count` DEALERs each send `request`; the first `readers` of them wait for their reply, the rest
    never read. Says ready with how many replies came, holds every connection until stdin closes.
    """
    curve = _curve(cfg)
    context = zmq.Context()
    context.set(zmq.MAX_SOCKETS, cfg["count"] + 16)
    sockets = []
    for _ in range(cfg["count"]):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        connect(dealer, cfg["endpoint"], curve)
        dealer.send_multipart([b"", json.dumps(cfg["request"]).encode()])
        sockets.append(dealer)
    deadline = time.monotonic() + LIMIT
    replies = 0
    for dealer in sockets[:cfg["readers"]]:
        if dealer.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
            reply = json.loads(dealer.recv_multipart()[-1])
            replies += bool(reply.get("ok"))
    _say({"ready": len(sockets), "replies": replies})
    _hold(deadline)
    for dealer in sockets:
        dealer.close(linger=0)
    context.term()
    return {"closed": len(sockets)}


MODES = {"flood": flood, "subscribers": subscribers, "dealers": dealers}

if __name__ == "__main__":
    _say(MODES[sys.argv[1]](json.loads(sys.argv[2])))
