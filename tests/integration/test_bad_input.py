"""Garbage sent to running daemons: on the multicast group and on the control socket.

Datagrams are sent from inside a private host, as a stranger on the LAN would.
Each malformed datagram is built from a valid HEARTBEAT of a made-up node
"intruder" with the highest priority, claiming leadership in a far higher term:
if any of them were accepted, the intruder would join every view and take over.
So "the view and the leader stay the same" is a real check, and every daemon must
count exactly the datagrams sent as rejected.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Iterator

import pytest
import zmq

from dsd import wire
from dsd.commands import MAX_REQUEST
from dsd.core import datagrams
from tests.cluster import Cluster, FeedWatcher

SENDER_HOST = 1

INTRUDER = datagrams.Heartbeat("intruder", 1, 2**31 - 1, 1000, "intruder", "leader", "", 0)
VALID = wire.encode(INTRUDER)


def body(**changes: Any) -> dict[str, Any]:
    """The intruder's heartbeat as a JSON object, with `changes` (None deletes a field)."""
    fields = json.loads(VALID[len(wire.HEADER):])
    for key, value in changes.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    return fields


def datagram(payload: Any, header: bytes = wire.HEADER) -> bytes:
    return header + json.dumps(payload).encode()


def padded(size: int) -> bytes:
    """The valid heartbeat with JSON whitespace up to `size` bytes: only its size is wrong."""
    assert size > len(VALID)
    return VALID[:-1] + b" " * (size - len(VALID)) + b"}"


_random = random.Random(20240501)

