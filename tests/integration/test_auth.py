"""An authenticated cluster: three daemons with a secret on private hosts, and a stranger on a fourth.

The stranger sends forged, tampered and replayed datagrams into the group; each would
change the view or the leader if it were believed, so "nothing changed and each was
counted under its reason" is a real check. A daemon with another secret must not join.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from dsd import auth, wire
from dsd.client import ControlClient
from dsd.core import datagrams
from tests.cluster import Cluster, Daemon, FeedWatcher, wait_until
from tests.netns import namespaces_unavailable
from tests.processes import kill_group, spawn

STRANGER = 4
KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(101, 133))
KEYRING = auth.Keyring((KEY,))


def request(daemon: Daemon, cmd: str, **args: Any) -> dict[str, Any]:
    with ControlClient(daemon.endpoint, timeout=5.0, retries=1) as client:
        return client.request(cmd, **args)


def write_key_file(path: Path, key: bytes, mode: int = 0o600) -> str:
    path.write_text(f"# test key\n{base64.b64encode(key).decode()}\n")
    path.chmod(mode)
    return str(path)


@pytest.fixture(scope="module")
def secured() -> Iterator[Cluster]:
    """Hosts a, b, c (priorities 101-103) with the secret, agreed on leader c; host 4 is free."""
    with Cluster(4, use_namespaces=namespaces_unavailable() is None) as cluster:
        key_file = write_key_file(cluster.workdir / "dsd.key", KEY)
        for i, name in enumerate(["a", "b", "c"], start=1):
            cluster.add(name, priority=100 + i, cluster={"secret_file": key_file})
        cluster.wait_agreed("c")
        yield cluster


class Stranger:
    """Sends datagrams from host 4, signing with the real key when asked (a test-side key holder)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.sealer = auth.Sealer(KEYRING)
        self.flushes = 0

    def signed_leave(self) -> tuple[bytes, str]:
        """A signed LEAVE of a made-up node: each daemon publishes view.join then view.leave of it."""
        self.flushes += 1
        name = f"zz-flush-{self.flushes}"
        return self.sealer.seal(datagrams.Leave(name, time.time_ns(), 0)), name

    def mark(self) -> dict[str, Any]:
        data, name = self.signed_leave()
        self.cluster.send(STRANGER, [data])
        return {"name": name}

    def capture(self, count: int) -> list[bytes]:
        """The next `count` signed datagrams on the group, as any host on the LAN can see them."""
        net = self.cluster.net
        interface = net.address(STRANGER) if net is not None else "127.0.0.1"
        settings = self.cluster.cluster_settings
        group, port = settings.get("group", "239.255.77.1"), settings.get("port", 5008)
        result = self.cluster.run(STRANGER, [sys.executable, "-I", "-S", "-c", _SNIFFER, group,
                                             str(port), interface, str(count), auth.HEADER.hex()])
        assert result.returncode == 0, result.stderr
        return [bytes.fromhex(d) for d in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def stranger(secured: Cluster) -> Stranger:
    return Stranger(secured)


@pytest.fixture(scope="module")
def feeds(secured: Cluster, stranger: Stranger) -> Iterator[dict[str, FeedWatcher]]:
    watchers = {name: daemon.feed() for name, daemon in secured.daemons.items()}
    try:
        for watcher in watchers.values():
            watcher.sync(stranger.mark)
        yield watchers
    finally:
        for watcher in watchers.values():
            watcher.close()


def snapshot(cluster: Cluster, names: list[str]) -> dict[str, tuple[int, str | None, frozenset[str]]]:
    result = {}
    for name in names:
        view = cluster.daemons[name].request("view")
        result[name] = (view["term"], view["leader"], frozenset(s["name"] for s in view["servers"]))
    return result


def rejected(daemon: Daemon) -> dict[str, int]:
    stats = daemon.request("stats")
    by_reason = stats["datagrams_rejected_by_reason"]
    assert sum(by_reason.values()) == stats["datagrams_rejected"], stats
    return by_reason


def send_and_flush(cluster: Cluster, stranger: Stranger, feeds: dict[str, FeedWatcher],
                   datagrams: list[bytes]) -> list[dict[str, Any]]:
    """Send `datagrams` then a signed LEAVE of a made-up node; returns the events the datagrams caused.

    Once a daemon publishes the LEAVE's view.leave, it has judged everything sent before it.
    """
    first = {name: len(feed.drain()) for name, feed in feeds.items()}
    flush, name = stranger.signed_leave()
    cluster.send(STRANGER, datagrams + [flush])
    seen = []
    for daemon, feed in feeds.items():
        feed.wait_for("view.leave", name=name, start=first[daemon])
        events = feed.drain()[first[daemon]:]
        changes = [(e["topic"], e.get("name")) for e in events if e["topic"] not in ("view.suspect", "view.alive")]
        assert changes == [("view.join", name), ("view.leave", name)], events
        seen += events
    return seen


def test_a_bad_secret_file_stops_dsd_at_start_with_one_line(secured: Cluster) -> None:
    daemon = secured.add("x", host=STRANGER, start=False)
    cases = {
        write_key_file(secured.workdir / "open.key", KEY, 0o644): "group or others can access it (mode 0644); "
                                                                   "run chmod 600",
        str(secured.workdir / "missing.key"): "cannot read: No such file or directory",
        write_key_file(secured.workdir / "short.key", KEY[:16]): "line 2: bad key: 16 bytes, at least 32",
    }
    for path, why in cases.items():
        daemon.configure(cluster={"secret_file": path})
        for args in ((), ("--check-config",)):
            result = daemon.run(*args)
            assert result.returncode == 1, result
            assert result.stderr.startswith(f"dsd: {path}") and why in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
    del secured.daemons["x"]


def test_without_a_secret_dsd_warns_once_at_start(secured: Cluster) -> None:
    warning = "cluster traffic is not authenticated"
    port = secured.cluster_settings.get("port", 5008) + 1  # its own group: no traffic to a, b, c
    daemon = secured.add("y", host=STRANGER, cluster={"port": port})
    try:
        wait_until(lambda: daemon.role() == "leader", timeout=10, what="y leading its own cluster")
        assert daemon.logs().count(warning) == 1, daemon.logs()
    finally:
        daemon.stop()
        del secured.daemons["y"]
    assert all(warning not in secured.daemons[name].logs() for name in ("a", "b", "c"))


def test_forged_tampered_and_replayed_datagrams_change_nothing(secured, stranger, feeds) -> None:
    names = ["a", "b", "c"]
    before = snapshot(secured, names)
    assert all(leader == "c" and members == {"a", "b", "c"} for _, leader, members in before.values()), before
    counts = {name: rejected(secured.daemons[name]) for name in names}

    captured = [d for d in stranger.capture(20) if auth.Opener(KEYRING).open(d).name == "c"]
    assert captured, "c sends heartbeats"
    real = captured[-1]
    tampered = bytearray(real)
    tampered[len(auth.HEADER) + auth.KEY_ID_SIZE + auth.COUNTER_SIZE + 12] ^= 0x01  # a byte of the message
    # The intruder would lead: highest priority, a far higher term.
    coordinator = datagrams.Coordinator("intruder", time.time_ns(), 2**31 - 1, 10**6)
    wrong_key = auth.Sealer(auth.Keyring((OTHER_KEY,))).seal(coordinator)
    wrong_key_known_id = bytearray(wrong_key)
    wrong_key_known_id[len(auth.HEADER):len(auth.HEADER) + auth.KEY_ID_SIZE] = auth.key_id(KEY)
    bad = {
        "unsigned": [wire.encode(coordinator)],
        "unknown_key": [wrong_key],
        "bad_tag": [bytes(wrong_key_known_id), bytes(tampered)],
        "replayed": [real],
    }
    events = send_and_flush(secured, stranger, feeds, [d for datagrams in bad.values() for d in datagrams])

    for name in names:
        now = rejected(secured.daemons[name])
        grown = {reason: now[reason] - counts[name][reason] for reason in now}
        assert grown == {"malformed": 0, "unsigned": 1, "bad_tag": 2, "unknown_key": 1, "replayed": 1,
                         "refused": 0}, (name, grown)
    assert snapshot(secured, names) == before
    assert "intruder" not in json.dumps(events)
    assert secured.agreed("c") == (before["c"][0], "c")


def test_a_daemon_with_another_secret_does_not_join(secured: Cluster) -> None:
    names = ["a", "b", "c"]
    before = snapshot(secured, names)
    counts = {name: rejected(secured.daemons[name])["unknown_key"] for name in names}
    other = write_key_file(secured.workdir / "other.key", OTHER_KEY)
    outsider = secured.add("d", priority=500, host=STRANGER, cluster={"secret_file": other})
    try:
        # d outranks everyone: if any of its datagrams were believed it would lead.
        wait_until(lambda: all(rejected(secured.daemons[n])["unknown_key"] >= counts[n] + 10 for n in names)
                   and rejected(outsider)["unknown_key"] >= 10, timeout=15, what="both sides rejecting")
        view = outsider.request("view")
        assert [s["name"] for s in view["servers"]] == ["d"] and view["leader"] == "d", view
        assert snapshot(secured, names) == before
        # Each side says why, once per host, however many datagrams it drops.
        stranger = secured.net.address(STRANGER) if secured.net else "127.0.0.1"
        for daemon in [secured.daemons[n] for n in names]:
            said = [l for l in daemon.logs().splitlines() if f"ignoring datagrams from {stranger}: signed with a key" in l]
            assert len(said) == 1, said
        assert outsider.logs().count("signed with a key this daemon does not have") >= 1
    finally:
        assert outsider.stop() == 0, outsider.logs()  # a clean exit, its links' ZAP handler and all
        del secured.daemons["d"]


def test_chat_works_over_curve_links(secured: Cluster) -> None:
    a, b, c = (secured.daemons[name] for name in "abc")
    session = "curve-session-0001"
    request(a, "chat.join", user="alice", session=session)
    seq = request(a, "chat.send", user="alice", session=session, id="m1", text="over curve")["seq"]

    def delivered(daemon: Daemon) -> bool:
        entries = request(daemon, "chat.since", seq=seq - 1)["entries"]
        return any(e["seq"] == seq and e["text"] == "over curve" for e in entries)

    wait_until(lambda: all(delivered(d) for d in (a, b, c)), timeout=10, what="the message on every daemon")
    for daemon in (a, b, c):
        stats = daemon.request("stats")
        assert stats["link_messages_received"] > 0 and stats["link_clients_refused"] == 0, stats


def test_a_daemon_stops_cleanly_and_rejoins_under_a_new_incarnation(secured: Cluster) -> None:
    """The links' ZAP handler does not hold up the exit; the peers' replay windows start afresh."""
    b = secured.daemons["b"]
    before = {name: rejected(secured.daemons[name]) for name in ("a", "c")}
    assert b.stop() == 0, b.logs()
    secured.wait_agreed("c", among=["a", "c"])
    b.start()
    secured.wait_agreed("c")
    for name in ("a", "c"):  # ("refused", by the core: the second of b's two LEAVEs)
        now = rejected(secured.daemons[name])
        assert all(now[reason] == before[name][reason] for reason in auth.REASONS), (name, before[name], now)


def test_the_link_of_a_daemon_needs_the_secret_not_only_its_endpoint(secured, stranger) -> None:
    """A stranger who read c's endpoint and link key from a heartbeat cannot deliver to it."""
    beat = next(m for m in map(auth.Opener(KEYRING).open, stranger.capture(20))
                if isinstance(m, datagrams.Heartbeat) and m.name == "c")
    assert beat.endpoint and beat.link_key
    target = secured.daemons["c"]
    for key, delivers in ((KEY, True), (OTHER_KEY, False)):
        before = target.request("stats")
        pusher = spawn(
            secured.prefix(STRANGER) + [sys.executable, "-c", _PUSHER, beat.endpoint, beat.link_key, key.hex()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if delivers:  # the control: with the secret the same socket gets through (and its junk is rejected)
                wait_until(lambda: target.request("stats")["link_messages_received"] > before["link_messages_received"],
                           timeout=10, what="the link message with the right key")
            else:
                wait_until(lambda: target.request("stats")["link_clients_refused"] > before["link_clients_refused"],
                           timeout=10, what="the handshake with the wrong key refused")
        finally:
            try:
                pusher.communicate(timeout=10)  # closing stdin ends it
            finally:
                kill_group(pusher)
        after = target.request("stats")
        if not delivers:
            assert after["link_messages_received"] == before["link_messages_received"], (before, after)
            assert after["link_messages_rejected"] == before["link_messages_rejected"], (before, after)


def write_keys(path: Path, *keys: bytes) -> None:
    path.write_text("".join(base64.b64encode(key).decode() + "\n" for key in keys))


def reload_all(cluster: Cluster, files: dict[str, Path], *keys: bytes) -> None:
    """One rotation step on every daemon in turn: rewrite its key file, SIGHUP, wait for the new keys."""
    for name, path in files.items():
        daemon = cluster.daemons[name]
        done = daemon.logs().count("cluster keys reloaded")
        write_keys(path, *keys)
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: daemon.logs().count("cluster keys reloaded") > done, timeout=10, what=f"{name} reloaded")


def test_keys_rotate_without_downtime_and_a_bad_reload_keeps_the_running_keys(make_cluster) -> None:
    cluster = make_cluster(3)
    files = {name: cluster.workdir / f"{name}.key" for name in "abc"}
    for i, (name, path) in enumerate(files.items(), start=1):
        write_key_file(path, KEY)
        cluster.add(name, priority=100 + i, cluster={"secret_file": str(path)})
    agreed = cluster.wait_agreed("c")
    new = OTHER_KEY

    a = cluster.daemons["a"]
    files["a"].chmod(0o644)
    a.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed, keeping the running configuration" in a.logs(), timeout=10, what="a refusal")
    assert "chmod 600" in a.logs()
    files["a"].chmod(0o600)

    reload_all(cluster, files, KEY, new)  # 1. the new key added second everywhere
    reload_all(cluster, files, new, KEY)  # 2. moved first: daemons sign with it, one by one
    reload_all(cluster, files, new)       # 3. the old key removed
    received = {name: d.request("stats")["datagrams_received"] for name, d in cluster.daemons.items()}
    wait_until(lambda: all(d.request("stats")["datagrams_received"] > received[name] + 30
                           for name, d in cluster.daemons.items()), timeout=10, what="traffic under the new key")
    assert cluster.agreed("c") == agreed, "no election, no leader change"
    for daemon in cluster.daemons.values():
        stats = daemon.request("stats")
        assert stats["datagrams_rejected"] == 0 and stats["link_clients_refused"] == 0, (daemon.name, stats)

    # The links were re-made with the new client keys: a chat message still reaches everyone.
    session = "rotation-session-01"
    request(a, "chat.join", user="rosa", session=session)
    seq = request(a, "chat.send", user="rosa", session=session, id="r1", text="after rotation")["seq"]
    wait_until(lambda: all(any(e["seq"] == seq for e in request(d, "chat.since", seq=seq - 1)["entries"])
                           for d in cluster.daemons.values()), timeout=10, what="the message everywhere")


def test_a_replayed_heartbeat_of_a_dead_daemon_does_not_bring_it_back(secured, stranger, feeds) -> None:
    """Last in this module: it kills a."""
    from_a = [d for d in stranger.capture(30) if auth.Opener(KEYRING).open(d).name == "a"]
    assert from_a, "a sends heartbeats"
    secured.daemons["a"].kill()
    term, _ = secured.wait_agreed("c", among=["b", "c"])
    counts = {name: rejected(secured.daemons[name])["replayed"] for name in ("b", "c")}
    survivors = {name: feed for name, feed in feeds.items() if name != "a"}
    events = send_and_flush(secured, stranger, survivors, from_a)
    for name in ("b", "c"):
        assert rejected(secured.daemons[name])["replayed"] - counts[name] == len(from_a)
    assert secured.agreed("c", among=["b", "c"]) == (term, "c")
    assert not [e for e in events if e.get("name") == "a"], events


# Run on the stranger's host: argv = endpoint, server key (Z85), cluster key (hex). Connects a
# PUSH with the client keypair derived from that key, sends one (junk) link message, and
# stays connected until stdin closes.
_PUSHER = """
import sys, zmq
from dsd.io.links import client_keypair
endpoint, server_key, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
socket = zmq.Context.instance().socket(zmq.PUSH)
socket.setsockopt(zmq.LINGER, 0)
socket.curve_serverkey = server_key.encode()
pair = client_keypair(key)
socket.curve_publickey, socket.curve_secretkey = pair.public, pair.secret
socket.connect(endpoint)
socket.send(b"not a link message")
sys.stdin.read()
"""


# Run on the stranger's host: argv = group, port, interface address, count, header (hex);
# prints a JSON list of the first `count` datagrams that start with the header, in hex.
_SNIFFER = """
import json, socket, struct, sys
group, port, interface, count, header = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface)))
s.settimeout(10)
found = []
while len(found) < count:
    data = s.recv(65536)
    if data.startswith(bytes.fromhex(header)):
        found.append(data.hex())
print(json.dumps(found))
"""
