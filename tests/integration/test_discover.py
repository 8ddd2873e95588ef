"""A chat client on a host without a daemon: TCP endpoints, found by `dschat --discover`.

The daemons share one server key (the same [control] server_key file), so one
--server-key serves whichever of them the client reaches.
"""

from __future__ import annotations

import json
import sys

from dsd.client import ControlClient
from dsd.curve import create_certificates
from tests.cluster import render_toml


def tcp(port: int, server_key: str) -> dict[str, object]:
    """TCP client endpoints on `port` and the next (distinct ports, in case the hosts share loopback)."""
    return {"tcp_endpoint": f"tcp://*:{port}", "tcp_feed": f"tcp://*:{port + 1}", "server_key": server_key,
            "any_client": True}


def dschat(cluster, host: int, config, *args: str, input: str = ""):
    return cluster.run(host, [sys.executable, "-m", "dschat", "-c", str(config), *args], input=input)


def test_a_client_on_a_host_without_a_daemon_discovers_the_daemons_and_chats(make_cluster, tmp_path):
    cluster = make_cluster(3)
    public, secret = create_certificates(str(tmp_path), "cluster")
    cluster.add("a", priority=101, control=tcp(5009, secret))
    cluster.add("b", priority=102, control=tcp(5011, secret))
    cluster.wait_agreed("b")
    client_config = tmp_path / "client.toml"  # no daemon on host 3: only where the group is
    client_config.write_text(render_toml({"cluster": dict(cluster.cluster_settings)}))
    result = dschat(cluster, 3, client_config, "--discover", "--server-key", public, "--json", "eve",
                    input="hello from afar\n")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["kind"], e["text"]) for e in entries if e["user"] == "eve"][:2] == [
        ("join", ""), ("message", "hello from afar")]
    assert entries[0]["server"] in ("a", "b")
    for daemon in cluster.daemons.values():  # committed everywhere, as for a local client
        with ControlClient(daemon.endpoint) as client:
            texts = [e["text"] for e in client.request("chat.since", seq=0)["entries"]]
        assert "hello from afar" in texts, daemon.name
    offered = json.loads(cluster.daemons["a"].dsctl("info", "--json").stdout)
    assert offered["tcp_endpoint"].endswith(":5009") and "*" not in offered["tcp_endpoint"]


def test_discover_without_any_daemon_offering_says_what_to_check(make_cluster, tmp_path):
    cluster = make_cluster(2)
    cluster.add("a", priority=101)  # no TCP endpoints: it does not answer DISCOVER
    cluster.wait_agreed("a")
    client_config = tmp_path / "client.toml"
    client_config.write_text(render_toml({"cluster": dict(cluster.cluster_settings)}))
    public, _ = create_certificates(str(tmp_path), "cluster")
    result = dschat(cluster, 2, client_config, "--discover", "--server-key", public, "eve")
    assert result.returncode == 3, result
    assert "no daemon answered the discovery probe" in result.stderr and "tcp_endpoint" in result.stderr
    assert "dschat -e tcp://HOST:PORT" in result.stderr  # where multicast does not reach
