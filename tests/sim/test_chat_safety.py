"""The chat log never forks and loses nothing acknowledged, at default settings.

Each scenario reproduced a fork or a loss of the chat before its epochs, log matching and
configuration lived in the log (shared/repro/chat-safety). 1-3 use the real bully election
(tests/coupled.py): it lets two sides of a partition share a term and restarts a daemon at
term 0, which the chat must not trust. 4-6 use ChatSim with chosen link messages lost.
"""

from __future__ import annotations

from typing import Callable

import pytest

from dsd import linkwire
from dsd.core.chat import ACTIVE, VOTER
from dsd.core.link_messages import Append, LinkMessage
from tests.chatsim import ChatSim, SimDaemon, SimStore, session_of
from tests.coupled import Coupled
from tests.sim import chaos


def assert_one_log(chat: ChatSim) -> None:
    chat.check_one_order()  # "disagrees at seq N": two daemons committed different entries at N
    chat.check_acked_committed_everywhere()


def _stale_leader_after_restart(heal_fully: bool, seed: int) -> Coupled:
    """c leads; a partition makes b lead a and b; a restarts and hears c's old term first."""
    sim = Coupled(list("abc"), seed=seed)
    sim.run_for(1.0)
    sim.chat.join("ua", "a")
    sim.chat.join("uc", "c")
    sim.run_for(0.3)
    sim.partition({"c"}, {"a", "b"})  # b leads a and b (a quorum of 2 of 3); c still leads alone
    sim.run_for(0.8)
    sim.chat.send("ua", "Y", id="Y")  # committed by b and a, acknowledged
    sim.chat.send("uc", "X", id="X")  # c holds no quorum: refused at once
    sim.run_for(0.3)
    assert "Y" in sim.chat.clients["ua"].acked and "X" not in sim.chat.clients["uc"].acked
    sim.crash("a")
    if heal_fully:
        sim.run_for(0.1)
        sim.heal()
    else:
        sim.partition({"a", "c"}, {"b"})
        sim.run_for(0.1)
    sim.restart("a")  # a new process at bully term 0: it may follow c's stale claim
    sim.run_for(1.5)
    return sim


def test_1a_a_restarted_follower_does_not_revive_a_stale_sequencer() -> None:
    sim = _stale_leader_after_restart(heal_fully=False, seed=1)
    assert_one_log(sim.chat)
    assert sim.chat.clients["uc"].refused.get("X") == "no_quorum"


def test_1b_nor_with_a_full_heal_at_the_restart() -> None:
    assert_one_log(_stale_leader_after_restart(heal_fully=True, seed=30).chat)


def test_2_two_bully_leaders_of_one_term_never_both_sequence_it() -> None:
    sim = Coupled(list("abcde"), seed=1)
    sim.run_for(1.0)  # e leads term 1
    sim.chat.join("ua", "a")
    sim.chat.join("uc", "c")
    sim.run_for(0.3)
    sim.partition({"a", "b", "c"}, {"d"}, {"e"})  # c leads term 2; d declares term 2 alone
    sim.run_for(1.0)
    assert sim.belief("c")[:2] == ("c", 2) and sim.belief("d")[:2] == ("d", 2)
    sim.partition({"a", "b", "d"}, {"c"}, {"e"})  # a, b take d's same-term claim (higher rank)
    sim.run_for(0.6)
    assert sim.belief("a")[:2] == ("d", 2) and sim.belief("d")[3] == ACTIVE
    sim.chat.send("uc", "X", id="X")  # c alone: no quorum
    sim.chat.send("ua", "Y", id="Y")  # d commits Y with a and b
    sim.run_for(0.5)
    sim.partition({"a", "b", "c"}, {"d"}, {"e"})  # a, b follow c again, still bully term 2
    sim.run_for(1.0)
    assert sim.belief("a")[:2] == ("c", 2)
    sim.chat.check_one_order()
    sim.heal()
    sim.run_for(2.0)
    assert_one_log(sim.chat)
    assert "Y" in sim.chat.clients["ua"].acked and "X" not in sim.chat.clients["uc"].acked


@pytest.mark.parametrize("seed", [19, 40])
def test_3_random_partitions_with_the_real_election_keep_one_log(seed: int) -> None:
    sim = Coupled(list("abcde"), seed=seed)
    import random
    rng = random.Random(seed)
    sim.run_for(0.5)
    users = {f"u{x}": x for x in "abcde"}
    for user, server in users.items():
        sim.chat.join(user, server)
    sim.run_for(0.3)
    for step in range(60):
        for user, server in users.items():
            if user in sim.chat.daemons[server].chat.sessions:
                sim.chat.send(user, f"{user} {step}")
        r = rng.random()
        if r < 0.15:
            groups: list[set[str]] = [set() for _ in range(rng.choice((2, 2, 3)))]
            for x in "abcde":
                groups[rng.randrange(len(groups))].add(x)
            sim.partition(*groups)
        elif r < 0.2:
            sim.heal()
        sim.run_for(rng.uniform(0.02, 0.15))
    sim.heal()
    sim.run_for(3.0)
    assert_one_log(sim.chat)


