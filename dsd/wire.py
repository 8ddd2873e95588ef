"""Bytes <-> control-plane messages: the one codec for every multicast datagram.

A datagram is the 4-byte magic ``DSD`` + version byte, then one JSON object whose
``"t"`` names the message type. Decoding is strict: unknown types, missing or
extra fields, wrong field types and oversize datagrams all raise `WireError`, so
nothing malformed ever reaches the core.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar, Union

MAGIC = b"DSD"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
MAX_DATAGRAM = 1400
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
LINK_KEY_PATTERN = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z")  # a CURVE public key in Z85
MAX_TEXT = 256
MAX_INT = 2**63 - 1


class WireError(ValueError):
    """A datagram that is not a valid message of this protocol version."""


@dataclass(frozen=True)
class Probe:
    """Sent at start-up: every node answers at once with a heartbeat."""

    TYPE: ClassVar[str] = "probe"
    name: str
    incarnation: int
    priority: int


@dataclass(frozen=True)
class Heartbeat:
    """Periodic sign of life carrying the sender's belief about the cluster."""

    TYPE: ClassVar[str] = "heartbeat"
    name: str
    incarnation: int
    priority: int
    term: int
    leader: str | None
    state: str
    endpoint: str
    commit: int
    link_key: str = ""  # the CURVE public key of `endpoint` when the cluster has a secret


@dataclass(frozen=True)
class Leave:
    """Clean shutdown: peers drop the sender at once."""

    TYPE: ClassVar[str] = "leave"
    name: str
    incarnation: int
    priority: int


@dataclass(frozen=True)
class Election:
    """Bully ELECTION: asks higher-ranked nodes to take over."""

    TYPE: ClassVar[str] = "election"
    name: str
    incarnation: int
    priority: int
    term: int


@dataclass(frozen=True)
class Answer:
    """Bully ANSWER ("OK"): a higher-ranked node tells ``to`` it is alive."""

    TYPE: ClassVar[str] = "answer"
    name: str
    incarnation: int
    priority: int
    term: int
    to: str


@dataclass(frozen=True)
class Coordinator:
    """The sender declares itself leader for ``term``."""

    TYPE: ClassVar[str] = "coordinator"
    name: str
    incarnation: int
    priority: int
    term: int


@dataclass(frozen=True)
class Members:
    """Unicast only: the members the sender knows, as (name, "ip:port", incarnation) (memberlist's push/pull).

    The answer to a PROBE, and what a daemon tells a member it has just added; the receiver
    contacts those it does not know. A long list takes several datagrams (`member_chunks`).
    """

    TYPE: ClassVar[str] = "members"
    name: str
    incarnation: int
    priority: int
    members: tuple[tuple[str, str, int], ...]

    def __post_init__(self) -> None:  # JSON gives lists: tuples, so decoded == sent
        object.__setattr__(self, "members", tuple(tuple(m) for m in self.members))


@dataclass(frozen=True)
class Discover:
    """A chat client on a host without a daemon looks for daemons (``dschat --discover``)."""

    TYPE: ClassVar[str] = "discover"
    nonce: int


@dataclass(frozen=True)
class Offer:
    """Answer to DISCOVER from a daemon with TCP client endpoints: where to connect."""

    TYPE: ClassVar[str] = "offer"
    name: str
    nonce: int
    endpoint: str
    feed: str


Message = Union[Probe, Heartbeat, Leave, Election, Answer, Coordinator, Members, Discover, Offer]
MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls for cls in (Probe, Heartbeat, Leave, Election, Answer, Coordinator, Members, Discover, Offer)
}
MAX_MEMBERS = 64  # entries in one MEMBERS datagram, whatever their size (see `member_chunks`)
MEMBERS_BUDGET = MAX_DATAGRAM - 200  # bytes of entries per MEMBERS datagram; the rest is the header
ADDRESS_PATTERN = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})\Z")
STATES = ("discovering", "follower", "candidate", "leader")


