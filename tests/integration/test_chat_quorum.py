"""The chat's voters and quorum with real daemons, at default chat settings.

The voters are in the log: formed from the daemons there at the first start, grown by a
daemon that catches up, shrunk by remove_dead_after. A side of the network without a
majority of them refuses at once (no_quorum); the log never splits.
"""

from __future__ import annotations

import pytest

from dsd.client import ControlClient, DaemonError
from tests.chatclients import Chats, agreed_log, assert_recorded_once_in_order, assert_view, chat_log, request
from tests.cluster import Cluster, Daemon, wait_until

CHAT = {"client_timeout": 1.0}
EXIT_OK = 0


def voters(daemon: Daemon) -> list[str] | None:
    stats = daemon.try_request("stats")
    return stats["chat_voters"] if stats else None


def all_voters(cluster: Cluster, names: list[str]) -> bool:
    return all(voters(d) == sorted(names) for d in cluster.live())


def send(daemon: Daemon, user: str, text: str, id: str) -> dict:
    """Join (again) and send one message straight through the control socket."""
    session = f"{user}-session-0001"
    with ControlClient(daemon.endpoint, timeout=5.0, retries=1) as client:
        client.request("chat.join", user=user, session=session)
        return client.request("chat.send", user=user, session=session, id=id, text=text)


def start(cluster: Cluster, names: list[str], **chat: object) -> None:
    for i, name in enumerate(names, start=1):
        cluster.add(name, priority=100 + i, chat={**CHAT, **chat})
    cluster.wait_agreed(names[-1], timeout=15)
    wait_until(lambda: all_voters(cluster, names), 15, what=f"{names} the voters everywhere")


def test_a_split_3_2_at_default_settings_heals_into_one_log(make_cluster):
    cluster = make_cluster(5, partitions=True)
    names = ["a", "b", "c", "d", "e"]
    start(cluster, names)
    chats = Chats(cluster)
    try:
        users = {name: chats.piped(i, f"u{name}", name) for i, name in enumerate(names, start=1)}
        wait_until(lambda: all(u.own() == [] and any(e["kind"] == "join" and e["user"] == u.user for e in u.view)
                               for u in users.values()), 15, what="every user joined")
        lines = {name: [f"u{name} {n:02d}" for n in range(30)] for name in names}
        for n in range(10):
            for name, user in users.items():
                user.write(lines[name][n])
        cluster.net.split([4, 5])  # d and e: 2 of 5, each side still talks within itself
        for n in range(10, 20):
            for name, user in users.items():
                user.write(lines[name][n])
        try:
            wait_until(lambda: "no_quorum" in users["d"].stderr, 15, what="the minority told no_quorum")
        except AssertionError as error:
            raise AssertionError(f"{error}; d's client said: {users['d'].stderr}\n{cluster.describe()}") from None
        wait_until(lambda: len(users["a"].own()) >= 20, 15, what="the majority taking messages")
        assert len(users["d"].own()) < 20 and len(users["e"].own()) < 20
        cluster.net.unsplit([4, 5])
        for n in range(20, 30):
            for name, user in users.items():
                user.write(lines[name][n])
        codes = {name: user.finish(timeout=60) for name, user in users.items()}
        assert codes == dict.fromkeys(names, EXIT_OK), {name: users[name].stderr[-500:] for name in names}
        log = agreed_log(cluster)
        for name, user in users.items():
            assert_recorded_once_in_order(log, user.user, lines[name])
            assert_view(user.view, log, user.user)  # every entry a user saw is in the log at its seq
    finally:
        chats.close()


@pytest.mark.parametrize("second, survivor, chats_on", [("b", "c", True), ("c", "b", False)],
                         ids=["the-lower-dies-the-top-chats-alone", "the-top-dies-the-lower-refuses"])
def test_three_daemons_lose_one_then_another_as_the_tie_rule_says(make_cluster, second, survivor, chats_on):
    cluster = make_cluster(3)
    start(cluster, ["a", "b", "c"], remove_dead_after=1.0)
    cluster.daemons["a"].kill()
    assert send(cluster.daemons["c"], "ann", "after a died", "m1")["seq"] > 0, "two of three go on"
    wait_until(lambda: all_voters(cluster, ["b", "c"]), 15, what="a removed after remove_dead_after")
    cluster.daemons[second].kill()
    last = cluster.daemons[survivor]
    wait_until(lambda: last.role() == "leader", 15, what=f"{survivor} leading alone")
    if chats_on:  # c is the higher-ranked of {b, c}: its half is a quorum
        assert send(last, "ann", "c alone", "m2")["seq"] > 0
    else:
        with pytest.raises(DaemonError, match="no_quorum") as refused:
            send(last, "bob", "b alone", "m2")
        assert "holds 1 of the chat's 2 voters" in str(refused.value)
        assert request(last, "stats")["chat_voters"] == ["b", "c"], "nothing removed without a quorum"


def test_two_daemons_keep_chatting_when_the_lower_one_is_killed(make_cluster):
    cluster = make_cluster(2)
    start(cluster, ["a", "b"])
    cluster.daemons["a"].kill()
    wait_until(lambda: len(cluster.daemons["b"].request("view")["servers"]) == 1, 15, what="a gone from b's view")
    assert send(cluster.daemons["b"], "ann", "b alone", "m1")["seq"] > 0


def test_a_restart_of_every_daemon_keeps_the_voters_and_the_log(make_cluster):
    cluster = make_cluster(3)
    names = ["a", "b", "c"]
    start(cluster, names)
    for n in range(5):
        send(cluster.daemons[names[n % 3]], "ann", f"before {n}", f"m{n}")
    before = agreed_log(cluster)
    for daemon in cluster.daemons.values():
        daemon.kill()
    for daemon in cluster.daemons.values():
        daemon.start()
    cluster.wait_agreed("c", timeout=15)
    assert all(voters(d) == names for d in cluster.live()), "the voters come back from the log"
    assert send(cluster.daemons["a"], "ann", "after", "m9")["seq"] > before[-1]["seq"]
    after = agreed_log(cluster)
    assert after[:len(before)] == before


def test_a_new_daemon_catches_up_and_becomes_a_voter(make_cluster):
    cluster = make_cluster(3)
    start(cluster, ["a", "b"])
    for n in range(20):
        send(cluster.daemons["b"], "ann", f"line {n}", f"m{n}")
    c = cluster.add("c", priority=90, chat=dict(CHAT))  # ranked lowest: the leader stays b
    wait_until(lambda: all_voters(cluster, ["a", "b", "c"]), 15, what="c a voter everywhere")
    assert chat_log(c) == agreed_log(cluster)
    views = {s["name"]: s["chat"] for s in request(c, "view")["servers"]}
    assert views == {"a": "voter", "b": "voter", "c": "voter"}