class Lossy(ChatSim):
    """ChatSim that loses the link messages `drop` picks."""

    drop: Callable[[str, str, LinkMessage], bool] = staticmethod(lambda src, to, m: False)

    def _transmit(self, source: str, to: str, data: bytes) -> None:
        if not self.drop(source, to, linkwire.decode(data)):
            super()._transmit(source, to, data)


def test_4_a_partial_copy_of_a_new_sequencers_log_never_outranks_committed_entries() -> None:
    sim = Lossy(list("abcde"), seed=1)
    sim.join("ue", "e")  # the client is on the sequencer e
    sim.run_for(0.2)
    # e's commit-point-only APPENDs are lost: its followers never learn the new commit point
    sim.drop = lambda src, to, m: src == "e" and isinstance(m, Append) and not m.entries
    for i in range(60):  # ~4 KB each: 43 fit one APPEND batch
        sim.send("ue", f"{i:03d}" + "x" * 3996, id=f"m{i:03d}")
    sim.run_for(0.01)
    assert len(sim.clients["ue"].acked) == 60
    first = {"sent": False}

    def d_link_breaks(src: str, to: str, m: LinkMessage) -> bool:
        if src != "d" or not isinstance(m, Append) or not m.entries:
            return False
        if to == "b" and not first["sent"]:
            first["sent"] = True
            return False
        return True  # only d's first APPEND batch, to b, gets through

    sim.drop = d_link_breaks
    sim.crash("e")  # d becomes the sequencer and adopts the 60 entries
    assert sim.wait_for(lambda: sim.daemons["d"].chat.role == ACTIVE, 1.0)
    sim.run_for(0.005)
    sim.drop = lambda src, to, m: False
    sim.partition({"a", "b", "c"}, {"d"})  # d cut off; c leads a and b (a quorum of 3 of 5)
    assert sim.wait_for(lambda: sim.daemons["c"].chat.role == ACTIVE, 1.0)
    sim.run_for(0.5)
    for name in "abc":
        log = {seq: id for seq, _, id in sim.logs()[name]}
        lost = sorted(id for id, seq in sim.clients["ue"].acked.items() if log.get(seq) != id)
        assert not lost, f"acknowledged but gone from {name}: {lost}"


def committed_unheard(seed: int) -> Lossy:
    """a, b, c (retention 20); ua's message m1 commits on c and b while a hears nothing back."""
    sim = Lossy(list("abc"), seed=seed, retention=20)
    sim.join("ua", "a")
    sim.join("ub", "b")
    sim.run_for(0.2)
    sim.drop = lambda src, to, m: src == "c" and to == "a"
    sim.send("ua", "hello once", id="m1")  # c commits it with b; a never hears
    sim.run_for(0.05)
    return sim


def test_5_a_message_retried_after_its_entry_was_trimmed_is_recorded_once() -> None:
    sim = committed_unheard(seed=1)
    sim.drop = lambda src, to, m: {src, to} == {"a", "c"}
    for i in range(40):  # more than retention + slack: c trims m1's entry
        sim.send("ub", f"b{i}")
        sim.heartbeat("ua")
        sim.run_for(0.01)
    sim.drop = lambda src, to, m: False
    sim.run_for(0.5)
    delivered = {e["seq"]: (e["user"], e["id"]) for n in "abc" for e in sim.daemons[n].delivered}
    assert len([seq for seq, key in delivered.items() if key == ("ua", "m1")]) == 1


def test_6_a_client_id_can_never_be_a_daemon_id_so_a_leave_is_never_swallowed() -> None:
    sim = ChatSim(list("abc"), seed=1)
    sim.join("ua", "a")
    sim.run_for(0.1)
    presence_id = sim.daemons["c"].delivered[-1]["id"]
    sim.send("ua", "innocent text", id="m1")
    forged = sim.send("ua", "forged", id=presence_id.replace("join", "leave"))
    sim.run_for(0.1)
    assert sim.replies[forged][2] is not None and sim.replies[forged][2][0] == "bad_args"
    rid = sim.request("a", lambda chat, r: chat.leave(r, "ua", session_of("ua"), sim.now))
    sim.run_for(0.2)
    message_seq = sim.clients["ua"].acked["m1"]
    assert sim.replies[rid][1] is not None and sim.replies[rid][1]["seq"] > message_seq
    assert sim.daemons["c"].chat.who() == []


@pytest.mark.parametrize("n", [3, 5, 7])
def test_coupled_chaos_keeps_one_log(n: int) -> None:
    """A few seeds of `python -m tests.sim.chaos` (1,000 per size is the long run)."""
    for seed in range(4):
        assert chaos.run(seed, n) is None


def test_a_candidate_whose_fetch_source_promised_a_newer_epoch_tries_again() -> None:
    """Seed 806 of the long run: c fetched from b, b meanwhile promised itself a newer epoch and
    ignored c's fetches, and c stayed fetching for good. Now b refuses and c gathers anew."""
    assert chaos.run(806, 3) is None


# Found in review: each of these forked the log, wiped it, or left the chat without a sequencer.

