"""Simulation of the chat log: many cores, lossy links, crashes and restarts.

After the faults stop, every committed entry is on every live daemon, in one order,
exactly once, and every acknowledged send is among them (DESIGN.md section 3).
"""

from __future__ import annotations


import pytest

from tests.chatsim import ChatSim

SEEDS = range(12)


def joined(sim: ChatSim, users: dict[str, str]) -> None:
    rids = {user: sim.join(user, server) for user, server in users.items()}
    assert sim.wait_for(lambda: all(r in sim.replies for r in rids.values()), 1.0)
    for user, rid in rids.items():
        assert sim.replies[rid][1] is not None, f"{user} could not join: {sim.replies[rid][2]}"


def settle(sim: ChatSim, within: float = 3.0) -> None:
    assert sim.wait_for(lambda: sim.converged() and not any(sim.unacked().values()), within), (
        f"not settled: logs {({n: len(log) for n, log in sim.logs().items()})}, unacked {sim.unacked()}"
    )
    sim.check_one_order()
    sim.check_acked_committed_everywhere()


def test_every_entry_reaches_every_daemon_in_one_order() -> None:
    sim = ChatSim(["a", "b", "c"], seed=1)
    joined(sim, {"alice": "a", "bob": "b", "carol": "c"})
    for i in range(30):
        for user in ("alice", "bob", "carol"):
            sim.send(user, f"{user} {i}")
        sim.run_for(0.001)
    settle(sim)
    logs = sim.logs()
    assert len(logs["a"]) == 1 + 3 + 90  # the configuration, the joins, the messages
    for name in ("a", "b", "c"):
        delivered = [(e["seq"], e["user"], e["id"]) for e in sim.daemons[name].delivered]
        assert delivered == logs["a"], f"{name} did not publish the whole log in order"


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_crash_with_sends_in_flight_loses_no_acknowledged_message(seed: int) -> None:
    sim = ChatSim(["a", "b", "c"], seed=seed)
    joined(sim, {"alice": "a", "bob": "b"})
    for i in range(40):
        sim.send("alice", f"a{i}")
        sim.send("bob", f"b{i}")
        if i == 20:
            sim.crash("c")  # the leader, with entries sequenced but not all committed
        sim.run_for(sim.random.uniform(0, 0.002))
    settle(sim)
    assert all(d.chat.leader == "b" for n, d in sim.daemons.items() if d.alive)
    sent = {("alice", id) for id in sim.clients["alice"].sent} | {("bob", id) for id in sim.clients["bob"].sent}
    logged = {(user, id) for _, user, id in sim.logs()["a"]}
    assert sent <= logged, "a send whose daemon survived was lost"


@pytest.mark.parametrize("seed", SEEDS)
def test_client_of_a_crashed_daemon_fails_over_without_loss_or_duplicate(seed: int) -> None:
    sim = ChatSim(["a", "b", "c"], seed=seed)
    joined(sim, {"alice": "a", "bob": "b"})
    for i in range(30):
        sim.send("alice", f"a{i}")
        if i == 15:
            sim.crash("a")  # alice's own daemon: what it had not forwarded is gone with it
        sim.run_for(sim.random.uniform(0, 0.002))
    sim.run_for(0.3)
    sim.fail_over("alice", "b")
    settle(sim)
    alice = [id for _, user, id in sim.logs()["b"] if user == "alice" and ":" not in id]
    assert sorted(alice) == sorted(sim.clients["alice"].sent), "a message lost or recorded twice"
    joins = [e for e in sim.daemons["b"].store.read(0, 1000) if e["user"] == "alice" and e["kind"] == "join"]
    assert [e["text"] for e in joins] == ["", "rejoined"]


@pytest.mark.parametrize("seed", SEEDS)
def test_lossy_links_crashes_and_restarts(seed: int) -> None:
    sim = ChatSim(["a", "b", "c", "d", "e"], seed=seed, loss=0.05)
    users = {"u1": "a", "u2": "b", "u3": "c", "u4": "d"}
    joined(sim, users)
    rng = sim.random
    crashed: list[str] = []
    for step in range(60):
        for user in users:
            if sim.daemons[sim.clients[user].server].alive:
                sim.send(user, f"{user} {step}")
        if step % 15 == 7:
            victim = rng.choice([n for n in sim.live() if n != "a"])  # keep one daemon for clients
            sim.crash(victim)
            crashed.append(victim)
        if step % 15 == 12 and crashed:
            sim.restart(crashed.pop(0))
        sim.run_for(rng.uniform(0.0, 0.02))
    for name in crashed:
        sim.restart(name)
    sim.run_for(0.5)
    for user, client in sim.clients.items():
        if client.server != "a":
            sim.fail_over(user, "a")
    settle(sim, within=10.0)
    assert len(sim.live()) == 5


