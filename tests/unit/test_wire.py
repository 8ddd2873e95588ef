"""Tests for dsd.wire: round trips, and strict rejection of everything malformed."""

from __future__ import annotations

import json
import random
from msgspec.structs import asdict, fields, replace

import pytest

from dsd.core import datagrams
from dsd.core.datagrams import (
    MAX_INT, MAX_TEXT, Answer, Coordinator, Discover, Election, Heartbeat, Leave, Members, Offer, Probe,
)
from dsd.wire import HEADER, MAGIC, MAX_DATAGRAM, VERSION, WireError, decode, encode

BIG = MAX_INT
LONG_NAME = "N" * 64

# One instance of every message type, with ordinary values...
SAMPLES = [
    Probe("alpha", 1, 100),
    Heartbeat("alpha", 7, 100, 3, "beta", "follower", "tcp://10.0.0.1:5555", 42),
    Heartbeat("alpha", 7, 100, 0, None, "discovering", "", 0),
    Heartbeat("alpha", 7, 100, 3, "beta", "follower", "tcp://10.0.0.1:5555", 42, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
    Leave("alpha", 7, 100),
    Election("alpha", 7, 100, 3),
    Answer("beta", 9, 200, 3, "alpha"),
    Coordinator("beta", 9, 200, 4),
    Members("beta", 9, 200, (("alpha", "10.77.1.2:5008", 7), ("gamma", "10.77.2.3:6000", 11))),
    Discover(12345),
    Offer("alpha", 12345, "tcp://10.0.0.1:5009", "tcp://10.0.0.1:5010"),
]
# ...and with every field at its limit.
EXTREMES = [
    Probe(LONG_NAME, BIG, BIG),
    Heartbeat(LONG_NAME, BIG, BIG, BIG, "x" * 64, "leader", "e" * MAX_TEXT, BIG),
    Heartbeat("a", 0, 0, 0, "a", "candidate", "\u00e9\u2603", 0),
    Leave("a.b-c_D9", 0, 0),
    Election(LONG_NAME, BIG, 0, BIG),
    Answer(LONG_NAME, BIG, BIG, BIG, "Z" * 64),
    Coordinator(LONG_NAME, 0, BIG, BIG),
    Members(LONG_NAME, BIG, BIG, datagrams.member_chunks([("m" * 64, "255.255.255.255:65535", BIG)] * 40)[0]),
    Members("a", 0, 0, ()),
    Discover(BIG),
    Offer(LONG_NAME, 0, "e" * MAX_TEXT, "f" * MAX_TEXT),
]
ALL_TYPES = (Probe, Heartbeat, Leave, Election, Answer, Coordinator, Members, Discover, Offer)


def raw(body: object, header: bytes = HEADER) -> bytes:
    """A datagram with an arbitrary JSON body."""
    return header + json.dumps(body, separators=(",", ":")).encode()


def body_of(message: datagrams.Message) -> dict:
    return {"t": message.type_name(), **asdict(message)}


def sample_of(cls: type) -> datagrams.Message:
    return next(m for m in SAMPLES if type(m) is cls)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("message", SAMPLES + EXTREMES, ids=lambda m: type(m).__name__)
def test_round_trip(message: datagrams.Message) -> None:
    data = encode(message)
    assert data.startswith(HEADER)
    assert len(data) <= MAX_DATAGRAM
    decoded = decode(data)
    assert type(decoded) is type(message)
    assert decoded == message


def test_every_message_type_is_sampled_and_registered() -> None:
    assert {type(m) for m in SAMPLES} == set(ALL_TYPES)
    assert set(datagrams.MESSAGE_TYPES.values()) == set(ALL_TYPES)
    assert {cls.type_name() for cls in ALL_TYPES} == set(datagrams.MESSAGE_TYPES)


def test_header_layout() -> None:
    assert HEADER == MAGIC + bytes([VERSION])
    data = encode(Probe("alpha", 1, 100))
    assert data[:3] == MAGIC
    assert data[3] == VERSION
    assert json.loads(data[4:]) == {"t": "probe", "name": "alpha", "incarnation": 1, "priority": 100}


def test_largest_possible_message_fits_a_datagram() -> None:
    """The design promises datagrams well under 1400 bytes, whatever the values."""
    assert len(encode(EXTREMES[1])) < MAX_DATAGRAM


def test_decode_accepts_key_order_and_whitespace() -> None:
    body = body_of(SAMPLES[1])
    data = HEADER + b" " + json.dumps(dict(reversed(list(body.items()))), indent=2).encode() + b"\n"
    assert decode(data) == SAMPLES[1]


# ------------------------------------------------------------------- size


def test_decode_size_limit_is_exact() -> None:
    data = encode(SAMPLES[1])
    padded = data + b" " * (MAX_DATAGRAM - len(data))  # trailing JSON whitespace is valid
    assert len(padded) == MAX_DATAGRAM
    assert decode(padded) == SAMPLES[1]
    with pytest.raises(WireError, match="exceeds"):
        decode(padded + b" ")


def test_decode_rejects_oversize_datagram() -> None:
    with pytest.raises(WireError):
        decode(HEADER + b"x" * MAX_DATAGRAM)
    with pytest.raises(WireError):
        decode(b"\x00" * 65507)


def test_encode_refuses_oversize_message() -> None:
    with pytest.raises(WireError, match="exceeds"):
        encode(Heartbeat("alpha", 1, 100, 1, None, "leader", "e" * MAX_DATAGRAM, 0))


def test_encode_limit_is_exact() -> None:
    base = Heartbeat("alpha", 1, 100, 1, None, "leader", "", 0)
    room = MAX_DATAGRAM - len(encode(base))
    assert len(encode(replace(base, endpoint="e" * room))) == MAX_DATAGRAM
    with pytest.raises(WireError):
        encode(replace(base, endpoint="e" * (room + 1)))


# ------------------------------------------------------ framing and garbage


def test_decode_rejects_empty() -> None:
    with pytest.raises(WireError):
        decode(b"")


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_decode_rejects_every_truncation(message: datagrams.Message) -> None:
    data = encode(message)
    for end in range(len(data)):
        with pytest.raises(WireError):
            decode(data[:end])


@pytest.mark.parametrize("magic", [b"DSX", b"dsd", b"XSD", b"\x00\x00\x00", b"DS"])
def test_decode_rejects_wrong_magic(magic: bytes) -> None:
    data = encode(SAMPLES[0])
    with pytest.raises(WireError, match="magic"):
        decode(magic + data[3:])


@pytest.mark.parametrize("version", [0, 1, 3, 0x7B, 255])  # 1: links in JSON
def test_decode_rejects_wrong_version(version: int) -> None:
    data = encode(SAMPLES[0])
    with pytest.raises(WireError, match="version"):
        decode(MAGIC + bytes([version]) + data[4:])


def test_decode_rejects_header_alone() -> None:
    for data in (MAGIC, HEADER, HEADER + b" "):
        with pytest.raises(WireError):
            decode(data)


def test_decode_rejects_random_bytes() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        length = rng.choice([rng.randrange(0, 16), rng.randrange(0, 200), rng.randrange(0, MAX_DATAGRAM + 200)])
        data = rng.randbytes(length)
        if rng.random() < 0.5:
            data = HEADER + data  # get past the framing into the JSON parser
        with pytest.raises(WireError):
            decode(data)


def test_mutated_datagrams_decode_to_a_message_or_wire_error() -> None:
    """Flip bytes of valid datagrams: nothing but WireError may ever come out of decode."""
    rng = random.Random(7)
    valid = [encode(m) for m in SAMPLES + EXTREMES]
    rejected = 0
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            message = decode(bytes(data))
        except WireError:
            rejected += 1
            continue
        # Whatever survived must itself be a valid, re-encodable message.
        assert decode(encode(message)) == message
    assert rejected > 2000


@pytest.mark.parametrize(
    "body",
    [[], [1, 2], "probe", 17, 1.5, None, True, [{"t": "probe", "name": "a", "incarnation": 1, "priority": 1}]],
    ids=repr,
)
def test_decode_rejects_non_object_json(body: object) -> None:
    with pytest.raises(WireError, match="not a JSON object"):
        decode(raw(body))


@pytest.mark.parametrize("text", [b"", b"{", b"{'t':'probe'}", b"NaN-", b"{}{}", b"\x00"])
def test_decode_rejects_bad_json(text: bytes) -> None:
    with pytest.raises(WireError):
        decode(HEADER + text)


def test_decode_rejects_invalid_utf8() -> None:
    good = encode(Heartbeat("alpha", 1, 100, 1, None, "leader", "ENDPOINT", 0))
    for bad in (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"):
        with pytest.raises(WireError):
            decode(good.replace(b"ENDPOINT", bad))
    with pytest.raises(WireError):
        decode(HEADER + b"\xff\xfe{}")


# ------------------------------------------------------------ message shape


@pytest.mark.parametrize("kind", ["", "PROBE", "hello", "Heartbeat", "probe "])
def test_decode_rejects_unknown_type(kind: str) -> None:
    body = body_of(SAMPLES[0])
    body["t"] = kind
    with pytest.raises(WireError, match="unknown message type"):
        decode(raw(body))


@pytest.mark.parametrize("kind", [None, 1, True])
def test_decode_rejects_non_string_type(kind: object) -> None:
    body = body_of(SAMPLES[0])
    body["t"] = kind
    with pytest.raises(WireError):
        decode(raw(body))


def test_decode_rejects_missing_type() -> None:
    body = body_of(SAMPLES[0])
    del body["t"]
    with pytest.raises(WireError):
        decode(raw(body))


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_decode_rejects_every_missing_field(cls: type) -> None:
    """But a heartbeat's link_key, which a cluster without a secret leaves out ("")."""
    message = sample_of(cls)
    body = body_of(message)
    for field in fields(cls):
        partial = {k: v for k, v in body.items() if k != field.name}
        if field.name == "link_key":
            assert decode(raw(partial)) == replace(message, link_key="")
            continue
        with pytest.raises(WireError, match="fields"):
            decode(raw(partial))


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_decode_rejects_extra_field(cls: type) -> None:
    for extra in ("extra", "TYPE", "commit", "to", "term"):
        body = body_of(sample_of(cls))
        if extra in body:
            continue
        body[extra] = 1
        with pytest.raises(WireError, match="fields"):
            decode(raw(body))


def test_decode_rejects_another_types_fields() -> None:
    body = body_of(Election("alpha", 1, 100, 3))
    body["t"] = "probe"
    with pytest.raises(WireError):
        decode(raw(body))


INT_FIELDS = ["incarnation", "priority", "term", "commit"]
BAD_INTS = [True, False, -1, -(2**63), MAX_INT + 1, 2**70, 1.0, 0.5, 1e400, "1", None, [1], {"n": 1}]


@pytest.mark.parametrize("value", BAD_INTS, ids=repr)
def test_decode_rejects_bad_integers(value: object) -> None:
    for message in SAMPLES:
        for name in INT_FIELDS:
            body = body_of(message)
            if name not in body:
                continue
            body[name] = value
            with pytest.raises(WireError, match="bad JSON" if value == 1e400 else f"bad {name}"):  # Infinity
                decode(raw(body))


def test_decode_accepts_integer_bounds() -> None:
    body = body_of(SAMPLES[1])
    for value in (0, MAX_INT):
        for name in INT_FIELDS:
            body[name] = value
        assert decode(raw(body)).term == value


BAD_NAMES = ["", "N" * 65, "has space", "sl/ash", "ünï", "a\n", "a\x00", "tab\t", None, 1, True, ["a"], {"a": 1}]


@pytest.mark.parametrize("value", BAD_NAMES, ids=repr)
def test_decode_rejects_bad_names(value: object) -> None:
    for message in SAMPLES:
        if isinstance(message, Discover):
            continue  # the one message without a sender name
        body = body_of(message)
        body["name"] = value
        with pytest.raises(WireError, match="bad name"):
            decode(raw(body))
    body = body_of(sample_of(Answer))
    body["to"] = value
    with pytest.raises(WireError, match="bad to"):
        decode(raw(body))


@pytest.mark.parametrize("value", [v for v in BAD_NAMES if v is not None], ids=repr)
def test_decode_rejects_bad_leader(value: object) -> None:
    body = body_of(sample_of(Heartbeat))
    body["leader"] = value
    with pytest.raises(WireError, match="bad leader"):
        decode(raw(body))


def test_decode_accepts_no_leader() -> None:
    body = body_of(sample_of(Heartbeat))
    body["leader"] = None
    assert decode(raw(body)).leader is None


BAD_STATES = ["", "LEADER", "dead", "alive", "suspect", " leader", None, 1, True, ["leader"]]


@pytest.mark.parametrize("value", BAD_STATES, ids=repr)
def test_decode_rejects_bad_state(value: object) -> None:
    body = body_of(sample_of(Heartbeat))
    body["state"] = value
    with pytest.raises(WireError, match="bad state"):
        decode(raw(body))


@pytest.mark.parametrize("state", datagrams.STATES)
def test_decode_accepts_every_state(state: str) -> None:
    body = body_of(sample_of(Heartbeat))
    body["state"] = state
    assert decode(raw(body)).state == state


@pytest.mark.parametrize("value", ["e" * (MAX_TEXT + 1), None, 5, True, ["tcp://x"]], ids=lambda v: repr(v)[:20])
def test_decode_rejects_bad_endpoint(value: object) -> None:
    body = body_of(sample_of(Heartbeat))
    body["endpoint"] = value
    with pytest.raises(WireError, match="bad endpoint"):
        decode(raw(body))


@pytest.mark.parametrize("value", ["k" * 39, "k" * 41, "k" * 39 + " ", "k" * 39 + "\u00e9", "k" * 39 + "\\",
                                   None, 5, ["k" * 40]], ids=lambda v: repr(v)[:20])
def test_decode_rejects_bad_link_key(value: object) -> None:
    body = body_of(sample_of(Heartbeat))
    body["link_key"] = value
    with pytest.raises(WireError, match="bad link_key"):
        decode(raw(body))


def test_decode_accepts_every_z85_character_in_a_link_key() -> None:
    z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
    body = body_of(sample_of(Heartbeat))
    for start in range(0, len(z85), 40):
        body["link_key"] = (z85[start:] + z85)[:40]
        assert decode(raw(body)).link_key == body["link_key"]


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


# ------------------------------------------------------------- known bugs


@pytest.mark.parametrize("kind", [[], {}, ["probe"]], ids=repr)
def test_decode_rejects_unhashable_type(kind: object) -> None:
    body = body_of(SAMPLES[0])
    body["t"] = kind
    with pytest.raises(WireError):
        decode(raw(body))


def test_decode_rejects_deeply_nested_json() -> None:
    with pytest.raises(WireError):
        decode(HEADER + b"[" * (MAX_DATAGRAM - len(HEADER)))


# ---------------------------------------------------------------- MEMBERS


def test_member_chunks_keep_every_entry_in_order_and_each_chunk_fits_a_datagram() -> None:
    entries = [(f"{'n' * (i % 64)}{i}"[:64], f"10.{i % 256}.{i // 256}.1:{1 + i}", BIG - i) for i in range(300)]
    chunks = datagrams.member_chunks(entries)
    assert [e for chunk in chunks for e in chunk] == entries
    for chunk in chunks:
        assert len(encode(Members(LONG_NAME, BIG, BIG, chunk))) <= MAX_DATAGRAM
    assert datagrams.member_chunks([]) == []


@pytest.mark.parametrize("entry", [
    ["alpha", "10.0.0.1:5008"], ["alpha", "10.0.0.1:5008", 1, 2], "alpha", ["bad name", "10.0.0.1:5008", 1],
    ["alpha", "10.0.0.1", 1], ["alpha", "10.0.0.256:5008", 1], ["alpha", "10.0.0.1:0", 1],
    ["alpha", "10.0.0.1:65536", 1], ["alpha", "host:5008", 1], ["alpha", "[::1]:5008", 1],
    ["alpha", "10.0.0.1:5008", -1], ["alpha", "10.0.0.1:5008", True], ["alpha", "10.0.0.1:5008", "1"],
    [None, "10.0.0.1:5008", 1], ["alpha", 5008, 1],
], ids=repr)
def test_decode_rejects_bad_member_entries(entry: object) -> None:
    body = body_of(sample_of(Members))
    body["members"] = [entry]
    with pytest.raises(WireError, match="bad members"):
        decode(raw(body))


def test_decode_rejects_too_many_members_and_a_list_that_is_not_one() -> None:
    body = body_of(sample_of(Members))
    body["members"] = [["a", "10.0.0.1:1", 1]] * (datagrams.MAX_MEMBERS + 1)
    with pytest.raises(WireError):
        decode(raw(body))
    body["members"] = {"a": 1}
    with pytest.raises(WireError, match="bad members"):
        decode(raw(body))
