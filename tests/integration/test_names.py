"""A second daemon started under a name in use: refused at its start, and harmless.

Three daemons a, b, c (with a cluster secret, so that the replay windows are in play) on
private hosts; a newcomer named "a" starts on a's host (same address) or on a fourth one.
It must exit non-zero naming the holder's address, and the cluster must not notice: a stays
in every view, the leader stays agreed, a's datagrams are not taken for replays, and chat
through a works, within one failure_timeout of the newcomer being gone.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Iterator

import pytest

from tests.cluster import FAST, Cluster, Daemon, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE

KEY = os.urandom(32)


@pytest.fixture(scope="module")
def secured() -> Iterator[Cluster]:
    with Cluster(4, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        key_file = cluster.workdir / "dsd.key"
        key_file.write_text(base64.b64encode(KEY).decode() + "\n")
        key_file.chmod(0o600)
        for i, name in enumerate(["a", "b", "c"], start=1):
            cluster.add(name, priority=100 + i, cluster={"secret_file": str(key_file)})
        cluster.wait_agreed("c")
        yield cluster


def replayed(daemon: Daemon) -> int:
    return daemon.request("stats")["datagrams_rejected_by_reason"]["replayed"]


def chat_through(cluster: Cluster, daemon: Daemon, user: str, text: str) -> subprocess.CompletedProcess:
    return cluster.run(daemon.host, [sys.executable, "-m", "dschat", "--json", "-e", daemon.endpoint,
                                     "--timeout", "1", "--failover", "2", user], input=text + "\n")


@pytest.mark.parametrize("host", [1, 4], ids=["same-host", "other-host"])
def test_a_duplicate_name_is_refused_at_start_and_changes_nothing(secured, host):
    cluster = secured
    a, b, c = (cluster.daemons[name] for name in "abc")
    term, _ = cluster.wait_agreed("c", among="abc")
    before = {d.name: replayed(d) for d in (a, b, c)}
    logged = {d.name: len(d.logs().splitlines()) for d in (a, b, c)}
    newcomer = Daemon(cluster, f"a-again-{host}", host, 150, {"cluster": a.sections["cluster"]})
    newcomer.configure(node={"name": "a"})  # its own directories and endpoints, a's name
    cluster.daemons[newcomer.name] = newcomer  # stopped by the cluster whatever happens
    newcomer.start()
    assert newcomer.process is not None
    status = newcomer.process.wait(timeout=30)
    assert status == 1, newcomer.logs()
    refusal = [line for line in newcomer.logs().splitlines() if "refusing to run" in line]
    address = f"{cluster.net.address(1) if cluster.net else '127.0.0.1'}:"
    assert len(refusal) == 1 and "the name 'a' is held by the running dsd at " + address in refusal[0], \
        newcomer.logs()

    # Nothing changed: not even for a moment did a peer take the newcomer for a restart of a.
    assert cluster.agreed("c", among="abc") == (term, "c"), cluster.describe()
    def new_lines(daemon: Daemon, text: str) -> list[str]:
        return [line for line in daemon.logs().splitlines()[logged[daemon.name]:] if text in line]

    for daemon in (b, c):
        ignored = new_lines(daemon, "ignoring a second daemon named 'a'")
        assert len(ignored) == 1, ignored  # said once, however many datagrams it sent
        joins = [line for line in daemon.logs().splitlines() if "view.join {'name': 'a'" in line]
        assert len(joins) == 1, joins  # a joined once, at the start, never "restarted"
    warned = new_lines(a, "started with this daemon's name 'a'")
    assert len(warned) == 1, warned

    # Within one failure_timeout: a's own datagrams are fresh everywhere, and chat through a works.
    seconds = FAST["failure_timeout"]
    chatted = chat_through(cluster, a, f"user{host}", "still here")
    assert chatted.returncode == 0, chatted.stderr
    assert any(json.loads(line)["text"] == "still here" for line in chatted.stdout.splitlines())
    try:
        wait_until(lambda: cluster.agreed("c", among="abc"), seconds, what="a in every view, c leading")
    except AssertionError:
        raise AssertionError(cluster.describe())
    assert {d.name: replayed(d) for d in (a, b, c)} == before, "a's datagrams were taken for replays"
