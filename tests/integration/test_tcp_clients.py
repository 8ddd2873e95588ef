"""Clients on another private host reach a daemon's CURVE TCP endpoints (issue 4).

Daemon a on host 1 takes TCP clients whose keys are in its client_keys (alice) or
admin_keys (root); every client runs on host 2, which has no daemon. The right server key
and an allowed key chat; a wrong server key or a key it does not know get no answer, and
the daemon goes on serving; elect over TCP needs an admin key.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from dsd.client import ControlClient
from dsd.curve import keygen
from tests.cluster import Cluster, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE
from tests.processes import kill_group, spawn

CLIENT_HOST = 2
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
QUICK = ("--timeout", "0.5")  # a try per half second: a client that gets no answer gives up in 1.5 s


class Keys:
    def __init__(self, root: Path) -> None:
        self.clients, self.admins = root / "clients", root / "admins"
        _, self.alice, _ = keygen(str(self.clients), "alice")
        _, self.root, _ = keygen(str(self.admins), "root")
        _, self.mallory, _ = keygen(str(root / "strangers"), "mallory")  # allowed nowhere
        _, self.other_server, self.other_server_key = keygen(str(root / "strangers"), "server")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Keys, str, str]]:
    """The daemon, the keys, its TCP control endpoint and its public key (as `dsctl server-key` prints it)."""
    keys = Keys(tmp_path_factory.mktemp("keys"))
    with Cluster(2, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        daemon = cluster.add("a", priority=101, host=1, control={
            "tcp_endpoint": "tcp://*:5009", "tcp_feed": "tcp://*:5010",
            "client_keys": str(keys.clients), "admin_keys": str(keys.admins)})
        cluster.wait_agreed("a")
        printed = daemon.dsctl("server-key")
        assert printed.returncode == EXIT_OK, printed
        server_key = printed.stdout.strip()
        endpoint = daemon.request("info")["tcp_endpoint"]
        assert endpoint.startswith("tcp://") and "*" not in endpoint
        yield cluster, keys, endpoint, server_key


def remote(cluster: Cluster, module: str, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return cluster.run(CLIENT_HOST, [sys.executable, "-m", module, *args], input=input)


def dsctl(setup: tuple[Cluster, Keys, str, str], *args: str) -> subprocess.CompletedProcess:
    cluster, _, endpoint, _ = setup
    return remote(cluster, "dsctl", "-e", endpoint, *QUICK, *args)


def chat_texts(cluster: Cluster) -> list[str]:
    """The committed chat messages, read through the daemon's ipc socket."""
    with ControlClient(cluster.daemons["a"].endpoint, timeout=2) as client:
        return [e["text"] for e in client.request("chat.since", seq=0)["entries"]]


def test_dsctl_server_key_prints_the_key_clients_need(setup):
    cluster, _, _, server_key = setup
    as_json = json.loads(cluster.daemons["a"].dsctl("server-key", "--json").stdout)
    assert as_json == {"server_key": server_key} and len(server_key) == 40
    public_file = Path(cluster.daemons["a"].dir / "state" / "server.key").read_text()
    assert f'public-key = "{server_key}"' in public_file  # the certificate beside the secret one


def test_the_right_server_key_and_an_allowed_key_chat(setup):
    cluster, keys, endpoint, server_key = setup
    result = remote(cluster, "dschat", "-e", endpoint, "--server-key=" + server_key, "--key", keys.alice,
                    "--json", "alice", input="hello over curve\n")
    assert result.returncode == EXIT_OK, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert ("alice", "hello over curve") in [(e["user"], e["text"]) for e in entries]
    assert "hello over curve" in chat_texts(cluster)


@pytest.mark.parametrize("who", ["wrong-server-key", "key-not-allowed", "no-key"])
def test_a_wrong_server_key_or_a_key_not_allowed_gets_no_answer(setup, who):
    cluster, keys, endpoint, server_key = setup
    options = {
        "wrong-server-key": ("--server-key=" + keys.other_server_key, "--key", keys.alice),
        "key-not-allowed": ("--server-key=" + server_key, "--key", keys.mallory),
        "no-key": ("--server-key=" + server_key,),  # a fresh key: only any_client = true would let it in
    }[who]
    refused_before = cluster.daemons["a"].request("stats")["tcp_clients_refused"]
    started = time.monotonic()
    result = dsctl(setup, *options, "ping")
    assert result.returncode == EXIT_UNREACHABLE, result
    assert "--server-key" in result.stderr and "client_keys" in result.stderr
    assert time.monotonic() - started < 20  # bounded by its timeout, never hangs
    chat = remote(cluster, "dschat", "-e", endpoint, *options, *QUICK, "--failover", "1", "--json", "mallory",
                  input="let me in\n")
    assert chat.returncode == EXIT_UNREACHABLE, chat
    # The daemon is unaffected: it still serves its allowed clients, and nothing got in.
    assert dsctl(setup, "--server-key=" + server_key, "--key", keys.alice, "ping").stdout.strip() == "pong"
    assert "let me in" not in chat_texts(cluster)
    refused = cluster.daemons["a"].request("stats")["tcp_clients_refused"] - refused_before
    if who == "wrong-server-key":  # the handshake fails before any key is judged
        assert refused == 0
    else:  # every try of dsctl and dschat is a handshake refused and counted
        assert refused >= 2