def test_restarted_daemon_keeps_its_history_and_catches_up() -> None:
    sim = ChatSim(["a", "b", "c"], seed=3)
    joined(sim, {"alice": "a"})
    for i in range(10):
        sim.send("alice", f"before {i}")
    settle(sim)
    sim.crash("b")
    for i in range(700):  # more than one APPEND batch behind
        sim.send("alice", f"while b is down {i}")
        if i % 50 == 0:
            sim.run_for(0.01)
    settle(sim)
    assert sim.daemons["b"].store.committed() == 1 + 1 + 10  # the configuration, the join, the messages
    sim.restart("b")
    settle(sim)
    assert sim.daemons["b"].store.committed() == sim.daemons["c"].store.committed() >= 12 + 700
    assert sim.logs()["b"] == sim.logs()["c"]


def test_new_leader_behind_the_others_fetches_their_log_first() -> None:
    """A restarted highest-named daemon leads again: it must adopt the others' newer entries."""
    sim = ChatSim(["a", "b", "c"], seed=4)
    joined(sim, {"alice": "a"})
    sim.crash("c")
    sim.run_for(0.5)
    for i in range(600):
        sim.send("alice", f"m{i}")
    settle(sim)
    sim.restart("c")  # c leads (highest name) with only the first entry
    sim.send("alice", "after c is back")
    settle(sim)
    assert sim.daemons["c"].chat.leader == "c"
    alice = [id for _, user, id in sim.logs()["c"] if user == "alice" and ":" not in id]
    assert len(alice) == 601 and sim.logs()["c"] == sim.logs()["a"]


def test_retried_send_with_the_same_id_is_recorded_once() -> None:
    sim = ChatSim(["a", "b", "c"], seed=5)
    joined(sim, {"alice": "a"})
    first = sim.send("alice", "hello", id="same-id")
    settle(sim)
    again = sim.send("alice", "hello", id="same-id")
    sim.run_for(0.05)
    assert sim.replies[first][1] == sim.replies[again][1]
    assert [(seq, id) for seq, _, id in sim.logs()["b"] if id == "same-id"] == [(sim.replies[first][1]["seq"], "same-id")]


def test_second_user_with_a_taken_name_is_refused() -> None:
    sim = ChatSim(["a", "b", "c"], seed=6)
    joined(sim, {"alice": "a"})
    rid = sim.request("b", lambda chat, r: chat.join(r, "alice", "another-session-xyz", sim.now))
    assert sim.wait_for(lambda: rid in sim.replies, 1.0)
    assert sim.replies[rid][2][0] == "name_taken"


def test_two_joins_racing_for_one_name_one_wins() -> None:
    sim = ChatSim(["a", "b", "c"], seed=7)
    first = sim.request("a", lambda chat, r: chat.join(r, "alice", "first-session-aaaa", sim.now))
    second = sim.request("b", lambda chat, r: chat.join(r, "alice", "second-session-bbb", sim.now))
    assert sim.wait_for(lambda: first in sim.replies and second in sim.replies, 1.0)
    outcomes = sorted("ok" if sim.replies[r][1] else sim.replies[r][2][0] for r in (first, second))
    assert outcomes == ["name_taken", "ok"]
    sim.check_one_order()


def test_silent_client_times_out_and_a_daemon_crash_times_out_its_users() -> None:
    sim = ChatSim(["a", "b", "c"], seed=8)
    joined(sim, {"alice": "a", "bob": "b"})
    sim.crash("b")  # bob's daemon: the leader times bob out after client_timeout
    for _ in range(int(sim.limits.client_timeout / 0.5) + 4):
        sim.heartbeat("alice")
        sim.run_for(0.5)
    kinds = {(e["user"], e["kind"]) for e in sim.daemons["a"].store.read(0, 100)}
    assert ("bob", "timeout") in kinds and ("alice", "timeout") not in kinds
    assert sim.wait_for(lambda: any(e["kind"] == "timeout" and e["user"] == "alice"
                                    for e in sim.daemons["c"].store.read(0, 100)), sim.limits.client_timeout + 1)
    assert sim.daemons["c"].chat.who() == []