BAD_DATAGRAMS: dict[str, list[bytes]] = {
    "random": [b""] + [bytes(_random.getrandbits(8) for _ in range(_random.randint(1, 1400))) for _ in range(20)],
    "truncated": [VALID[:n] for n in sorted({1, 2, 3, 4, 5, 6, 20, len(VALID) // 2, len(VALID) - 2, len(VALID) - 1})],
    "wrong-version": [
        wire.MAGIC,
        datagram(body(), wire.MAGIC + bytes([0])),
        datagram(body(), wire.MAGIC + bytes([wire.VERSION + 1])),
        datagram(body(), wire.MAGIC + bytes([255])),
        datagram(body(), b"XSD" + bytes([wire.VERSION])),
    ],
    "oversized": [padded(wire.MAX_DATAGRAM + 1), padded(1500), padded(9000), padded(65000)],
    "wrong-shape": [
        wire.HEADER,
        wire.HEADER + b"\xff\xfe{}",
        datagram([]), datagram(None), datagram(42), datagram("heartbeat"), datagram([body()]),
        datagram({}),
        datagram(body(t=None)),
        datagram(body(t="takeover")),
        datagram(body(term=None)),
        datagram(body(extra=1)),
        datagram({"t": "leave", "name": "intruder", "incarnation": 1}),
    ],
    "wrong-type": [
        datagram(body(term="1000")),
        datagram(body(term=2**63)),
        datagram(body(priority=-1)),
        datagram(body(priority=True)),
        datagram(body(incarnation=1.5)),
        datagram(body(name="in truder")),
        datagram(body(name="x" * 65)),
        datagram(body(leader=7)),
        datagram(body(state="king")),
        datagram(body(endpoint=5)),
        datagram(body(endpoint="x" * (datagrams.MAX_TEXT + 1))),
        datagram(body(commit=[0])),
        datagram({"t": "coordinator", "name": "intruder", "incarnation": 1, "priority": 5, "term": "9"}),
    ],
}


def test_the_bad_datagrams_differ_from_a_valid_one_only_by_their_defect():
    """Guards the test itself: the intruder's message is valid, and every bad datagram is refused."""
    assert wire.decode(VALID) == INTRUDER
    assert json.loads(padded(2000)[len(wire.HEADER):]) == body()
    for kind, bad in BAD_DATAGRAMS.items():
        for data in bad:
            with pytest.raises(wire.WireError):
                wire.decode(data)


@pytest.fixture(scope="module")
def feeds(cluster: Cluster) -> Iterator[dict[str, FeedWatcher]]:
    watchers = {name: daemon.feed() for name, daemon in cluster.daemons.items()}
    try:
        for watcher in watchers.values():
            watcher.sync(lambda: cluster.mark(SENDER_HOST))
        yield watchers
    finally:
        for watcher in watchers.values():
            watcher.close()


def snapshot(cluster: Cluster) -> dict[str, tuple[int, str | None, frozenset[str]]]:
    result = {}
    for name, daemon in cluster.daemons.items():
        view = daemon.request("view")
        result[name] = (view["term"], view["leader"], frozenset(s["name"] for s in view["servers"]))
    return result


@pytest.mark.parametrize("kind", BAD_DATAGRAMS)
def test_bad_datagrams_are_dropped_counted_and_change_nothing(cluster, feeds, kind):
    bad = BAD_DATAGRAMS[kind]
    before = snapshot(cluster)
    assert all(leader == "c" and names == {"a", "b", "c"} for _, leader, names in before.values()), before
    rejected = {name: d.request("stats")["datagrams_rejected"] for name, d in cluster.daemons.items()}
    first = {name: len(feed.drain()) for name, feed in feeds.items()}

    # A valid LEAVE of a made-up node follows the bad datagrams from the same socket: once a
    # daemon publishes its view.leave, it has read (and judged) everything sent before it.
    flush = f"zz-flush-{kind}"
    cluster.send(SENDER_HOST, bad + [wire.encode(datagrams.Leave(flush, time.time_ns(), 0))])
    for name, feed in feeds.items():
        feed.wait_for("view.leave", name=flush, start=first[name])

    for name, daemon in cluster.daemons.items():
        stats = daemon.request("stats")
        assert stats["datagrams_rejected"] - rejected[name] == len(bad), (name, kind, stats)
    assert snapshot(cluster) == before
    for name, feed in feeds.items():
        seen = feed.drain()[first[name]:]
        assert "intruder" not in json.dumps(seen), seen
        # Membership and leadership events: only the flush's (a late heartbeat under load may
        # make a peer suspect for a moment, which is not what this test is about).
        changes = [(e["topic"], e.get("name")) for e in seen if e["topic"] not in ("view.suspect", "view.alive")]
        assert changes == [("view.join", flush), ("view.leave", flush)], seen
    assert cluster.agreed("c") == (before["c"][0], "c")


# ------------------------------------------------------------------ control socket

ERROR_CODES = {"bad_request", "unknown_command", "bad_args", "too_large", "bad_user", "not_joined"}


def req(cluster: Cluster, payload: bytes, frames: list[bytes] | None = None) -> dict[str, Any]:
    """One request on a fresh REQ socket; the reply must come within 2 s."""
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(cluster.daemons["a"].endpoint)
        socket.send_multipart(frames if frames is not None else [payload])
        assert socket.poll(2000, zmq.POLLIN), f"no reply to {payload[:80]!r}"
        return json.loads(socket.recv())
    finally:
        socket.close(linger=0)


def assert_error(reply: dict[str, Any], code: str) -> str:
    assert reply["ok"] is False, reply
    assert set(reply) == {"ok", "error"}, reply
    assert reply["error"]["code"] == code, reply
    assert code in ERROR_CODES
    message = reply["error"]["message"]
    assert isinstance(message, str) and message, reply
    return message


def refused(cluster: Cluster, code: str) -> int:
    """How many requests a has refused with `code` (dsctl stats)."""
    return cluster.daemons["a"].request("stats")["control_requests_refused"].get(code, 0)


def assert_still_serving(cluster: Cluster) -> None:
    assert req(cluster, b'{"cmd": "ping"}') == {"ok": True, "result": {"pong": True}}


@pytest.mark.parametrize("payload, code", [
    (b"hello", "bad_request"),
    (b"", "bad_request"),
    (b"\xff\xfe\x00", "bad_request"),
    (b'{"cmd": "ping"', "bad_request"),
    (b"[1, 2]", "bad_request"),
    (b'"ping"', "bad_request"),
    (b"null", "bad_request"),
    (b'{"args": {}}', "bad_request"),
    (b'{"cmd": 5}', "bad_request"),
    (b'{"cmd": "ping", "extra": 1}', "bad_request"),
    (b'{"cmd": "reboot"}', "unknown_command"),
    (b'{"cmd": "PING"}', "unknown_command"),
    (b'{"cmd": "ping", "args": {"x": 1}}', "bad_args"),
    (b'{"cmd": "view", "args": [1]}', "bad_args"),
    (b'{"cmd": "elect", "args": "now"}', "bad_args"),
    (json.dumps({"cmd": "ping", "pad": "x" * MAX_REQUEST}).encode(), "too_large"),
    (b'{"cmd": "ping", "rid": 7}', "bad_request"),
    (b'{"cmd": "chat.since", "args": {"seq": ' + b"9" * 5000 + b"}}", "bad_request"),
    (json.dumps({"cmd": "ping", "rid": "r" * 65}).encode(), "bad_request"),
    (b'{"cmd": "chat.send", "args": {"user": "alice"}}', "bad_args"),
    (b'{"cmd": "chat.send", "args": {"user": 5, "session": "s", "id": "i", "text": "t"}}', "bad_args"),
    (b'{"cmd": "chat.since", "args": {"seq": -1}}', "bad_args"),
    (b'{"cmd": "chat.since", "args": {"seq": true}}', "bad_args"),
    (b'{"cmd": "chat.history", "args": {"limit": 1001}}', "bad_args"),
    (b'{"cmd": "chat.join", "args": {"user": "bad user!", "session": "abcdefghijklmnopq"}}', "bad_user"),
    (b'{"cmd": "chat.join", "args": {"user": "alice", "session": "short"}}', "bad_args"),
    (b'{"cmd": "chat.send", "args": {"user": "alice", "session": "abcdefghijklmnopq", "id": "i", "text": "t"}}',
     "not_joined"),
    (b'{"cmd": "chat.heartbeat", "args": {"user": "nobody", "session": "abcdefghijklmnopq"}}', "not_joined"),
], ids=[
    "not-json", "empty", "not-utf8", "truncated-json", "json-array", "json-string", "json-null",
    "no-cmd", "cmd-not-string", "unknown-field", "unknown-command", "command-case", "args-to-ping",
    "args-not-object", "args-string", "oversize", "rid-not-string", "5000-digit-int", "rid-too-long",
    "chat-send-missing-args", "chat-user-not-string", "chat-since-negative", "chat-since-bool",
    "chat-history-limit", "chat-bad-user", "chat-short-session", "chat-send-not-joined",
    "chat-heartbeat-not-joined",
])
def test_malformed_control_request_gets_a_stable_error_code(cluster, payload, code):
    before = refused(cluster, code)
    message = assert_error(req(cluster, payload), code)
    assert refused(cluster, code) == before + 1, "every refusal is counted, by its code"
    if code == "unknown_command":
        assert "ping" in message and "view" in message, "the message lists the known commands"
    assert_still_serving(cluster)


def test_request_in_several_frames_from_req_gets_an_error(cluster):
    assert_error(req(cluster, b"", frames=[b'{"cmd": "ping"}', b'{"cmd": "view"}']), "bad_request")
    assert_still_serving(cluster)


@pytest.mark.parametrize("frames, expect_delimiter", [
    ([b'{"cmd": "ping"}'], False),                       # no empty delimiter frame
    ([b"", b'{"cmd": "ping"}', b"extra"], True),         # two request frames
    ([b"", b"", b'{"cmd": "ping"}'], True),              # two delimiters
], ids=["no-delimiter", "extra-frame", "two-delimiters"])
def test_wrong_number_of_frames_from_a_dealer_gets_an_error(cluster, frames, expect_delimiter):
    before = refused(cluster, "bad_request")
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(cluster.daemons["a"].endpoint)
        socket.send_multipart(frames)
        assert socket.poll(2000, zmq.POLLIN), "a malformed envelope must still be answered"
        reply = socket.recv_multipart()
        assert reply[:-1] == ([b""] if expect_delimiter else []), reply
        assert_error(json.loads(reply[-1]), "bad_request")
        assert refused(cluster, "bad_request") == before + 1
        # The same DEALER, with a proper envelope, is served as usual.
        socket.send_multipart([b"", b'{"cmd": "ping"}'])
        assert socket.poll(2000, zmq.POLLIN)
        assert socket.recv_multipart() == [b"", b'{"ok":true,"result":{"pong":true}}']
    finally:
        socket.close(linger=0)
    assert_still_serving(cluster)


def test_the_daemon_survived_all_of_it(cluster):
    assert_still_serving(cluster)
    assert cluster.agreed("c") is not None
    for daemon in cluster.daemons.values():
        assert daemon.running
        assert "Traceback" not in daemon.logs(), daemon.logs()
