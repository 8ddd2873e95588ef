"""Tests for dsd.linkwire (MessagePack through msgspec): round trips, and strict rejection of everything malformed.

Whatever arrives on a link, `decode` returns a valid message or raises `LinkError`:
never another exception, and nothing malformed reaches the chat core.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsd.core import link_messages
from dsd.core.chat import Chat, ChatLimits
from dsd.core.link_messages import (
    ENTRY_KEYS, LINK_TYPES, MAX_BATCH, MAX_INT, MAX_LINK_MESSAGE, MAX_TEXT_BYTES, PROPOSAL_KEYS, Ack, Append,
    Entries, Entry, Fetch, Forward, Gather, Proposal, Refuse, Remove, Result, Snapshot, Status,
)
from dsd.linkwire import LinkError, decode, encode
from dsd import store
from dsd.store import MemoryStore

SESSION = "alice-session-0001"
CONFIG = '{"cluster":"c1a2","voters":[["h1",100],["h2",100]],"old":null}'


def proposal(**changes: Any) -> dict[str, Any]:
    base = {"kind": "message", "user": "alice", "text": "hello", "id": "m-1", "server": "h1", "session": SESSION}
    return {**base, **changes}


def entry(**changes: Any) -> dict[str, Any]:
    base = {**proposal(), "seq": 1, "term": 1, "time": 1_700_000_000.5}
    return {**base, **changes}


SAMPLES = [
    Forward("h1", 3, [proposal(), proposal(kind="join", text="", id="join:a:1")]),
    Result("h2", 3, [{"user": "alice", "id": "m-1", "seq": 7},
                     {"user": "bob", "id": "m-2", "code": "not_joined", "message": "join first"}]),
    Append("h2", 3, "c1a2", 6, 2, [entry(seq=7), entry(seq=8, id="m-2", kind="leave", text=""),
                                 entry(seq=9, id="config:a:2", kind="config", user="", session="", text=CONFIG)], 6),
    Ack("h1", 3, 8, 6, 0),
    Gather("h2", 4, "c1a2"),
    Status("h1", 4, "", 6, 8, 3),
    Refuse("h1", 5, "c1a2", "epoch"),
    Remove("h1", 5, "h3"),
    Fetch("h2", 4, 6),
    Entries("h1", 4, [entry(seq=7, term=3)]),
    Snapshot("h2", 4, 900, 3, 0, 2, [entry(seq=12, kind="join", text=""),
                                     entry(seq=40, user="bob", id="join:b:1", kind="join", text="rejoined")],
             entry(seq=41, id="config:a:1", kind="config", user="", session="", text=CONFIG), ""),
]
LONG = "N" * 64
BIG_ENTRY = entry(seq=MAX_INT, term=MAX_INT, user="u" * 32, id="i" * 64, server=LONG, session="s" * 64,
                  text="é" * (MAX_TEXT_BYTES // 2), time=99_999_999_999.5, kind="timeout")
EXTREMES = [
    Forward(LONG, MAX_INT, []),
    Forward("a", 0, [proposal(id=f"m{i}") for i in range(MAX_BATCH)]),
    Result("a", MAX_INT, [{"user": "u" * 32, "id": "i" * 64, "code": "c" * 256, "message": "m" * 256}]),
    Append(LONG, MAX_INT, "c" * 64, MAX_INT - 1, MAX_INT, [BIG_ENTRY], MAX_INT),
    Append("a", 0, "", 0, 0, [], 0),
    Ack(LONG, MAX_INT, MAX_INT, MAX_INT, MAX_INT),
    Gather("a.b-c_D9", 0, ""),
    Status(LONG, MAX_INT, "c" * 64, MAX_INT, MAX_INT, MAX_INT),
    Refuse(LONG, MAX_INT, "", "cluster"),
    Remove("a", 0, LONG),
    Fetch(LONG, MAX_INT, MAX_INT),
    Entries("a", 0, [entry(seq=i, time=0.0) for i in range(1, MAX_BATCH + 1)]),
    Entries("a", 0, [entry(text="\u2603\U0001f600 \x00\n\"\\", user="\u00e9lodie", time=0.0)]),
    Snapshot(LONG, MAX_INT, MAX_INT, MAX_INT, MAX_INT, MAX_INT, [], None, ""),
    Snapshot("a", 0, 0, 0, 0, 0, [], None, ""),
    Snapshot("a", 1, MAX_BATCH, 1, 0, MAX_BATCH,
             [entry(seq=i, user=f"u{i}", kind="join", time=0.0) for i in range(1, MAX_BATCH + 1)], None, ""),
]
COUNT_FIELDS = [(cls, name) for cls in LINK_TYPES.values() for name in cls.__struct_fields__
                if name not in ("src", "entries", "proposals", "results", "users", "cluster", "reason", "name",
                                  "config", "ids")]


def body_of(message: Any) -> dict[str, Any]:
    return msgspec.msgpack.decode(encode(message))


def sample_of(cls: type) -> Any:
    return next(m for m in SAMPLES if type(m) is cls)


def raw(body: object) -> bytes:
    return msgspec.msgpack.encode(body)


def rejected(data: bytes) -> LinkError:
    with pytest.raises(LinkError) as caught:
        decode(data)
    assert type(caught.value) is LinkError
    return caught.value


# ---------------------------------------------------------------- round trips


def test_every_message_type_is_sampled_and_registered() -> None:
    assert {type(m) for m in SAMPLES} == set(LINK_TYPES.values())
    assert {m.type_name() for m in SAMPLES} == set(LINK_TYPES)
    assert set(LINK_TYPES) == {
        "forward", "result", "append", "ack", "gather", "status", "refuse", "remove", "fetch", "entries",
        "snapshot",
    }


@pytest.mark.parametrize("message", SAMPLES + EXTREMES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Any) -> None:
    data = encode(message)
    decoded = decode(data)
    assert type(decoded) is type(message)
    assert decoded == message
    assert encode(decoded) == data


def test_encoding_is_one_messagepack_map_with_the_type_under_t() -> None:
    assert msgspec.msgpack.decode(encode(Ack("h1", 3, 8, 6, 0))) == {
        "t": "ack", "src": "h1", "term": 3, "last": 8, "commit": 6, "need": 0,
    }


def test_decode_accepts_any_key_order() -> None:
    body = body_of(SAMPLES[2])
    assert decode(raw(dict(reversed(list(body.items()))))) == SAMPLES[2]


def test_time_may_be_an_integer() -> None:
    message = Entries("a", 1, [entry(time=1_700_000_000)])
    assert decode(encode(message)) == message


# ------------------------------------------------------ framing and garbage


GATHER = raw({"t": "gather", "src": "a", "term": 1, "cluster": ""})


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x84", GATHER[:-1], GATHER + b"x", GATHER + GATHER, b'{"t":"gather","src":"a","term":1}',
    GATHER.replace(b"\xa1a", b"\xa1\xff"),  # a string that is not UTF-8
    GATHER.replace(b"\xa1a", b"\xa1\xe9"),  # latin-1
])
def test_bad_messagepack_or_utf8_is_rejected(data: bytes) -> None:
    rejected(data)


def test_deep_nesting_is_rejected_not_a_recursion_error() -> None:
    """Also where msgspec skips a value unread: a key of a record it drops, a key before "t"."""
    deep = b"\x91" * 5_000 + b"\x90"
    rejected(b"\x91" * 100_000 + b"\x90")
    rejected(raw({"t": "forward", "src": "a", "term": 1, "proposals": []})[:-1] + b"\x91" * 50_000 + b"\x90")
    record = raw({**proposal(), "zz": 0})
    rejected(raw({"t": "forward", "src": "a", "term": 1, "proposals": []})[:-1] + b"\x91" + record[:-1] + deep)
    rejected(b"\x85\xa2zz" + deep + raw({"t": "gather", "src": "a", "term": 1, "cluster": ""})[1:])


@pytest.mark.parametrize("body", [[], [{"t": "gather", "src": "a", "term": 1}], "gather", 1, None, True, 1.5])
def test_non_object_is_rejected(body: object) -> None:
    assert "not a link message" in str(rejected(raw(body)))


@pytest.mark.parametrize("kind", [None, "", "Gather", "GATHER", "probe", "heartbeat", 1, True, ["gather"], {"x": 1}])
def test_unknown_type_is_rejected(kind: object) -> None:
    body = {"src": "a", "term": 1}
    if kind is not None:
        body["t"] = kind
    assert "unknown" in str(rejected(raw(body)))


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_missing_field_is_rejected(message: Any) -> None:
    """But a snapshot part's trimmed ids, which default to none."""
    body = body_of(message)
    optional = message.__struct_fields__[len(message.__struct_fields__) - len(message.__struct_defaults__):]
    for name in list(body):
        without = raw({k: v for k, v in body.items() if k != name})
        if name in optional:
            assert decode(without) == message
        elif name != "t":
            rejected(without)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_an_extra_field_is_rejected(message: Any) -> None:
    for extra in ("x", "T", "type", "leader"):
        rejected(raw({**body_of(message), extra: 0}))


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_rejected(message: Any) -> None:
    data = encode(message)
    for end in range(0, len(data), max(1, len(data) // 97)):
        rejected(data[:end])


@pytest.mark.parametrize("cls,name", COUNT_FIELDS, ids=lambda x: x if isinstance(x, str) else x.__name__)
@pytest.mark.parametrize("value", [True, False, -1, 2**63, 2**64 - 1, 1.0, 0.5, "1", None, [1], {"n": 1}])
def test_counts_must_be_ints_from_0_to_2_63_minus_1(cls: type, name: str, value: object) -> None:
    body = body_of(sample_of(cls))
    error = rejected(raw({**body, name: value}))
    assert f"bad {name}" in str(error)


@pytest.mark.parametrize("cls,name", COUNT_FIELDS, ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_counts_accept_both_limits(cls: type, name: str) -> None:
    # A snapshot part with no users and total MAX_INT, an APPEND with no entries, let each count
    # alone take either limit.
    body = body_of(Snapshot("h2", 4, 900, 3, 0, MAX_INT, [], None, "", 0, MAX_INT) if cls is Snapshot
                   else Append("h2", 3, "c1a2", 6, 2, [], 6) if cls is Append else sample_of(cls))
    for value in (0, MAX_INT):
        assert getattr(decode(raw({**body, name: value})), name) == value


@pytest.mark.parametrize("src", ["", "x" * 65, "a b", "a/b", "\u00e9", None, 1, ["a"]])
@pytest.mark.parametrize("cls", list(LINK_TYPES.values()), ids=lambda c: c.__name__)
def test_bad_src_is_rejected(cls: type, src: object) -> None:
    assert "bad src" in str(rejected(raw({**body_of(sample_of(cls)), "src": src})))


def test_non_finite_numbers_are_rejected() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        rejected(raw({"t": "gather", "src": "a", "term": value, "cluster": ""}))
        rejected(entries_body(entry(time=value)))


# ----------------------------------------------------------- records: entries


def entries_body(*records: object) -> bytes:
    return raw({"t": "entries", "src": "a", "term": 1, "entries": list(records)})


def forward_body(*records: object) -> bytes:
    return raw({"t": "forward", "src": "a", "term": 1, "proposals": list(records)})


BAD_USERS = ["", "u" * 33, "_alice", ".alice", "-alice", "al ice", " alice", "alice ", "al\nice", "al/ice",
             "alice\n", None, 7, ["alice"]]
BAD_IDS = ["", "i" * 65, "a b", "a.b", "a/b", "\u00e9", "id\n", None, 7]
BAD_SESSIONS = ["", "s" * 15, "s" * 65, "session with spaces", "session.with.dots", "s" * 15 + "\u00e9", None, 16]
BAD_SERVERS = ["", "x" * 65, "a b", None, 1]
BAD_TEXTS = [None, 1, ["hi"], "x" * (MAX_TEXT_BYTES + 1), "é" * (MAX_TEXT_BYTES // 2) + "x"]
BAD_TIMES = [-1, -0.5, 1e11, True, "1", None, [1]]
BAD_KINDS = ["", "Message", "msg", "rejoin", None, 1]
BAD_FIELDS = (
    [("user", v) for v in BAD_USERS] + [("id", v) for v in BAD_IDS] + [("session", v) for v in BAD_SESSIONS]
    + [("server", v) for v in BAD_SERVERS] + [("text", v) for v in BAD_TEXTS] + [("kind", v) for v in BAD_KINDS]
)


@pytest.mark.parametrize("key,value", BAD_FIELDS + [("time", v) for v in BAD_TIMES]
                         + [(k, v) for k in ("seq", "term") for v in (True, -1, 2**63, 1.0, "1", None)])
def test_bad_entry_field_is_rejected(key: str, value: object) -> None:
    assert "bad entries" in str(rejected(entries_body(entry(), entry(**{key: value}))))


@pytest.mark.parametrize("key,value", BAD_FIELDS)
def test_bad_proposal_field_is_rejected(key: str, value: object) -> None:
    assert "bad proposals" in str(rejected(forward_body(proposal(**{key: value}))))


@pytest.mark.parametrize("user", ["a", "u" * 32, "9lives", "a.b-c_d", "A_", "\u00e9lodie"])
def test_good_user_names_are_accepted(user: str) -> None:
    assert decode(forward_body(proposal(user=user))).proposals[0]["user"] == user


def test_text_limit_is_in_utf8_bytes_and_exact() -> None:
    for text in ("x" * MAX_TEXT_BYTES, "é" * (MAX_TEXT_BYTES // 2), "\U0001f600" * (MAX_TEXT_BYTES // 4), ""):
        assert decode(entries_body(entry(text=text))).entries[0]["text"] == text
    over = ("x" * (MAX_TEXT_BYTES + 1), "é" * (MAX_TEXT_BYTES // 2 + 1), "\U0001f600" * (MAX_TEXT_BYTES // 4) + "x")
    for text in over:
        rejected(entries_body(entry(text=text)))


@pytest.mark.parametrize("surrogate", [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"a\xed\xb0\x80b"])
def test_lone_surrogate_in_text_is_rejected(surrogate: bytes) -> None:
    for data in (entries_body(entry(text="PLACEHOLDER")), forward_body(proposal(text="PLACEHOLDER"))):
        rejected(data.replace(b"PLACEHOLDER", surrogate.ljust(11, b"x")))


@pytest.mark.parametrize("record", [entry(), proposal()], ids=["entry", "proposal"])
def test_records_hold_exactly_their_keys(record: dict[str, Any]) -> None:
    """A missing key is refused; an unknown one is dropped (a newer daemon may add one): the
    core sees exactly the record's keys."""
    make = entries_body if "seq" in record else forward_body
    decoded = decode(make({**record, "extra": 1}))
    assert (decoded.entries if "seq" in record else decoded.proposals) == [record]
    for key in record:
        rejected(make({k: v for k, v in record.items() if k != key}))
    rejected(make([record]))
    rejected(make(list(record.values())))
    rejected(make(None))


def test_an_entry_is_not_a_proposal_and_back() -> None:
    rejected(entries_body(proposal()))
    assert decode(forward_body(entry())).proposals == [proposal()]  # seq, term and time dropped
    assert set(ENTRY_KEYS) - set(PROPOSAL_KEYS) == {"seq", "term", "time"}
    assert (set(ENTRY_KEYS), set(PROPOSAL_KEYS)) == (set(Entry.__annotations__), set(Proposal.__annotations__))
    assert get_args(link_messages.Kind) == store.KINDS  # the store's kinds are the codec's


@pytest.mark.parametrize("name,record", [("entries", entry()), ("proposals", proposal())])
def test_batch_size_limit_is_exact(name: str, record: dict[str, Any]) -> None:
    kind = "entries" if name == "entries" else "forward"
    run = [dict(record, seq=seq) if name == "entries" else record for seq in range(1, MAX_BATCH + 2)]
    full = {"t": kind, "src": "a", "term": 1, name: run[:MAX_BATCH]}
    assert len(getattr(decode(raw(full)), name)) == MAX_BATCH
    assert f"bad {name}" in str(rejected(raw({**full, name: run})))


@pytest.mark.parametrize("seqs", [[8], [7, 9], [7, 7], [7, 8, 10], [6, 7]])
def test_an_append_whose_entries_are_not_one_run_after_prev_is_rejected(seqs: list[int]) -> None:
    """The core would store them where other seqs are due (it raised, and the daemon stopped)."""
    assert decode(encode(Append("h2", 3, "c1a2", 6, 2, [entry(seq=7), entry(seq=8)], 6))).prev == 6
    body = {**body_of(SAMPLES[2]), "prev": 6, "entries": [entry(seq=seq, id=f"m{seq}") for seq in seqs]}
    assert "not one run" in str(rejected(raw(body)))


def test_entries_of_a_fetch_answer_are_one_run() -> None:
    assert decode(entries_body(entry(seq=5), entry(seq=6))).entries[1]["seq"] == 6
    assert "not one run" in str(rejected(entries_body(entry(seq=5), entry(seq=7))))
    assert "not one run" in str(rejected(entries_body(entry(seq=5), entry(seq=5))))


def test_append_entries_limit_is_the_same() -> None:
    body = body_of(SAMPLES[2])
    run = [entry(seq=body["prev"] + 1 + i) for i in range(MAX_BATCH + 1)]
    assert len(decode(raw({**body, "entries": run[:MAX_BATCH]})).entries) == MAX_BATCH
    rejected(raw({**body, "entries": run}))


@pytest.mark.parametrize("name", ["entries", "proposals", "results", "users"])
def test_batches_must_be_lists(name: str) -> None:
    cls = next(c for c in LINK_TYPES.values() if name in c.__struct_fields__)
    for value in (None, {}, "[]", 0, {"0": entry()}):
        rejected(raw({**body_of(sample_of(cls)), name: value}))


# ----------------------------------------------------------------- snapshot


def snapshot_body(**changes: object) -> dict[str, Any]:
    return {**body_of(sample_of(Snapshot)), **changes}


@pytest.mark.parametrize("changes,reason", [
    ({"total": 1}, "beyond total"),
    ({"offset": 1}, "beyond total"),
    ({"offset": MAX_INT, "total": MAX_INT}, "beyond total"),
    ({"base": 39}, "after the base"),
    ({"base_term": 0}, "after the base"),
    ({"users": [entry(seq=1, kind="join")] * 2}, "twice"),
    ({"users": [entry(seq=1, kind="join"), entry(seq=2, kind="join", id="j-2")]}, "twice"),
    ({"users": [entry(seq=0, kind="join")]}, "seq 0"),  # the store refuses it: it stopped the daemon
])
def test_snapshot_part_must_be_consistent(changes: dict[str, object], reason: str) -> None:
    assert reason in str(rejected(raw(snapshot_body(**changes))))


@pytest.mark.parametrize("user", [entry(), entry(kind="leave"), entry(kind="timeout"), proposal(kind="join"),
                                  entry(kind="join", user="_x"), None, []])
def test_snapshot_users_are_join_entries(user: object) -> None:
    assert "bad users" in str(rejected(raw(snapshot_body(users=[entry(seq=2, kind="join", user="zed"), user]))))


def test_snapshot_part_size_limit_is_exact() -> None:
    joins = [entry(seq=i, user=f"u{i}", kind="join") for i in range(1, MAX_BATCH + 2)]
    body = snapshot_body(base=MAX_BATCH + 1, total=MAX_BATCH + 1)
    assert len(decode(raw({**body, "users": joins[:MAX_BATCH]})).users) == MAX_BATCH
    assert "bad users" in str(rejected(raw({**body, "users": joins})))


# ----------------------------------------------------------------- results


def result_body(*results: object) -> bytes:
    return raw({"t": "result", "src": "a", "term": 1, "results": list(results)})


GOOD_SEQ = {"user": "alice", "id": "m-1", "seq": 3}
GOOD_CODE = {"user": "alice", "id": "m-1", "code": "not_joined", "message": "join first"}


@pytest.mark.parametrize("result", [
    {"user": "alice", "id": "m-1"},
    {**GOOD_SEQ, "code": "x"},
    {**GOOD_SEQ, "code": "x", "message": "y"},
    {**GOOD_CODE, "seq": 3},
    {"user": "alice", "id": "m-1", "code": "x"},
    {"user": "alice", "id": "m-1", "message": "y"},
    {**GOOD_SEQ, "seq": -1}, {**GOOD_SEQ, "seq": True}, {**GOOD_SEQ, "seq": 2**63}, {**GOOD_SEQ, "seq": "3"},
    {**GOOD_SEQ, "user": "_x"}, {**GOOD_SEQ, "user": ""}, {**GOOD_SEQ, "id": ""}, {**GOOD_SEQ, "id": "a b"},
    {"id": "m-1", "seq": 3}, {"user": "alice", "seq": 3},
    {**GOOD_CODE, "code": "c" * 257}, {**GOOD_CODE, "message": "m" * 257},
    {**GOOD_CODE, "code": 1}, {**GOOD_CODE, "message": None},
    [], "x", None, 3,
], ids=repr)
def test_bad_result_is_rejected(result: object) -> None:
    assert "bad results" in str(rejected(result_body(GOOD_SEQ, result)))


def test_results_batch_limit() -> None:
    assert len(decode(result_body(*[GOOD_SEQ] * MAX_BATCH)).results) == MAX_BATCH
    rejected(result_body(*[GOOD_SEQ] * (MAX_BATCH + 1)))


# -------------------------------------------------------------------- size


def test_message_size_limit_is_exact() -> None:
    body = {"t": "entries", "src": "a", "term": 1,
            "entries": [entry(seq=seq, text="x" * 60_000) for seq in range(1, 70)] + [entry(seq=70, text="")]}
    deficit = MAX_LINK_MESSAGE - len(raw(body))
    body["entries"][-1] = entry(seq=70, text="x" * (deficit - 2))  # a str16 header is 2 bytes longer than fixstr's
    data = raw(body)
    assert len(data) == MAX_LINK_MESSAGE
    assert len(decode(data).entries) == 70
    body["entries"][-1] = entry(seq=70, text="x" * (deficit - 1))
    assert "exceeds" in str(rejected(raw(body)))


def test_oversize_message_is_rejected_before_parsing() -> None:
    rejected(b"x" * (MAX_LINK_MESSAGE + 1))
    rejected(b"[" * (MAX_LINK_MESSAGE + 1))


# ------------------------------------------------------------------ property


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False), st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def decodes_or_link_error(data: bytes) -> None:
    try:
        message = decode(data)
    except LinkError:
        return
    assert type(message) in LINK_TYPES.values()
    assert decode(encode(message)) == message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_link_error(data: bytes) -> None:
    decodes_or_link_error(data)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_random_values_decode_or_raise_link_error(value: object) -> None:
    decodes_or_link_error(raw(value))


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid message's body with one field (or one record field) replaced by a random value."""
    body = body_of(draw(st.sampled_from(SAMPLES)))
    key = draw(st.sampled_from(sorted(body)))
    records = body.get(key)
    if isinstance(records, list) and records and draw(st.booleans()):
        record = dict(records[0])
        record[draw(st.sampled_from(sorted(record)))] = draw(JSON_VALUES)
        body[key] = [record]
    elif draw(st.booleans()):
        body[key] = draw(JSON_VALUES)
    else:
        body[draw(st.text(max_size=6))] = draw(JSON_VALUES)
    return raw(body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid())
def test_mutated_valid_messages_decode_or_raise_link_error(data: bytes) -> None:
    decodes_or_link_error(data)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """Any consistent snapshot part: joins of distinct users, from seq 1 to the base."""
    base, base_term = draw(st.integers(0, MAX_INT)), draw(st.integers(0, MAX_INT))
    names = draw(st.lists(st.text("abcXYZ019._-", min_size=1, max_size=32).filter(lambda n: n[0] not in "._-"),
                          max_size=6 if base else 0, unique=True))  # seqs start at 1: nobody joined by 0
    users = [entry(user=name, kind="join", seq=draw(st.integers(1, base)), term=draw(st.integers(0, base_term)),
                   text=draw(st.sampled_from(["", "rejoined"]))) for name in names]
    offset = draw(st.integers(0, MAX_INT - len(users)))
    total = draw(st.integers(offset + len(users), MAX_INT))
    return Snapshot(draw(st.sampled_from(["a", LONG])), draw(st.integers(0, MAX_INT)), base, base_term,
                    offset, total, users, None, "")


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_every_consistent_snapshot_part_round_trips(message: Snapshot) -> None:
    assert decode(encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_a_follower_takes_every_whole_snapshot_the_codec_accepts(message: Snapshot) -> None:
    """What the codec lets through must not break the core or the store (an exception there
    would stop the daemon): a one-part snapshot is installed, or ignored if not beyond the log."""
    whole = Snapshot(message.src, message.term, message.base, message.base_term, 0, len(message.users), message.users,
                     None, "")
    chat = Chat("F", MemoryStore(1000), ChatLimits(), 0.0, 1)
    chat.set_view(whole.src, {whole.src: 100}, 0.0)
    chat.receive(decode(encode(whole)), 0.0)
    assert chat.commit == whole.base and {u["user"] for u in chat.who()} == {u["user"] for u in whole.users}


@pytest.mark.parametrize("name,value", [
    ("cluster", "UPPER"), ("cluster", "c" * 65), ("cluster", "a b"), ("cluster", None), ("reason", "bored"),
    ("reason", ""), ("name", ""), ("name", "a/b"), ("config", {"seq": 1}),
])
def test_bad_text_fields_are_rejected(name: str, value: object) -> None:
    sample = next(m for m in SAMPLES if hasattr(m, name))
    error = rejected(raw({**body_of(sample), name: value}))
    assert f"bad {name}" in str(error)


@pytest.mark.parametrize("changes", [
    {"user": "alice"}, {"session": SESSION}, {"text": "not json"}, {"text": '{"cluster":"c","voters":[]}'},
    {"text": '{"cluster":"c","voters":[["a",1],["a",1]],"old":null}'},
])
def test_a_config_entry_must_hold_a_configuration_and_no_user(changes: dict[str, Any]) -> None:
    config = entry(seq=9, id="config:a:2", kind="config", user="", session="", text=CONFIG)
    assert decode(raw({"t": "entries", "src": "a", "term": 1, "entries": [config]})).entries == [config]
    with pytest.raises(LinkError):
        decode(raw({"t": "entries", "src": "a", "term": 1, "entries": [{**config, **changes}]}))


@pytest.mark.parametrize("ids, why", [
    ([["alice", "m1", 9, 1.0]], "after the base"), ([["alice", "m1", 0, 1.0]], "after the base"),
    ([["alice", "m1", 1]], "bad ids"), ([["", "m1", 1, 1.0]], "bad ids"), ([["alice", "a b", 1, 1.0]], "bad ids"),
])
def test_a_snapshot_refuses_a_malformed_or_late_trimmed_id(ids: list, why: str) -> None:
    good = Snapshot("a", 1, 8, 1, 0, 0, [], None, "", 0, 1, [("alice", "m1", 1, 1.0)])
    assert decode(encode(good)) == good
    with pytest.raises(LinkError, match=why):
        decode(raw({**body_of(good), "ids": ids}))
    with pytest.raises(LinkError, match="ids beyond ids_total"):
        decode(raw({**body_of(good), "ids_total": 0}))


def test_a_proposal_cannot_be_a_config_and_a_snapshot_config_not_after_its_base() -> None:
    config = entry(seq=9, id="config:a:2", kind="config", user="", session="", text=CONFIG)
    with pytest.raises(LinkError):
        decode(raw({"t": "forward", "src": "a", "term": 1,
                    "proposals": [{k: config[k] for k in PROPOSAL_KEYS}]}))
    with pytest.raises(LinkError, match="config after the base"):
        decode(encode(Snapshot("a", 1, 8, 1, 0, 0, [], config, "")))


def test_link_error_is_a_value_error() -> None:
    assert issubclass(LinkError, ValueError)
    assert link_messages.utf8_size("é") == 2 and link_messages.utf8_size("\ud800") is None
