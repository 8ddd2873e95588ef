"""The chat's guarantees with real dsd and dschat processes on three private hosts.

One cluster (a, b, c on hosts 1-3, c leading, [chat] client_timeout = 1 s) is shared by
every test; a test that kills a daemon leaves it to the next test's `chats` fixture to
restart it (same state_dir) and to wait until the cluster agrees again, every daemon
holds the same log and nobody is left in the chat. Every dschat process is stopped by
its pid when its test ends, whatever happened. Each test has its own user names, since
a client is shown the latest history when it starts.

What is checked is the log itself (`chat.since 0` on each daemon, through the control
socket) against what each client printed (`--json`): one log, the same on every daemon,
seq 1, 2, 3, ... with no gap; each client's view a contiguous run of it; each line a
client was given recorded exactly once, in the order given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from typing import Iterator

import pytest

from tests.chatclients import (
    HEARTBEAT, Chats, agreed_log, assert_recorded_once_in_order, assert_view, chat_log, feed, present, request,
    try_log, who,
)
from tests.cluster import Cluster, wait_until
from tests.integration.conftest import NAMESPACES_UNAVAILABLE

CLIENT_TIMEOUT = 1.0
MAX_MESSAGE = 256
CHAT = {"client_timeout": CLIENT_TIMEOUT, "max_message": MAX_MESSAGE}
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 4


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_cluster() -> Iterator[Cluster]:
    with Cluster(3, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        for i, name in enumerate(["a", "b", "c"], start=1):
            cluster.add(name, priority=100 + i, chat=dict(CHAT))
        cluster.wait_agreed("c")
        yield cluster


@pytest.fixture
def chats(chat_cluster: Cluster) -> Iterator[Chats]:
    """The shared cluster whole again (every daemon running, agreed on c, one log, nobody present)."""
    cluster = chat_cluster
    for daemon in cluster.daemons.values():
        if not daemon.running:
            daemon.start()
    cluster.wait_agreed("c", timeout=15)
    agreed_log(cluster)
    wait_until(lambda: present(cluster), 10, what="nobody left in the chat")
    chats = Chats(cluster)
    try:
        yield chats
    finally:
        chats.close()


# --- the tests --------------------------------------------------------------------------------

def test_every_client_sees_the_same_entries_in_the_same_order(chats):
    cluster = chats.cluster
    piped = {"alice": chats.piped(1, "alice", "a"), "bob": chats.piped(2, "bob", "b"),
             "carol": chats.piped(3, "carol", "c")}
    dave = chats.terminal(3, "dave", "c")
    wait_until(lambda: present(cluster, "alice", "bob", "carol", "dave"), 15, what="four users present")
    wait_until(lambda: "dave>" in dave.screen, 10, what="dave's prompt")

    sent = {user: [f"{user} says {n}" for n in range(1, 5)] for user in piped}
    for n in range(4):
        for user, chat in piped.items():
            chat.write(sent[user][n])
    dave.type("hello from a terminal")
    sent["dave"] = ["hello from a terminal"]
    everything = [(user, text) for user, lines in sent.items() for text in lines]
    for chat in piped.values():
        wait_until(lambda: all(chat.seen(u, t) for u, t in everything), 15, what=f"{chat.user} seeing every line")
    wait_until(lambda: all(f"<{u}> {t}" in dave.screen for u, t in everything), 15, what="dave seeing every line")

    dave.type("/quit")
    codes = {user: chat.finish() for user, chat in piped.items()}
    codes["dave"] = dave.finish()
    assert codes == dict.fromkeys(codes, EXIT_OK), {u: c.stderr for u, c in piped.items()}

    log = agreed_log(cluster)
    for user, lines in sent.items():
        assert_recorded_once_in_order(log, user, lines)
    order = [(e["user"], e["text"]) for e in log if (e["user"], e["text"]) in everything]
    assert sorted(order) == sorted(everything)
    for user, chat in piped.items():
        assert_view(chat.view, log, user)
        # Everyone was present before the first line: each saw all of them, in the log's order.
        assert [(e["user"], e["text"]) for e in chat.view if (e["user"], e["text"]) in everything] == order
        # It was shown its own leave (and whatever was committed before it exited).
        assert [e["kind"] for e in chat.view if e["user"] == user][-1] == "leave"
    screen = dave.screen
    positions = [screen.find(f"<{u}> {t}") for u, t in order]
    assert positions == sorted(positions), f"dave's screen shows another order:\n{screen}"
    seq_maps = [{e["seq"]: (e["user"], e["id"]) for e in chat.view} for chat in piped.values()]
    for a in seq_maps:
        for b in seq_maps:
            assert {s: a[s] for s in a.keys() & b.keys()} == {s: b[s] for s in a.keys() & b.keys()}
    joins = [e for e in log if e["kind"] == "join" and e["user"] == "dave"]
    leaves = [e for e in log if e["kind"] == "leave" and e["user"] == "dave"]
    assert joins and leaves and joins[-1]["server"] == "c" and leaves[-1]["seq"] > joins[-1]["seq"]


def test_kill_9_of_the_leader_while_clients_send_loses_and_repeats_nothing(chats):
    cluster = chats.cluster
    ann, ben = chats.piped(1, "ann", "a"), chats.piped(2, "ben", "b")
    wait_until(lambda: present(cluster, "ann", "ben"), 15, what="ann and ben present")
    count = 40
    lines = {chat: [f"{chat.user} line {n:02d}" for n in range(1, count + 1)] for chat in (ann, ben)}
    killed = threading.Event()
    feeders = []
    for chat in (ann, ben):
        feeders.append(feed(chat, lines[chat][:count // 2], killed, lines[chat][count // 2:]))
    # Lines are acknowledged and flowing on both daemons: now the leader dies, mid-stream.
    wait_until(lambda: len(ann.own()) >= 8 and len(ben.own()) >= 8, 15, what="the first lines through")
    leader = cluster.daemons["c"]
    leader.kill()
    killed.set()
    for feeder in feeders:
        feeder.join(timeout=30)
    codes = {chat.user: chat.finish(timeout=40) for chat in (ann, ben)}
    assert codes == {"ann": EXIT_OK, "ben": EXIT_OK}, f"ann: {ann.stderr}\nben: {ben.stderr}"

    term, new_leader = cluster.wait_agreed(among=["a", "b"])
    assert new_leader == "b"
    log = agreed_log(cluster, among=["a", "b"])
    for chat in (ann, ben):
        assert_recorded_once_in_order(log, chat.user, lines[chat])
        assert_view(chat.view, log, chat.user)
        assert chat.own() == lines[chat]
    # Both clients saw the other's lines interleaved exactly as the log has them.
    for chat in (ann, ben):
        theirs = [e for e in chat.view if e["kind"] == "message"]
        expected = [e for e in log if e["kind"] == "message" and theirs[0]["seq"] <= e["seq"] <= theirs[-1]["seq"]]
        assert theirs == expected


@pytest.mark.parametrize("user, own, other, watching", [("erin", "a", "b", "c"), ("fay", "c", "b", "a")],
                         ids=["own-daemon-a-follower", "own-daemon-c-leader"])
def test_client_fails_over_when_its_own_daemon_is_killed(chats, user, own, other, watching):
    cluster = chats.cluster
    host = cluster.daemons[own].host
    # --timeout 0.3: three silent tries (0.9 s) and dschat moves to the other daemon.
    client = chats.piped(host, user, own, other, options=("--timeout", "0.3"))
    watcher = chats.piped(cluster.daemons[watching].host, "watcher", watching)
    wait_until(lambda: present(cluster, user, "watcher"), 15, what=f"{user} present")
    lines = [f"{user} line {n:02d}" for n in range(1, 41)]
    killed = threading.Event()
    feeders = [feed(client, lines[:20], killed, lines[20:])]
    wait_until(lambda: len(client.own()) >= 8, 15, what="the first lines through")
    cluster.daemons[own].kill()
    killed.set()
    for feeder in feeders:
        feeder.join(timeout=30)
    wait_until(lambda: client.own() == lines, 30, what=f"all of {user}'s lines delivered")
    assert client.finish(timeout=40) == EXIT_OK, client.stderr
    assert "failing over" in client.stderr and f"connected to {other} at" in client.stderr, client.stderr
    assert watcher.finish() == EXIT_OK, watcher.stderr

    log = agreed_log(cluster, among=[other, watching])
    assert_recorded_once_in_order(log, user, lines)
    # No gap and no repeat in what the client showed across the failover.
    assert_view(client.view, log, user)
    assert client.own() == lines
    joins = [e for e in log if e["kind"] == "join" and e["user"] == user]
    assert [j["server"] for j in joins] == [own, other]
    assert_view(watcher.view, log, "watcher")


def test_restarted_daemon_keeps_its_history_and_catches_up(chats):
    cluster = chats.cluster
    b = cluster.daemons["b"]
    before = chat_log(b)
    b.kill()
    cluster.wait_agreed("c", among=["a", "c"])
    missed = [f"while b was down {n}" for n in range(1, 11)]
    gus = chats.piped(1, "gus", "a")
    gus.write(*missed)
    assert gus.finish() == EXIT_OK, gus.stderr
    during = agreed_log(cluster, among=["a", "c"])
    assert len(during) > len(before)

    def startup_lines() -> list[str]:
        return re.findall(r"chat: peer endpoint .* history .* \(last seq (\d+)\)", b.logs())

    starts = len(startup_lines())
    b.start()
    # The history on disk: b starts from what it held before the kill.
    started = wait_until(lambda: len(lines := startup_lines()) > starts and lines, 10, what="b's start-up line")
    assert int(started[-1]) == len(before), started
    first = wait_until(lambda: try_log(b), 10, what="b answering")
    assert first[:len(before)] == before
    cluster.wait_agreed("c")
    log = agreed_log(cluster)
    assert log[:len(during)] == during
    assert_recorded_once_in_order(log, "gus", missed)


def test_second_client_with_a_present_name_is_refused(chats):
    cluster = chats.cluster
    ivy = chats.piped(1, "ivy", "a")
    wait_until(lambda: present(cluster, "ivy"), 15, what="ivy present")
    intruder = cluster.run(2, [sys.executable, "-m", "dschat", "--json", "-e", chats.endpoint("b"), "ivy"],
                           input="i am ivy too\n")
    assert intruder.returncode == EXIT_REFUSED, intruder
    assert "the name 'ivy' is taken" in intruder.stderr and "another client" in intruder.stderr, intruder.stderr
    assert intruder.stdout == ""
    # The first ivy is still there, on a, and still chatting.
    assert [(u["user"], u["server"]) for u in request(cluster.daemons["b"], "chat.who")["users"]] == [("ivy", "a")]
    ivy.write("still me")
    assert ivy.finish() == EXIT_OK, ivy.stderr
    log = agreed_log(cluster)
    assert_recorded_once_in_order(log, "ivy", ["still me"])
    assert "i am ivy too" not in [e["text"] for e in log]
    assert [(e["kind"], e["server"]) for e in log if e["user"] == "ivy"] == [
        ("join", "a"), ("message", "a"), ("leave", "a")]


def test_silent_client_times_out_and_a_timeout_entry_is_recorded(chats):
    cluster = chats.cluster
    frank = chats.piped(2, "frank", "b")
    wait_until(lambda: present(cluster, "frank"), 15, what="frank present")
    os.kill(frank.pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        log = wait_until(lambda: [e for e in chat_log(cluster.daemons["a"])
                                  if e["kind"] == "timeout" and e["user"] == "frank"], 10,
                         what="a timeout entry for frank")
        timeout = log[0]
        assert timeout["server"] == "b"
        # For its silence since the stop: while it was heartbeating it was never timed out.
        assert timeout["time"] >= stopped
        wait_until(lambda: present(cluster), 5, what="frank gone from every daemon's users")
    finally:
        os.kill(frank.pid, signal.SIGCONT)
    # Woken up, dschat joins again by itself and its next line goes through.
    frank.write("back again")
    wait_until(lambda: frank.seen("frank", "back again"), 15, what=f"frank's line after the timeout: {frank.stderr}")
    assert frank.finish() == EXIT_OK, frank.stderr
    log = agreed_log(cluster)
    assert [(e["kind"], e["text"]) for e in log if e["user"] == "frank"] == [
        ("join", ""), ("timeout", ""), ("join", ""), ("message", "back again"), ("leave", "")]
    assert_view(frank.view, log, "frank")


def test_oversize_message_is_refused_and_the_other_lines_go_through(chats):
    cluster = chats.cluster
    olga = chats.piped(3, "olga", "c")
    wait_until(lambda: present(cluster, "olga"), 15, what="olga present")
    too_big = "é" * (MAX_MESSAGE // 2 + 1)  # fewer characters than the limit, more bytes
    at_limit = "x" * MAX_MESSAGE
    sender = cluster.run(1, [sys.executable, "-m", "dschat", "--json", "--heartbeat", HEARTBEAT,
                             "-e", chats.endpoint("a"), "hank"],
                         input="\n".join(["before", too_big, at_limit, "after"]) + "\n")
    assert sender.returncode == EXIT_FAILED, sender
    size = len(too_big.encode())
    assert "line 2" in sender.stderr and f"limit of {MAX_MESSAGE}" in sender.stderr, sender.stderr
    assert f"{size} bytes" in sender.stderr and "too_large" in sender.stderr, sender.stderr
    assert "1 of 4 lines not delivered" in sender.stderr, sender.stderr
    wait_until(lambda: olga.seen("hank", "after"), 10, what="olga seeing hank's last line")
    assert olga.finish() == EXIT_OK, olga.stderr

    log = agreed_log(cluster)
    assert_recorded_once_in_order(log, "hank", ["before", at_limit, "after"])
    assert not [e for e in log if e["text"].startswith("é")]
    assert [e["text"] for e in olga.view if e["user"] == "hank" and e["kind"] == "message"] == [
        "before", at_limit, "after"]
    own = [json.loads(line) for line in sender.stdout.splitlines()]
    assert_view(own, log, "hank")


def test_send_many_answers_each_message_as_send_would_in_one_reply_and_a_retry_is_recorded_once(chats):
    cluster = chats.cluster
    a = cluster.daemons["a"]  # a follower: the batch is forwarded to the sequencer c
    session = "mona-session-000001"
    assert request(a, "chat.join", user="mona", session=session)["user"] == "mona"
    messages = [{"id": "b1", "text": "one"}, {"id": "b2", "text": "x" * (MAX_MESSAGE + 1)},
                {"id": "b 3", "text": "bad id"}, {"id": "b4", "text": "four"}]
    results = request(a, "chat.send_many", user="mona", session=session, messages=messages)["results"]
    assert [sorted(r) for r in results] == [["seq"], ["code", "message"], ["code", "message"], ["seq"]], results
    assert (results[1]["code"], results[2]["code"]) == ("too_large", "bad_args")
    assert results[0]["seq"] < results[3]["seq"]
    again = request(a, "chat.send_many", user="mona", session=session, messages=[messages[3], messages[0]])
    assert again["results"] == [results[3], results[0]]  # the same ids: recorded once, the same seqs
    request(a, "chat.leave", user="mona", session=session)
    log = agreed_log(cluster)
    assert_recorded_once_in_order(log, "mona", ["one", "four"])
    assert [(e["seq"], e["text"]) for e in log if e["user"] == "mona" and e["kind"] == "message"] == [
        (results[0]["seq"], "one"), (results[3]["seq"], "four")]


def test_dsctl_view_lists_the_chat_users(chats):
    cluster = chats.cluster
    gina, hal = chats.piped(2, "gina", "b"), chats.piped(3, "hal", "c")
    wait_until(lambda: present(cluster, "gina", "hal"), 15, what="gina and hal present")
    log = agreed_log(cluster)
    since = {e["user"]: e["time"] for e in log if e["kind"] == "join"}
    expected = [{"user": "gina", "server": "b", "since": since["gina"]},
                {"user": "hal", "server": "c", "since": since["hal"]}]
    a = cluster.daemons["a"]
    dsctl = [sys.executable, "-m", "dsctl", "-c", str(a.config), "view"]
    result = cluster.run(1, dsctl + ["--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["clients"] == expected
    result = cluster.run(1, dsctl)
    assert result.returncode == 0, result.stderr
    assert "chat users: gina (b), hal (c)" in result.stdout, result.stdout

    assert gina.finish() == EXIT_OK and hal.finish() == EXIT_OK, gina.stderr + hal.stderr
    wait_until(lambda: present(cluster), 10, what="nobody present")
    result = cluster.run(1, dsctl + ["--json"])
    assert json.loads(result.stdout)["clients"] == []
    assert "chat users: none" in cluster.run(1, dsctl).stdout


def test_daemon_back_after_more_than_retention_entries_catches_up_from_a_snapshot():
    """b misses more entries than the others retain ([chat] retention = 100, the least allowed):
    it comes back to a snapshot of who is present, then the retained entries in order."""
    with Cluster(3, use_namespaces=NAMESPACES_UNAVAILABLE is None) as cluster:
        for i, name in enumerate(["a", "b", "c"], start=1):
            cluster.add(name, priority=100 + i,
                        chat={"retention": 100, "client_timeout": 60.0, "rate": 1000.0, "burst": 1000})
        cluster.wait_agreed("c")
        a, b, c = (cluster.daemons[n] for n in "abc")
        session = "retention-session-0001"
        request(a, "chat.join", user="ida", session=session)
        for n in range(5):
            request(a, "chat.send", user="ida", session=session, id=f"before{n}", text=f"before {n}")
        held = wait_until(lambda: (seq := request(c, "chat.since", seq=0)["last_seq"])
                          == request(b, "chat.since", seq=0)["last_seq"] and seq, 10, what="b holding what c holds")
        b.kill()
        cluster.wait_agreed("c", among=["a", "c"])
        for n in range(150):
            request(a, "chat.send", user="ida", session=session, id=f"down{n}", text=f"while b was down {n}")
        # a acknowledged every send: it holds them all (c may learn its last commit a moment later)
        last = request(a, "chat.since", seq=0)["last_seq"]
        assert last == held + 150 and request(c, "chat.since", seq=0)["first_seq"] > held + 1  # b's next seq is gone

        b.start()
        cluster.wait_agreed("c")
        caught_up = wait_until(lambda: (r := request(b, "chat.since", seq=0))["last_seq"] == last and r, 15,
                               what="b caught up")
        first = caught_up["first_seq"]
        assert first > held + 1 and [e["seq"] for e in caught_up["entries"]] == list(range(first, last + 1))
        theirs = request(c, "chat.since", seq=first - 1)["entries"]
        assert caught_up["entries"] == theirs
        assert who(b) == who(c) == [{"user": "ida", "server": "a", "since": who(c)[0]["since"]}]
        assert f"installed a snapshot from c at seq {first - 1}" in b.logs()
        assert request(b, "stats")["chat_snapshots_installed"] == 1
        assert request(c, "stats")["chat_snapshots_sent"] >= 1