def test_a_fetch_answered_twice_never_ends_the_adoption_early() -> None:
    """A slow first batch makes the candidate fetch again; the repeated answer is stale, not "done"."""
    sim = ChatSim(["a", "b", "c"], seed=2)
    sim.join("u", "a")
    sim.run_for(0.3)
    sim.crash("c")
    sim.run_for(1.0)
    for i in range(700):  # more than one FETCH batch for c to adopt
        sim.send("u", f"m{i}")
        if i % 50 == 0:
            sim.run_for(0.01)
    sim.run_for(1.0)
    sim.delay = (0.06, 0.065)  # a round trip longer than resend_interval
    sim.restart("c")
    sim.run_for(3.0)
    assert sim.daemons["c"].chat.role == ACTIVE
    assert_one_log(sim)


def test_a_sequencer_of_another_chat_cluster_never_replaces_a_daemons_log() -> None:
    sim = ChatSim(["a", "b", "c"], seed=1, retention=20)
    sim.partition({"a"}, {"b", "c"})  # formed apart: a alone, b and c together
    sim.run_for(1.0)
    sim.join("x", "a")
    sim.run_for(0.2)
    for i in range(5):
        sim.send("x", f"a-msg{i}")
    sim.join("y", "b")
    sim.run_for(0.2)
    for i in range(60):  # b and c trim: a would need a snapshot of their log
        sim.send("y", f"b-msg{i}")
        sim.run_for(0.01)
    sim.run_for(0.5)
    kept = sim.logs()["a"]
    sim.heal()
    sim.run_for(2.0)
    a = sim.daemons["a"]
    assert not a.store.installed and sim.logs()["a"] == kept
    assert a.chat.foreign == {"c": sim.daemons["c"].chat.cluster}, "a knows c is of another cluster"
    rid = sim.request("a", lambda chat, r: chat.join(r, "z", session_of("z"), sim.now))
    assert sim.replies[rid][2] is not None and "another chat cluster" in sim.replies[rid][2][1]


def test_an_uncommitted_formation_lost_with_its_sequencer_gives_way_to_the_cluster_formed_meanwhile() -> None:
    sim = ChatSim(["a", "b", "c"], seed=5)
    c = sim.daemons["c"]
    assert sim.wait_for(lambda: c.chat.role == ACTIVE, 2.0, step=0.0001)
    sim.partition({"c"}, {"a", "b"})  # c's formation never reaches a and b
    sim.crash("c", detect=False)
    sim.change_view()  # a and b form a cluster of their own
    sim.run_for(2.0)
    sim.heal()
    sim.restart("c")  # c leads again, its formation uncommitted in its log
    sim.run_for(5.0)
    back = sim.daemons["c"].chat
    assert back.role == ACTIVE and back.cluster == sim.daemons["a"].chat.cluster != ""
    sim.join("u", "a")
    assert sim.wait_for(lambda: sim.daemons["a"].chat.who() != [], 2.0)


def test_a_newcomer_that_leads_at_once_makes_itself_a_voter() -> None:
    sim = ChatSim(["a", "b", "c"], seed=4)
    sim.run_for(1.0)
    store = SimStore(100_000)
    sim.daemons["d"] = SimDaemon(sim._chat("d", store), store)
    sim.change_view()  # d, the highest name, leads at once, before anyone added it
    sim.run_for(5.0)
    assert all(sim.daemons[n].chat.roles() == dict.fromkeys("abcd", VOTER) for n in "abcd")


def test_a_sequencer_that_caught_up_by_snapshot_still_recognises_a_retried_message() -> None:
    """a's message m1 commits while a hears nothing back; a is cut off, the others trim m1's
    entry, and a new daemon d, caught up from a snapshot, becomes the sequencer. a's retry of m1
    reaches d, which knows it from the snapshot's trimmed ids: m1 is recorded once."""
    sim = committed_unheard(seed=3)
    sim.drop = lambda src, to, m: False
    sim.groups = [frozenset("a"), frozenset("bcd")]
    sim.change_view(keep_leaders=True)
    for i in range(40):  # more than retention + slack: m1's entry is trimmed on b and c
        sim.send("ub", f"b{i}")
        sim.heartbeat("ua")
        sim.run_for(0.01)
    store = SimStore(20)
    sim.daemons["d"] = SimDaemon(sim._chat("d", store), store)
    sim.change_view()  # d, the highest name, leads b and c: it installs a snapshot first
    assert sim.wait_for(lambda: sim.daemons["d"].chat.role == ACTIVE and store.installed, 2.0)
    for _ in range(5):
        sim.heartbeat("ua")
        sim.run_for(0.2)
    sim.heal()  # a forwards m1 again, now to d
    sim.run_for(1.0)
    assert sim.daemons["d"].store.find("ua", "m1") is not None
    assert "m1" not in [id for _, _, id in sim.logs()["d"]], "not sequenced a second time"
    sim.send("ua", "hello once", id="m1")  # as dschat does after no_quorum: the same id again
    assert sim.wait_for(lambda: "m1" in sim.clients["ua"].acked, 1.0)
    assert_one_log(sim)
