"""Whatever the link codec accepts, the chat core takes without raising.

An exception out of `Chat.receive` ends the daemon's links task, and the daemon with it: a
message the codec lets through is input like any other and must at worst be ignored. These
are small, valid messages from a few daemons (the sequencer L, a voter G, a stranger X),
with seqs, terms and commit points near the core's own, fed in random order to a core in
each role; the log's own invariants are checked after each one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsd import linkwire
from dsd.core.chat import Chat
from dsd.core.link_messages import (
    Ack, Append, Entries, Fetch, Forward, Gather, Refuse, Remove, Result, Snapshot, Status,
)
from tests.unit.test_chat import (
    CLUSTER, S, config_entry, entry, follower, join_entry, make, peers, proposal, sequencer,
)

SOURCES = st.sampled_from(["L", "L", "G", "X", "A"])  # mostly the sequencer: its messages get furthest
TERMS = st.sampled_from([1, 1, 1, 0, 2, 3])
SEQS = st.sampled_from([1, 1, 2, 0, 3, 4, 6, 8])  # near the cores' own logs
CLUSTERS = st.sampled_from(["", CLUSTER, "other"])


@st.composite
def records(draw: st.DrawFn, first: int, term: int) -> list[dict[str, Any]]:
    """A run of entries from `first`: messages, joins, leaves and configurations."""
    run = []
    for seq in range(first, first + draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["message", "join", "leave", "config"]))
        at = draw(st.integers(0, term))
        if kind == "config":
            run.append(config_entry(seq, at, draw(st.sampled_from([("F", "G", "L"), ("G", "L"), ("F", "L", "X")]))))
        elif kind == "join":
            run.append(join_entry(seq, at, user=draw(st.sampled_from(["alice", "bob"]))))
        else:
            run.append(entry(seq, at, kind=kind, id=f"m{seq}"))
    return run


@st.composite
def messages(draw: st.DrawFn) -> Any:
    src, term = draw(SOURCES), draw(TERMS)
    kind = draw(st.sampled_from(["append", "ack", "gather", "status", "refuse", "remove", "fetch", "entries",
                                 "snapshot", "forward", "result"]))
    if kind == "append":
        prev, gap = draw(SEQS), draw(st.sampled_from([0, 0, 0, 1]))  # a gap: the codec must refuse it
        return Append(src, term, draw(CLUSTERS), prev, draw(TERMS), draw(records(prev + 1 + gap, term)), draw(SEQS))
    if kind == "ack":
        return Ack(src, term, draw(SEQS), draw(SEQS), draw(SEQS))
    if kind == "gather":
        return Gather(src, term, draw(CLUSTERS))
    if kind == "status":
        return Status(src, term, draw(CLUSTERS), draw(SEQS), draw(SEQS), draw(TERMS))
    if kind == "refuse":
        return Refuse(src, term, draw(CLUSTERS), draw(st.sampled_from(["epoch", "cluster", "leader"])))
    if kind == "remove":
        return Remove(src, term, draw(st.sampled_from(["F", "G", "L", "X"])))
    if kind == "fetch":
        return Fetch(src, term, draw(SEQS))
    if kind == "entries":
        return Entries(src, term, draw(records(draw(st.integers(1, 8)), term)))
    if kind == "snapshot":
        base = draw(st.integers(1, 8))
        users = [join_entry(draw(st.integers(1, base)), 0, user="zed")] if draw(st.booleans()) else []
        config = config_entry(1, 0) if draw(st.booleans()) else None
        return Snapshot(src, term, base, draw(TERMS), 0, len(users), users, config, draw(CLUSTERS))
    if kind == "forward":
        return Forward(src, term, [proposal(id=f"f{draw(SEQS)}", server=src)])
    seq = draw(SEQS)
    return Result(src, term, [{"user": "alice", "id": "m1", "seq": seq} if seq else
                              {"user": "alice", "id": "m1", "code": "not_joined", "message": "join first"}])


def fresh() -> Chat:
    chat = make("F")
    chat.set_view("L", peers("G", "L", "X"), 0.0)
    return chat


def with_alice() -> Chat:
    chat = sequencer()
    chat.join("r", "alice", S, 0.0)
    return chat


ROLES = {"fresh": fresh, "follower": follower, "sequencer": sequencer, "sequencer with a join": with_alice}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(role=st.sampled_from(sorted(ROLES)), inputs=st.lists(messages(), min_size=1, max_size=8))
def test_the_core_takes_any_message_the_codec_accepts(role: str, inputs: list[Any]) -> None:
    chat = ROLES[role]()
    for now, message in enumerate(inputs, start=1):
        try:
            decoded = linkwire.decode(linkwire.encode(message))
        except linkwire.LinkError:
            continue
        chat.receive(decoded, float(now))
        chat.tick(float(now) + 0.5)
        log = chat.log
        assert log.commit <= log.last and [e["seq"] for e in log.tail] == list(range(log.commit + 1, log.last + 1))