def utf8_size(text: str) -> int | None:
    """Bytes of `text` in UTF-8, or None if it cannot be encoded (a lone surrogate from JSON)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def encode(message: Message) -> bytes:
    """Serialise `message`; raises WireError if it would exceed MAX_DATAGRAM.

    Raw UTF-8 rather than \\u escapes, so whatever `decode` accepts fits again when re-sent.
    """
    body = {"t": message.TYPE, **asdict(message)}
    try:
        data = HEADER + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise WireError("a text field is not valid Unicode (a lone surrogate)") from None
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def decode(data: bytes) -> Message:
    """Parse one datagram; raises WireError for anything that is not a valid message."""
    if len(data) > MAX_DATAGRAM:
        raise WireError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if not data.startswith(MAGIC):
        raise WireError("not a dsd datagram (bad magic)")
    if len(data) < len(HEADER) or data[len(MAGIC)] != VERSION:
        version = data[len(MAGIC)] if len(data) > len(MAGIC) else None
        raise WireError(f"unsupported protocol version {version}")
    return decode_object(data[len(HEADER):], MESSAGE_TYPES, _check_field, WireError)


def decode_object(
    data: bytes, types: dict[str, type], check_field: Callable[[str, str, object], None], error: type[ValueError],
) -> Any:
    """One JSON object whose "t" names one of `types`: exactly that dataclass's fields, each checked.

    Shared by the datagram and link codecs; anything else raises `error`.
    """
    try:
        body = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as failure:  # ValueError: bad UTF-8, bad JSON, a 5000-digit int
        raise error(f"bad JSON: {type(failure).__name__}") from None
    if not isinstance(body, dict):
        raise error("not a JSON object")
    kind = body.pop("t", None)
    cls = types.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise error("unknown message type")
    names = [f.name for f in fields(cls)]
    if set(body) != set(names):
        raise error(f"{cls.TYPE}: fields {sorted(body)} != {sorted(names)}")
    for name in names:
        check_field(cls.TYPE, name, body[name])
    return cls(**body)


def _check_field(kind: str, name: str, value: object) -> None:
    if name in ("name", "to"):
        ok = isinstance(value, str) and NAME_PATTERN.match(value) is not None
    elif name == "leader":
        ok = value is None or (isinstance(value, str) and NAME_PATTERN.match(value) is not None)
    elif name == "state":
        ok = value in STATES
    elif name in ("endpoint", "feed"):
        ok = isinstance(value, str) and len(value) <= MAX_TEXT and utf8_size(value) is not None
    elif name == "members":
        ok = isinstance(value, list) and len(value) <= MAX_MEMBERS and all(_is_member(m) for m in value)
    elif name == "link_key":
        ok = value == "" or (isinstance(value, str) and LINK_KEY_PATTERN.match(value) is not None)
    else:
        ok = type(value) is int and 0 <= value <= MAX_INT
    if not ok:
        raise WireError(f"{kind}: bad {name} {value!r}")


def is_address(text: object) -> bool:
    """An IPv4 "a.b.c.d:port", as the transports write a datagram's source."""
    match = ADDRESS_PATTERN.match(text) if isinstance(text, str) else None
    return match is not None and all(int(g) <= 255 for g in match.groups()[:4]) and 0 < int(match[5]) < 65536


def member_chunks(entries: list[tuple[str, str, int]]) -> list[tuple[tuple[str, str, int], ...]]:
    """`entries` cut into runs that each fit one MEMBERS datagram."""
    chunks: list[tuple[tuple[str, str, int], ...]] = []
    run: list[tuple[str, str, int]] = []
    size = 0
    for entry in entries:
        cost = len(entry[0]) + len(entry[1]) + len(str(entry[2])) + 8  # quotes, commas, brackets
        if run and (size + cost > MEMBERS_BUDGET or len(run) == MAX_MEMBERS):
            chunks.append(tuple(run))
            run, size = [], 0
        run.append(entry)
        size += cost
    if run:
        chunks.append(tuple(run))
    return chunks


def _is_member(entry: object) -> bool:
    if not (isinstance(entry, list) and len(entry) == 3):
        return False
    name, address, incarnation = entry
    return (isinstance(name, str) and NAME_PATTERN.match(name) is not None and is_address(address)
            and type(incarnation) is int and 0 <= incarnation <= MAX_INT)