def test_elect_over_tcp_needs_an_admin_key(setup):
    cluster, keys, _, server_key = setup
    term = cluster.daemons["a"].request("leader")["term"]
    refused = dsctl(setup, "--server-key=" + server_key, "--key", keys.alice, "elect")
    assert refused.returncode == EXIT_FAILED, refused
    assert "(forbidden)" in refused.stderr and "admin_keys" in refused.stderr
    assert cluster.daemons["a"].request("leader")["term"] == term  # nothing happened
    done = dsctl(setup, "--server-key=" + server_key, "--key", keys.root, "elect")
    assert done.returncode == EXIT_OK and "election started" in done.stdout, done
    # Read-only commands are for every allowed key.
    view = dsctl(setup, "--server-key=" + server_key, "--key", keys.alice, "view", "--json")
    assert view.returncode == EXIT_OK and json.loads(view.stdout)["self"] == "a"


def test_a_tcp_endpoint_without_server_key_is_refused_before_connecting(setup):
    result = dsctl(setup, "ping")
    assert result.returncode == EXIT_USAGE
    assert "is a TCP endpoint" in result.stderr and "--server-key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dsctl_watch_reads_the_encrypted_tcp_feed(setup):
    cluster, keys, endpoint, server_key = setup
    daemon = cluster.daemons["a"]
    watch = spawn(
        cluster.prefix(CLIENT_HOST) + [sys.executable, "-m", "dsctl", "-e", endpoint, "--server-key=" + server_key,
                                       "--key", keys.alice, "watch", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while not line and time.monotonic() < deadline and watch.poll() is None:
            daemon.request("elect")  # through ipc: a new term is published on the feed
            if select.select([watch.stdout], [], [], 0.5)[0]:
                line = watch.stdout.readline()
        assert line, f"no event over the TCP feed; dsctl said: {watch.stderr.read() if watch.poll() else ''}"
        assert json.loads(line)["node"] == "a"
    finally:
        kill_group(watch)


def test_a_key_added_to_client_keys_gets_in_after_sighup(setup, tmp_path):
    cluster, keys, _, server_key = setup
    public, bob, _ = keygen(str(tmp_path), "bob")
    assert dsctl(setup, "--server-key=" + server_key, "--key", bob, "ping").returncode == EXIT_UNREACHABLE
    shutil.copy(public, keys.clients / "bob.key")
    cluster.daemons["a"].signal(signal.SIGHUP)
    wait_until(lambda: dsctl(setup, "--server-key=" + server_key, "--key", bob, "ping").returncode == EXIT_OK, 30,
               what="bob let in after the reload")
    elect = dsctl(setup, "--server-key=" + server_key, "--key", bob, "elect")
    assert elect.returncode == EXIT_FAILED and "(forbidden)" in elect.stderr  # a client, not an admin


@pytest.mark.parametrize("keys, words", [
    ({}, ["[control] tcp_endpoint", "client_keys", "any_client = true"]),
    ({"client_keys": "/nonexistent/clients"}, ["[control] client_keys = '/nonexistent/clients': not a directory"]),
], ids=["neither-client_keys-nor-any_client", "missing-client_keys"])
def test_dsd_refuses_to_start_with_one_line_saying_what_to_set(make_cluster, keys, words):
    cluster = make_cluster(1)
    daemon = cluster.add("solo", start=False, control={"tcp_endpoint": "tcp://*:5009", "tcp_feed": "tcp://*:5010",
                                                        **keys})
    result = daemon.run()
    assert result.returncode == EXIT_FAILED, result
    assert result.stderr.startswith("dsd: ") and result.stderr.count("\n") == 1, result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not (daemon.dir / "state" / "server.key_secret").exists()


def test_a_daemon_serving_tcp_clients_stops_cleanly_and_keeps_its_key(make_cluster):
    cluster = make_cluster(2)
    daemon = cluster.add("solo", host=1, control={"tcp_endpoint": "tcp://*:5009", "tcp_feed": "tcp://*:5010",
                                                  "any_client": True})
    cluster.wait_agreed("solo")
    key = daemon.request("server-key")["server_key"]
    endpoint = daemon.request("info")["tcp_endpoint"]
    ping = remote(cluster, "dsctl", "-e", endpoint, "--server-key=" + key, "ping")  # any key, still CURVE
    assert ping.returncode == EXIT_OK, ping
    assert daemon.stop() == 0, daemon.logs()
    daemon.start()
    wait_until(lambda: daemon.try_request("server-key"), 10, what="the restarted daemon")
    assert daemon.request("server-key")["server_key"] == key  # the key survives a restart