@pytest.mark.parametrize("name", ["b", "c"], ids=["follower", "new-leader"])
def test_daemon_back_after_more_than_retention_entries_catches_up_from_a_snapshot(name: str) -> None:
    """b comes back as a follower and is sent a snapshot by the leader; c, the highest name,
    comes back as the leader and is sent one by its fetch source. Either way its log goes on
    from the snapshot's base, in the cluster's order, with no gap after it."""
    sim = ChatSim(["a", "b", "c"], seed=9, retention=50)  # keeps 50 to 55 entries
    joined(sim, {"alice": "a", "bob": "a"})
    for i in range(10):
        sim.send("alice", f"before {i}")
    settle(sim)
    sim.crash(name)
    sim.run_for(0.5)
    for i in range(200):
        sim.send("alice" if i % 3 else "bob", f"while {name} is down {i}")
        if i % 20 == 0:
            sim.run_for(0.01)
    settle(sim)
    assert sim.daemons[name].store.committed() == 1 + 2 + 10  # the configuration, the joins, the messages
    sim.restart(name)
    sim.send("alice", "after the restart")
    settle(sim)
    back, other = sim.daemons[name], sim.daemons["a"]
    assert back.chat.leader == "c"
    (base,) = back.store.installed
    assert base > 13 + 50 and back.store.first_seq() == base + 1
    assert [e["seq"] for e in back.delivered] == list(range(base + 1, other.store.committed() + 1)), (
        "a gap or repeat after the base")
    assert sim.logs()[name] == [entry for entry in sim.logs()["a"] if entry[0] > base]
    assert back.chat.who() == other.chat.who() == [
        {"user": user, "server": "a", "since": e["time"]} for user, e in other.store.users().items()
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_lossy_links_crashes_and_restarts_with_a_small_retention(seed: int) -> None:
    sim = ChatSim(["a", "b", "c", "d", "e"], seed=seed, loss=0.05, retention=20)
    users = {"u1": "a", "u2": "b"}
    joined(sim, users)
    for step in range(60):
        for user in users:
            if sim.daemons[sim.clients[user].server].alive:
                sim.send(user, f"{user} {step}")
        if step == 10:
            sim.crash("e")  # the leader
        if step == 20:
            sim.crash("d")  # a, b and c are still a quorum of the five
        if step == 45:
            sim.restart("e")  # more than 20 entries behind: e leads again
        sim.run_for(sim.random.uniform(0.0, 0.02))
    sim.restart("d")
    sim.run_for(0.5)
    for user, client in sim.clients.items():
        if client.server != "a":
            sim.fail_over(user, "a")
    settle(sim, within=10.0)
    assert len(sim.live()) == 5 and sim.daemons["d"].store.installed and sim.daemons["e"].store.installed


def partition_under_traffic(sim: ChatSim, sides: list[set[str]], steps: int = 40) -> None:
    """Traffic from a user on every daemon, the cut in the middle of it, then the heal."""
    users = {f"u{name}": name for name in sim.daemons}
    joined(sim, users)
    for step in range(steps):
        for user in users:
            sim.send(user, f"{user} {step}")
        if step == steps // 4:
            sim.partition(*sides)
        sim.run_for(sim.random.uniform(0.005, 0.03))
    sim.heal()
    settle(sim, within=10.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sides", [
    [{"c", "d", "e"}, {"a", "b"}],  # the leader e stays with the majority; the minority elects b
    [{"a", "b", "c"}, {"d", "e"}],  # the leader e is cut off with d; the majority elects c
    [{"a", "b", "c", "d"}, {"e"}],  # the leader alone
])
def test_a_partition_never_splits_the_log_at_default_settings(seed: int, sides: list[set[str]]) -> None:
    sim = ChatSim(["a", "b", "c", "d", "e"], seed=seed, loss=0.02)
    partition_under_traffic(sim, sides)  # settle() checks one order and every ack in every log
    assert len(sim.live()) == 5
    acked = sum(len(client.acked) for client in sim.clients.values())
    assert acked > 100, "the majority side kept taking messages"
    refused = [code for client in sim.clients.values() for code in client.refused.values()]
    assert refused and set(refused) == {"no_quorum"}, "the minority side refused at once, and only that"


def test_the_minority_side_refuses_at_once_and_takes_the_message_after_the_heal() -> None:
    sim = ChatSim(["a", "b", "c", "d", "e"], seed=3)
    joined(sim, {"ua": "a", "ue": "e"})
    sim.partition({"c", "d", "e"}, {"a", "b"})
    sim.run_for(0.5)
    before = {name: sim.daemons[name].chat.commit for name in ("a", "b")}
    sim.send("ua", "on the minority side", id="minority")
    sim.send("ue", "on the majority side")
    sim.run_for(0.5)
    assert {name: sim.daemons[name].chat.commit for name in ("a", "b")} == before
    assert sim.clients["ue"].acked and sim.clients["ua"].refused == {"minority": "no_quorum"}
    sim.heal()
    settle(sim)
    sim.send("ua", "on the minority side", id="minority")  # what dschat does: the same id again
    assert sim.wait_for(lambda: "minority" in sim.clients["ua"].acked, 2.0)
    settle(sim)
